"""relaycast: a self-hosted, sub-second live-streaming server (WHIP in, WHEP out)."""

__version__ = "0.1.0"
