"""The server side of a WHIP session: receives the streamer's RTP and gives it feedback."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from relaycast.media.feedback.remb import RembEstimator
from relaycast.media.feedback.twcc import TwccRecorder, parse_transport_seq
from relaycast.media.session import Session
from relaycast.media.track import Track
from relaycast.rtp.packet import RtpPacket, unwrap_rtx
from relaycast.rtp.rtcp import (
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    serialize_compound,
)
from relaycast.sdp import Codec, Negotiated, NegotiatedMedia

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
DEFAULT_RTT = 0.05  # seconds, until measured
IDLE_AFTER = 3.0  # a connected publisher silent this long may be replaced by a new one
CONNECT_GRACE = 10.0  # a publisher still connecting this long may be replaced


class Publisher(Session):
    """Routes the streamer's packets to Tracks by SSRC (or payload type for unsignalled SSRCs)."""

    role = "publisher"

    def __init__(self, server: MediaServer, stream: Stream, negotiated: Negotiated) -> None:
        super().__init__(server, stream, negotiated)
        self.sender_ssrc = secrets.randbits(32) | 1
        self.cname = secrets.token_hex(8)
        self.tracks: dict[int, Track] = {}
        self._rtx: dict[int, Track] = {}
        self._by_mid: dict[str, Track] = {}
        self._primary: dict[int, tuple[NegotiatedMedia, Codec]] = {}
        self._rtx_pt: dict[int, NegotiatedMedia] = {}
        self.twcc_id: int | None = None
        remb = False
        for media in negotiated.media:
            if media.rejected or media.kind not in ("audio", "video"):
                continue
            for codec in media.codecs:
                self._primary[codec.payload_type] = (media, codec)
            for rtx_pt in media.rtx.values():
                self._rtx_pt[rtx_pt] = media
            if TWCC_URI in media.extensions:
                self.twcc_id = media.extensions[TWCC_URI]
            remb = remb or "goog-remb" in media.rtcp_fb
        self.twcc = TwccRecorder(self.sender_ssrc, 0) if self.twcc_id is not None else None
        self.remb = (
            RembEstimator(self.sender_ssrc, max_bitrate=server.config.max_bitrate)
            if remb and self.twcc is None
            else None
        )
        self.last_media: float | None = None
        self.rtt = DEFAULT_RTT

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

    # -- media in -------------------------------------------------------------------------------

    def on_rtp(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.bad_packets += 1
            return
        now = time.monotonic()
        self.last_media = now
        if self.twcc is not None and self.twcc_id is not None:
            value = packet.get_extension(self.twcc_id)
            if value is not None:
                try:
                    arrival_us = self.transport.mux.arrival_us  # the kernel's receive time
                    self.twcc.on_packet(parse_transport_seq(value), arrival_us)
                except ValueError:
                    self.bad_packets += 1
        if self.remb is not None:
            self.remb.on_packet(len(data), now)
        track = self.tracks.get(packet.ssrc)
        if track is None:
            rtx_track = self._rtx.get(packet.ssrc)
            if rtx_track is not None:
                unwrapped = self._unwrap(packet, rtx_track)
                if unwrapped is None:
                    return
                packet, track = unwrapped, rtx_track
            else:
                routed = self._route_new_ssrc(packet)
                if routed is None:
                    return
                packet, track = routed
        track.on_packet(packet, now, len(data))

    @staticmethod
    def _unwrap(packet: RtpPacket, track: Track) -> RtpPacket | None:
        """RFC 4588 §4: recover the original packet; padding-only probes are dropped."""
        if len(packet.payload) < 2:
            return None
        track.retransmissions += 1
        try:
            return unwrap_rtx(packet, track.payload_type, track.ssrc)
        except ValueError:
            return None

    def _route_new_ssrc(self, packet: RtpPacket) -> tuple[RtpPacket, Track] | None:
        """First packet of an SSRC: its payload type tells the m-section (and RTX or not)."""
        primary = self._primary.get(packet.payload_type)
        if primary is not None:
            media, codec = primary
            previous = self._by_mid.get(media.mid)
            if previous is not None:  # the encoder restarted with a new SSRC
                self.tracks.pop(previous.ssrc, None)
                if previous.rtx_ssrc is not None:
                    self._rtx.pop(previous.rtx_ssrc, None)
            forwarder = self.stream.forwarders[media.kind]
            track = Track(
                kind=media.kind,
                codec=codec,
                ssrc=packet.ssrc,
                sender_ssrc=self.sender_ssrc,
                rtcp_fb=media.rtcp_fb,
                ext_ids=media.extensions,
                forwarder=forwarder,
                send_rtcp=self.transport.send_rtcp,
                keyframe_interval=self.server.config.keyframe_interval,
            )
            self.tracks[packet.ssrc] = track
            self._by_mid[media.mid] = track
            forwarder.attach_source(track)
            return packet, track
        rtx_media = self._rtx_pt.get(packet.payload_type)
        if rtx_media is not None:
            owner = self._by_mid.get(rtx_media.mid)
            if owner is None:
                return None
            owner.rtx_ssrc = packet.ssrc
            self._rtx[packet.ssrc] = owner
            unwrapped = self._unwrap(packet, owner)
            return None if unwrapped is None else (unwrapped, owner)
        self.bad_packets += 1
        return None

    def on_rtcp_packets(self, packets: list[RtcpPacket], now: float) -> None:
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                track = self.tracks.get(packet.ssrc)
                if track is not None:
                    track.stats.on_sender_report(packet, now)

    # -- feedback out ---------------------------------------------------------------------------

    def poll_feedback(self, now: float) -> None:
        """Fast timer: NACKs, pending keyframe requests, transport-cc feedback."""
        if self.connected_at is None or self.closed:
            return
        out: list[bytes] = []
        for track in list(self.tracks.values()):
            out.extend(bytes(p) for p in track.poll(now, self.rtt))
        if self.twcc is not None:
            if self.tracks:
                self.twcc.media_ssrc = next(iter(self.tracks))
            out.extend(bytes(p) for p in self.twcc.build(time.time_ns() // 1000))
        for packet in out:
            self.transport.send_rtcp(packet)

    def send_reports(self, now: float) -> None:
        """Slow timer: receiver reports + SDES (RFC 3550 §6.4.2) and REMB when used."""
        if self.connected_at is None or self.closed or not self.tracks:
            return
        blocks = [track.stats.report_block(now) for track in self.tracks.values()]
        packets: list[object] = [
            RtcpReceiverReport(ssrc=self.sender_ssrc, reports=blocks[:31]),
            RtcpSdes.cname(self.sender_ssrc, self.cname),
        ]
        if self.remb is not None:
            remb = self.remb.build(now, list(self.tracks))
            if remb is not None:
                packets.append(remb)
        self.transport.send_rtcp(serialize_compound(packets))  # type: ignore[arg-type]

    def _teardown(self) -> None:
        for track in self.tracks.values():
            track.forwarder.detach_source(track)
        if self.stream.publisher is self:
            self.stream.publisher = None
