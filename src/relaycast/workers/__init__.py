"""All cores: ``relaycast serve --workers N`` (docs/design.md, "Workers").

A supervisor (:mod:`.supervisor`) forks N workers, each a whole relaycast server with its own
event loop and MediaServer, all bound to the same HTTP port, media UDP port and ICE-TCP port
with ``SO_REUSEPORT``. Whatever lands on the wrong worker is steered to the one that owns it
(:mod:`.steering`): HTTP requests of a session are proxied over a private unix socket, STUN
Binding requests and ICE-TCP connections are handed over through the worker links
(:mod:`.links`). A stream's publisher's packets reach the viewers on other workers through the
relay (:mod:`.relay`), one message per packet per worker with viewers.
"""
