"""STUN/TURN servers as clients get them: ``Link: rel="ice-server"`` headers (RFC 9725 §4.6)
and the RTCIceServer list injected into the pages.

With ``turn_secret`` set, every ``turn:``/``turns:`` URL comes with time-limited credentials
of the TURN REST scheme that coturn checks with ``use-auth-secret`` and
``static-auth-secret`` (draft-uberti-behave-turn-rest-00 §2.2)::

    username   = "<expiry, unix seconds>:<name>"
    credential = base64(HMAC-SHA1(turn_secret, username))

coturn recomputes the credential from the username and its copy of the secret, and refuses
it once the expiry has passed; nothing is shared between relaycast and coturn but the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from relaycast.config import Config
from relaycast.http.cors import ice_server_link

__all__ = ["client_ice_servers", "ice_link_headers", "turn_credentials"]


def turn_credentials(secret: str, name: str, ttl: int, now: float) -> tuple[str, str]:
    """``(username, credential)`` valid until ``now + ttl`` for the TURN REST scheme."""
    username = f"{int(now) + int(ttl)}:{name}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def client_ice_servers(config: Config, name: str, now: float | None = None) -> list[dict[str, str]]:
    """One RTCIceServer dict per configured URL: ``{"urls": url}``, plus ``username`` and
    ``credential`` for TURN URLs when ``turn_secret`` is set.  *name* goes into the TURN
    username (the stream name; coturn logs it)."""
    servers: list[dict[str, str]] = []
    credentials: tuple[str, str] | None = None
    if config.turn_secret is not None:
        at = time.time() if now is None else now
        credentials = turn_credentials(config.turn_secret, name, config.turn_ttl, at)
    for url in config.ice_servers:
        server = {"urls": url}
        if credentials is not None and url.startswith(("turn:", "turns:")):
            server["username"], server["credential"] = credentials
        servers.append(server)
    return servers


def ice_link_headers(config: Config, name: str, now: float | None = None) -> list[str]:
    """The ``Link`` header values for :func:`client_ice_servers`."""
    return [
        ice_server_link(s["urls"], s.get("username"), s.get("credential"))
        for s in client_ice_servers(config, name, now)
    ]
