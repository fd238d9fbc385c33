"""The server side of a WHEP session: one DownTrack per negotiated audio/video section."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from relaycast.media.downtrack import MID_URI, DownTrack, ExtLayout
from relaycast.media.session import Session
from relaycast.rtp.rtcp import (
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    ntp_now,
    serialize_compound,
)
from relaycast.sdp import Negotiated, SendSsrcs, codec_key

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream


def _random_ssrc() -> int:
    return secrets.randbits(32) | 1


class Subscriber(Session):
    """A viewer: receives what the stream's Forwarders send, answers its RTCP."""

    role = "subscriber"

    def __init__(self, server: MediaServer, stream: Stream, negotiated: Negotiated) -> None:
        super().__init__(server, stream, negotiated)
        self.cname = secrets.token_hex(8)
        self.downtracks: list[DownTrack] = []
        self.by_ssrc: dict[int, DownTrack] = {}
        self.send_ssrcs: dict[str, SendSsrcs] = {}
        stream_id = f"relaycast-{stream.name}"
        for media in negotiated.media:
            if media.rejected or media.kind not in ("audio", "video") or not media.codecs:
                continue
            ssrc = _random_ssrc()
            rtx_ssrc = _random_ssrc() if media.rtx else None
            items = tuple(
                (ext_id, uri, media.mid.encode() if uri == MID_URI else None)
                for uri, ext_id in sorted(media.extensions.items(), key=lambda item: item[1])
            )
            forwarder = stream.forwarders[media.kind]
            downtrack = DownTrack(
                kind=media.kind,
                forwarder=forwarder,
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                payload_types={codec_key(c): c.payload_type for c in media.codecs},
                rtx_payload_types=dict(media.rtx),
                clock_rate=media.codecs[0].clock_rate,
                layout=ExtLayout(items),
                cname=self.cname,
            )
            if forwarder.source is not None:
                downtrack.source_changed(forwarder.source)
            forwarder.add(downtrack)
            self.downtracks.append(downtrack)
            self.by_ssrc[ssrc] = downtrack
            if rtx_ssrc is not None:
                self.by_ssrc[rtx_ssrc] = downtrack
            self.send_ssrcs[media.mid] = SendSsrcs(
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                cname=self.cname,
                stream_id=stream_id,
                track_id=f"{stream_id}-{media.kind}",
            )

    def on_connected(self) -> None:
        for downtrack in self.downtracks:
            downtrack.activate(self.transport)

    def on_rtp(self, data: bytes) -> None:
        self.bad_packets += 1  # viewers are receive-only

    def on_rtcp_packets(self, packets: list[RtcpPacket], now: float) -> None:
        for packet in packets:
            if isinstance(packet, (RtcpReceiverReport, RtcpSenderReport)):
                for block in packet.reports:
                    downtrack = self.by_ssrc.get(block.ssrc)
                    if downtrack is not None:
                        downtrack.stats.on_receiver_report(block, now, ntp_now())
            elif isinstance(packet, RtcpNack):
                downtrack = self.by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    downtrack.on_nack(packet.lost)
            elif isinstance(packet, RtcpPli):
                downtrack = self.by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    downtrack.on_keyframe_request()
            elif isinstance(packet, RtcpFir):
                for ssrc, _ in packet.entries:
                    downtrack = self.by_ssrc.get(ssrc)
                    if downtrack is not None:
                        downtrack.on_keyframe_request()

    def send_reports(self, now: float) -> None:
        """Slow timer: one SR per started DownTrack plus SDES (RFC 3550 §6.4.1)."""
        if self.connected_at is None or self.closed:
            return
        ntp = ntp_now()
        reports: list[object] = []
        for downtrack in self.downtracks:
            report = downtrack.sender_report(now, ntp)
            if report is not None:
                reports.append(report)
                reports.append(RtcpSdes.cname(downtrack.ssrc, self.cname))
        if reports:
            self.transport.send_rtcp(serialize_compound(reports))  # type: ignore[arg-type]

    def _teardown(self) -> None:
        for downtrack in self.downtracks:
            downtrack.close()
        self.stream.subscribers.discard(self)
