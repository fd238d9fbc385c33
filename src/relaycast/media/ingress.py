"""The ingress leg: a publisher's media in, the server's feedback to it out.

Port (all synchronous): :meth:`IngressLeg.on_rtp` ``(packet bytes, kernel arrival time)``,
:meth:`on_rtcp`, :meth:`poll` (every 20 ms: NACK, keyframe requests, transport-cc) and
:meth:`reports` (every second: receiver reports, REMB), and :meth:`stats`. RTCP leaves through
the one sink the transport binds when DTLS is up.

The feedback wiring, in one place (:meth:`reports` and :meth:`poll`):

* each :class:`Track` measures the round trip from its NACKs to their retransmissions, and its
  NACK retries are spaced by that RTT (RFC 4585 §3.5.3 leaves the timing to the receiver);
* the loss our receiver reports announce (RFC 3550 §6.4.1 fraction lost) feeds the REMB
  estimator, so REMB backs off when the publisher's uplink drops packets;
* transport-cc feedback carries the kernel's receive times (draft-holmer-rmcat-transport-wide-cc).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast.media.feedback import Feedback
from relaycast.media.feedback.remb import RembEstimator
from relaycast.media.feedback.twcc import TwccRecorder, parse_transport_seq
from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import StreamCounters
from relaycast.media.track import Track
from relaycast.net.sink import NULL_SINK, PacketSink
from relaycast.rtp.packet import RtpPacket, unwrap_rtx
from relaycast.rtp.rtcp import (
    RtcpPacket,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    serialize_compound,
)
from relaycast.sdp import URI_REPAIRED_RID, URI_RID, Codec, Negotiated, NegotiatedMedia

if TYPE_CHECKING:
    from relaycast.media.recording import RecordingTap

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
DEFAULT_RTT = 0.05  # seconds, until a NACK round trip is measured


class TwccFeedback:
    """Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-01)."""

    def __init__(self, sender_ssrc: int, ext_id: int, counters: StreamCounters) -> None:
        self.ext_id = ext_id
        self.recorder = TwccRecorder(sender_ssrc, 0)
        self._counters = counters

    def on_rtp(self, packet: RtpPacket, arrival_us: int, now: float) -> None:
        value = packet.get_extension(self.ext_id)
        if value is None:
            return
        try:
            self.recorder.on_packet(parse_transport_seq(value), arrival_us)
        except ValueError:
            self._counters.bad_packets += 1

    def on_rtcp(self, packet: RtcpPacket, now: float) -> None:
        return None

    def poll(self, now: float) -> list[RtcpPacket]:
        return list(self.recorder.build(time.time_ns() // 1000))

    def stats(self) -> dict[str, float]:
        r = self.recorder
        return {"pending": r.pending, "late": r.late, "dropped": r.dropped}


class RembFeedback:
    """REMB for publishers without transport-cc (draft-alvestrand-rmcat-remb-03)."""

    def __init__(self, sender_ssrc: int, max_bitrate: int, ssrcs: Callable[[], list[int]]):
        self.estimator = RembEstimator(sender_ssrc, max_bitrate=max_bitrate)
        self._ssrcs = ssrcs

    def on_rtp(self, packet: RtpPacket, arrival_us: int, now: float) -> None:
        self.estimator.on_packet(len(packet.payload) + 12, now)

    def on_rtcp(self, packet: RtcpPacket, now: float) -> None:
        return None

    def on_loss(self, fraction: float) -> None:
        self.estimator.on_loss(fraction)

    def poll(self, now: float) -> list[RtcpPacket]:
        remb = self.estimator.build(now, self._ssrcs())
        return [] if remb is None else [remb]

    def stats(self) -> dict[str, float]:
        return {"estimate_bps": self.estimator.estimate, "loss": self.estimator.loss}


class IngressLeg:
    """Routes a publisher's packets to Tracks by SSRC (or payload type for unsignalled SSRCs)."""

    def __init__(
        self,
        negotiated: Negotiated,
        *,
        forwarders: dict[str, Forwarder],
        counters: StreamCounters,
        sender_ssrc: int,
        cname: str,
        max_bitrate: int,
        keyframe_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.forwarders = forwarders
        self._clock = clock
        self.counters = counters
        self.sender_ssrc = sender_ssrc
        self.cname = cname
        self.keyframe_interval = keyframe_interval
        self.sink: PacketSink = NULL_SINK
        self.tracks: dict[int, Track] = {}
        self._rtx: dict[int, Track] = {}
        self._by_mid: dict[str, Track] = {}
        self._primary: dict[int, tuple[NegotiatedMedia, Codec]] = {}
        self._rtx_pt: dict[int, NegotiatedMedia] = {}
        # simulcast (RFC 8853): the RTP stream id extensions; each layer's Track feeds the
        # layer's own Forwarder (Forwarder.layer of the stream's video Forwarder)
        self._rid_ids: tuple[int | None, int | None] = (None, None)
        #: the layer recorded when the stream is recorded: the offerer's first (preferred) one
        self.record_rid: str | None = None
        twcc_id: int | None = None
        remb = False
        for media in negotiated.media:
            if media.rejected or media.kind not in ("audio", "video"):
                continue
            for codec in media.codecs:
                self._primary[codec.payload_type] = (media, codec)
            for rtx_pt in media.rtx.values():
                self._rtx_pt[rtx_pt] = media
            if media.rids:
                self._rid_ids = (
                    media.extensions.get(URI_RID),
                    media.extensions.get(URI_REPAIRED_RID),
                )
                self.record_rid = media.rids[0]
            if TWCC_URI in media.extensions:
                twcc_id = media.extensions[TWCC_URI]
            remb = remb or "goog-remb" in media.rtcp_fb
        self.twcc = TwccFeedback(sender_ssrc, twcc_id, counters) if twcc_id is not None else None
        self.remb = (
            RembFeedback(sender_ssrc, max_bitrate, lambda: list(self.tracks))
            if remb and self.twcc is None
            else None
        )
        self.last_media: float | None = None
        #: set by the Recorder when the stream is recorded: one call per accepted packet
        self.recording: RecordingTap | None = None

    # -- media in -------------------------------------------------------------------------------

    def on_rtp(self, data: bytes, arrival_us: int) -> None:
        """One decrypted RTP packet and its kernel receive time (µs)."""
        counters = self.counters
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            counters.bad_packets += 1
            return
        now = self._clock()
        self.last_media = now
        counters.ingress_packets += 1
        counters.ingress_bytes += len(data)
        if self.twcc is not None:
            self.twcc.on_rtp(packet, arrival_us, now)
        if self.remb is not None:
            self.remb.on_rtp(packet, arrival_us, now)
        track = self.tracks.get(packet.ssrc)
        arrived_on = packet.ssrc
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
        track.on_packet(packet, now, len(data), repaired=arrived_on != track.ssrc)
        if self.recording is not None and (track.rid is None or track.rid == self.record_rid):
            self.recording.rtp(track, packet, arrival_us)

    def _unwrap(self, packet: RtpPacket, track: Track) -> RtpPacket | None:
        """RFC 4588 §4: recover the original packet; padding-only probes are dropped."""
        if len(packet.payload) < 2:
            return None
        track.retransmissions += 1
        self.counters.publisher_retransmissions += 1
        try:
            return unwrap_rtx(packet, track.payload_type, track.ssrc)
        except ValueError:
            self.counters.bad_packets += 1
            return None

    def _route_new_ssrc(self, packet: RtpPacket) -> tuple[RtpPacket, Track] | None:
        """First packet of an SSRC: its payload type tells the m-section (and RTX or not); in
        a simulcast section its RTP stream id (RFC 8852), else its place among the SSRCs the
        offer declared, tells the layer. Later packets are routed by SSRC alone."""
        primary = self._primary.get(packet.payload_type)
        if primary is not None:
            media, codec = primary
            rid: str | None = None
            if media.rids:
                rid = self._layer_of(packet, media)
                if rid is None:
                    self.counters.bad_packets += 1  # a layer we cannot name (yet)
                    return None
            key = media.mid if rid is None else f"{media.mid} {rid}"
            previous = self._by_mid.get(key)
            if previous is not None:  # the encoder restarted with a new SSRC
                self.tracks.pop(previous.ssrc, None)
                if previous.rtx_ssrc is not None:
                    self._rtx.pop(previous.rtx_ssrc, None)
            forwarder = self.forwarders[media.kind]
            if rid is not None:
                forwarder = forwarder.layer(rid)
            track = Track(
                kind=media.kind,
                codec=codec,
                ssrc=packet.ssrc,
                sender_ssrc=self.sender_ssrc,
                rtcp_fb=media.rtcp_fb,
                ext_ids=media.extensions,
                forwarder=forwarder,
                send_rtcp=self.send_rtcp,
                keyframe_interval=self.keyframe_interval,
                counters=self.counters,
                rid=rid,
            )
            self.tracks[packet.ssrc] = track
            self._by_mid[key] = track
            forwarder.attach_source(track)  # viewers may move to (or among) layers now
            return packet, track
        rtx_media = self._rtx_pt.get(packet.payload_type)
        if rtx_media is not None:
            owner = self._rtx_owner(packet, rtx_media)
            if owner is None:
                return None
            owner.rtx_ssrc = packet.ssrc
            self._rtx[packet.ssrc] = owner
            unwrapped = self._unwrap(packet, owner)
            return None if unwrapped is None else (unwrapped, owner)
        self.counters.bad_packets += 1
        return None

    def _rid(self, packet: RtpPacket, ext_id: int | None) -> str | None:
        if ext_id is None:
            return None
        value = packet.get_extension(ext_id)
        if not value:
            return None
        return value.rstrip(b"\0").decode("ascii", "replace")

    def _layer_of(self, packet: RtpPacket, media: NegotiatedMedia) -> str | None:
        """The layer of a new media SSRC: its rtp-stream-id (RFC 8852 §3.1), else, when the
        offer declared one SSRC per layer (OBS), the layer in the same place."""
        rid = self._rid(packet, self._rid_ids[0])
        if rid is not None:
            return rid if rid in media.rids else None
        ssrcs = media.remote_ssrcs
        if len(ssrcs) == len(media.rids) and packet.ssrc in ssrcs:
            return media.rids[ssrcs.index(packet.ssrc)]
        return None

    def _rtx_owner(self, packet: RtpPacket, media: NegotiatedMedia) -> Track | None:
        """The Track a new RTX SSRC repairs: the section's, or in a simulcast section the layer
        its repaired-rtp-stream-id names (RFC 8852 §3.2), else the one whose SSRC the offer
        paired with it (FID, RFC 5576 §4.2)."""
        if not media.rids:
            return self._by_mid.get(media.mid)
        rid = self._rid(packet, self._rid_ids[1]) or self._rid(packet, self._rid_ids[0])
        if rid is not None:
            return self._by_mid.get(f"{media.mid} {rid}")
        for primary, rtx in media.remote_rtx_ssrcs.items():
            if rtx == packet.ssrc:
                return self.tracks.get(primary)
        return None

    def on_rtcp(self, packets: list[RtcpPacket], now: float) -> None:
        """The publisher's RTCP: sender reports map its RTP clock to NTP (RFC 3550 §6.4.1)."""
        for packet in packets:
            if isinstance(packet, RtcpSenderReport):
                track = self.tracks.get(packet.ssrc)
                if track is not None:
                    track.on_rtcp(packet, now)
                    if self.recording is not None:
                        self.recording.sender_report(track, packet)

    # -- feedback out ---------------------------------------------------------------------------

    @property
    def rtt(self) -> float:
        """Round trip to the publisher, from NACK to retransmission; DEFAULT_RTT until known."""
        measured = [t.nack.rtt for t in self.tracks.values() if t.nack and t.nack.rtt is not None]
        return max(measured) if measured else DEFAULT_RTT

    def send_rtcp(self, packet: bytes) -> None:
        self.sink.send_rtcp(packet)

    def poll(self, now: float) -> list[bytes]:
        """Fast timer: NACKs spaced by the measured RTT, keyframe requests, transport-cc."""
        out: list[bytes] = []
        rtt = self.rtt
        for track in list(self.tracks.values()):
            out.extend(bytes(p) for p in track.poll(now, rtt))
        if self.twcc is not None:
            if self.tracks:
                self.twcc.recorder.media_ssrc = next(iter(self.tracks))
            out.extend(bytes(p) for p in self.twcc.poll(now))
        return out

    def reports(self, now: float) -> list[bytes]:
        """Slow timer: receiver reports + SDES (RFC 3550 §6.4.2); their loss feeds REMB."""
        if not self.tracks:
            return []
        blocks = []
        for track in self.tracks.values():
            track.update_bitrate(now)
            blocks.append(track.reception.report_block(now))
        packets: list[object] = [
            RtcpReceiverReport(ssrc=self.sender_ssrc, reports=blocks[:31]),
            RtcpSdes.cname(self.sender_ssrc, self.cname),
        ]
        if self.remb is not None:
            self.remb.on_loss(max(block.fraction_lost for block in blocks) / 256.0)
            packets.extend(self.remb.poll(now))
        return [serialize_compound(packets)]  # type: ignore[arg-type]

    def components(self) -> list[Feedback]:
        """The leg's feedback components (one Track per SSRC, transport-cc or REMB)."""
        out: list[Feedback] = list(self.tracks.values())
        if self.twcc is not None:
            out.append(self.twcc)
        if self.remb is not None:
            out.append(self.remb)
        return out

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"tracks": len(self.tracks), "rtt": self.rtt}
        for component in self.components():
            name = getattr(component, "kind", type(component).__name__.lower())
            out.update({f"{name}_{k}": v for k, v in component.stats().items()})
        return out

    def close(self) -> None:
        self.sink = NULL_SINK
        self.recording = None
        for track in self.tracks.values():
            track.forwarder.detach_source(track)
