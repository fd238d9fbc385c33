"""The server side of a WHIP session: its ingress leg receives the streamer's media."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from relaycast.media.ingress import IngressLeg
from relaycast.media.session import Session
from relaycast.media.track import Track
from relaycast.net.sink import MediaSink
from relaycast.rtp.rtcp import RtcpPacket
from relaycast.sdp import Codec, Negotiated

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream

IDLE_AFTER = 3.0  # a connected publisher silent this long may be replaced by a new one
CONNECT_GRACE = 10.0  # a publisher still connecting this long may be replaced


class Publisher(Session):
    """A streamer: the session (signalling, transport, lifecycle) around an :class:`IngressLeg`."""

    role = "publisher"

    def __init__(self, server: MediaServer, stream: Stream, negotiated: Negotiated) -> None:
        super().__init__(server, stream, negotiated)
        self.transport.wants_own_socket = True  # its ingress feeds every viewer of the stream
        self.sender_ssrc = secrets.randbits(32) | 1
        self.cname = secrets.token_hex(8)
        self.ingress = IngressLeg(
            negotiated,
            forwarders=stream.forwarders,
            counters=stream.counters,
            sender_ssrc=self.sender_ssrc,
            cname=self.cname,
            max_bitrate=server.config.max_bitrate,
            keyframe_interval=server.config.keyframe_interval,
        )

    @property
    def tracks(self) -> dict[int, Track]:
        return self.ingress.tracks

    @property
    def last_media(self) -> float | None:
        return self.ingress.last_media

    # -- state ----------------------------------------------------------------------------------

    def is_active(self, now: float) -> bool:
        """Still streaming (or still connecting): a second publisher must get 409."""
        if self.connected_at is None:
            return now - self.created < CONNECT_GRACE
        last = self.last_media if self.last_media is not None else self.connected_at
        return now - last < IDLE_AFTER

    def codecs(self) -> dict[str, Codec]:
        return {
            media.kind: media.codecs[0]
            for media in self.negotiated.media
            if not media.rejected and media.codecs and media.kind in ("audio", "video")
        }

    # -- the leg's port -------------------------------------------------------------------------

    def on_connected(self, sink: MediaSink) -> None:
        self.ingress.sink = sink

    def on_rtp(self, data: bytes, arrival_us: int) -> None:
        self.ingress.on_rtp(data, arrival_us)

    def on_rtcp_packets(self, packets: list[RtcpPacket], now: float) -> None:
        self.ingress.on_rtcp(packets, now)

    def poll_feedback(self, now: float) -> None:
        """Fast timer: NACKs, pending keyframe requests, transport-cc feedback."""
        if self.connected_at is None or self.closed:
            return
        for packet in self.ingress.poll(now):
            self.ingress.send_rtcp(packet)

    def send_reports(self, now: float) -> None:
        """Slow timer: receiver reports + SDES and REMB when used."""
        if self.connected_at is None or self.closed:
            return
        for packet in self.ingress.reports(now):
            self.ingress.send_rtcp(packet)

    def _teardown(self) -> None:
        self.ingress.close()
        if self.stream.publisher is self:
            self.stream.publisher = None
