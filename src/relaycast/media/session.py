"""What a WHIP or WHEP session has in common: an unguessable id, its transport, its lifecycle.

Close cascade (design.md, after mediasoup's closures): ``Session.close`` closes the transport,
whose ``on_closed`` runs ``_teardown`` exactly once (Publisher: its Tracks leave the Forwarders;
Subscriber: its DownTracks leave them), then the server forgets the session and drops the Stream
when nothing uses it any more. Every ``close`` is idempotent.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from relaycast.net.sink import MediaSink
from relaycast.net.transport import PeerTransport
from relaycast.rtp.rtcp import RtcpPacket, parse_compound
from relaycast.sdp import Negotiated

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream

log = logging.getLogger(__name__)


class Session:
    """Base of :class:`Publisher` and :class:`Subscriber`."""

    role = "session"

    def __init__(self, server: MediaServer, stream: Stream, negotiated: Negotiated) -> None:
        self.id = server.session_prefix + secrets.token_urlsafe(24)
        self.server = server
        self.stream = stream
        self.negotiated = negotiated
        self.etag = self._new_etag()
        self.answer = ""
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.closed = False
        self.close_reason = ""
        self.counters = stream.counters
        self.transport = PeerTransport(
            mux=server.mux,
            ice=server.ice,
            certificate=server.certificate,
            remote_fingerprints=negotiated.remote_fingerprints,
            dtls_client=negotiated.local_setup == "active",
            counters=stream.counters,
            on_rtp=self.on_rtp,
            on_rtcp=self.on_rtcp,
            on_connected=self._connected,
            on_closed=self._transport_closed,
            remote_credentials=self._remote_credentials,
        )

    def _remote_credentials(self) -> tuple[str, str]:
        """The peer's current ICE ufrag and pwd (an ICE restart replaces them)."""
        return self.negotiated.remote_ufrag, self.negotiated.remote_pwd

    @staticmethod
    def _new_etag() -> str:
        return f'"{secrets.token_hex(12)}"'

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stream.name}, {self.id[:6]})"

    # -- hooks for subclasses -------------------------------------------------------------------

    def on_rtp(self, data: bytes, arrival_us: int) -> None:
        """A decrypted RTP packet from the peer and its kernel receive time (µs)."""

    def on_rtcp(self, data: bytes) -> None:
        """A decrypted RTCP compound packet from the peer: parsed once, malformed ones counted."""
        now = time.monotonic()
        if not self.admit_rtcp(now):
            return
        try:
            packets = parse_compound(data)
        except ValueError:
            self.counters.bad_packets += 1
            return
        self.on_rtcp_packets(packets, now)

    def admit_rtcp(self, now: float) -> bool:
        """Whether to look at one more RTCP packet from the peer (rate limits)."""
        return True

    def on_rtcp_packets(self, packets: list[RtcpPacket], now: float) -> None:
        """The packets of one RTCP compound packet (RFC 3550 §6.1)."""

    def on_connected(self, sink: MediaSink) -> None:
        """DTLS is up: ``sink`` protects and sends to the peer."""

    def _teardown(self) -> None:
        """Release what the session holds in the Stream."""

    # -- lifecycle ------------------------------------------------------------------------------

    def restart_ice(self) -> tuple[str, str]:
        ufrag, pwd = self.transport.restart_ice()
        self.etag = self._new_etag()
        return ufrag, pwd

    def _connected(self, sink: MediaSink) -> None:
        self.connected_at = time.monotonic()
        self.server.handshake.observe(self.connected_at - self.created)
        log.info("%s connected", self)
        self.on_connected(sink)

    def close(self, reason: str = "closed") -> None:
        self.transport.close(reason)

    def _transport_closed(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("%s closed: %s", self, reason)
        try:
            self._teardown()
        finally:
            self.server.forget(self)
