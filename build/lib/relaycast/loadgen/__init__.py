"""Load generator for relaycast (``relaycast bench``): a synthetic WHIP publisher and many
lightweight WHEP viewers built on relaycast's own ICE/DTLS/SRTP stack, a runner that pins the
server and the load to separate cores, and an aiortc baseline server for comparison."""

from relaycast.loadgen.command import add_bench_command

__all__ = ["add_bench_command"]
