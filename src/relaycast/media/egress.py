"""The egress leg: one viewer's media out, its RTCP in.

Port (all synchronous): :meth:`EgressLeg.connect` (the transport's sink, once DTLS is up: only
then do the viewer's DownTracks join the fan-out), :meth:`on_rtcp`, :meth:`reports` (every
second: sender reports), :meth:`stats` and :meth:`close`.

What one viewer can make the server do is bounded here (docs/security.md):

* its RTCP: at most ``RTCP_RATE`` compound packets a second (a browser sends a few);
* its NACKs: the sequence numbers of one compound packet are merged per DownTrack and answered
  within the DownTrack's :class:`RetransmitBudget` (cap per packet, once per round trip, a byte
  budget tied to the stream's bitrate);
* its keyframe requests (PLI/FIR, RFC 4585 §6.3.1, RFC 5104 §4.3.1): at most one per
  ``KEYFRAME_REQUEST_INTERVAL`` reaches the publisher's coalescing KeyframeRequester.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from relaycast.media.downtrack import DownTrack
from relaycast.media.feedback.congestion import ViewerCongestion
from relaycast.media.layers import ViewerEstimate
from relaycast.media.stats import StreamCounters
from relaycast.net.sink import NULL_SINK, PacketSink
from relaycast.rtp.rtcp import (
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
    RtcpSdes,
    RtcpSenderReport,
    RtcpTransportFeedback,
    ntp_now,
    serialize_compound,
)

RTCP_RATE = 100.0  # compound packets a second, sustained
RTCP_BURST = 50.0
KEYFRAME_REQUEST_INTERVAL = 2.0  # seconds between one viewer's keyframe requests we act on


class EgressLeg:
    """One viewer's DownTracks (one per negotiated audio/video section) and their feedback."""

    def __init__(
        self,
        downtracks: list[DownTrack],
        *,
        counters: StreamCounters,
        cname: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.downtracks = downtracks
        self.counters = counters
        self.cname = cname
        self._clock = clock
        self.by_ssrc: dict[int, DownTrack] = {}
        for downtrack in downtracks:
            self.by_ssrc[downtrack.ssrc] = downtrack
            if downtrack.rtx_ssrc is not None:
                self.by_ssrc[downtrack.rtx_ssrc] = downtrack
        self.sink: PacketSink = NULL_SINK
        self._tokens = RTCP_BURST
        self._tokens_at = clock()
        self._last_keyframe_request: float | None = None
        self.rtcp_dropped = 0
        #: REMB and receiver-report loss, the layer selection's estimate without an estimator
        self.estimate = ViewerEstimate()
        #: transport-wide feedback, the estimator, probes, playout delay (Subscriber sets it)
        self.congestion: ViewerCongestion | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self, sink: PacketSink) -> None:
        """DTLS is up: the DownTracks join the fan-out (fast start from the GOP cache)."""
        self.sink = sink
        for downtrack in self.downtracks:
            downtrack.connect(sink)

    def close(self) -> None:
        self.sink = NULL_SINK
        if self.congestion is not None:
            self.congestion.close()
        for downtrack in self.downtracks:
            downtrack.close()

    # -- RTCP from the viewer -------------------------------------------------------------------

    def admit_rtcp(self, now: float) -> bool:
        """Token bucket on the viewer's RTCP compound packets; False: drop and count."""
        tokens = min(RTCP_BURST, self._tokens + (now - self._tokens_at) * RTCP_RATE)
        self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            self.rtcp_dropped += 1
            self.counters.bad_packets += 1
            return False
        self._tokens = tokens - 1.0
        return True

    def on_rtcp(self, packets: list[RtcpPacket], now: float) -> None:
        """One compound packet: reports, NACKs merged per DownTrack, keyframe requests."""
        lost: dict[DownTrack, list[int]] = {}
        wants_keyframe: set[DownTrack] = set()
        for packet in packets:
            if isinstance(packet, (RtcpReceiverReport, RtcpSenderReport)):
                for block in packet.reports:
                    downtrack = self.by_ssrc.get(block.ssrc)
                    if downtrack is not None:
                        downtrack.stats.on_receiver_report(block, now, ntp_now())
                        if self.congestion is not None:
                            self.congestion.on_report_block(downtrack, block, now)
                        if downtrack.kind == "video":
                            source = downtrack.forwarder.source
                            sent = source.bitrate if source is not None else 0.0
                            self.estimate.on_receiver_report(block.fraction_lost / 256, sent, now)
            elif isinstance(packet, RtcpRemb):
                self.estimate.on_remb(packet.bitrate, now)
                if self.congestion is not None:
                    self.congestion.on_remb(packet.bitrate, now)
            elif isinstance(packet, RtcpTransportFeedback):
                if self.congestion is not None:
                    self.congestion.on_transport_feedback(packet, now)
            elif isinstance(packet, RtcpNack):
                downtrack = self.by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    lost.setdefault(downtrack, []).extend(packet.lost)
            elif isinstance(packet, RtcpPli):
                downtrack = self.by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    wants_keyframe.add(downtrack)
            elif isinstance(packet, RtcpFir):
                for ssrc, _ in packet.entries:
                    downtrack = self.by_ssrc.get(ssrc)
                    if downtrack is not None:
                        wants_keyframe.add(downtrack)
        for downtrack, seqs in lost.items():
            downtrack.on_nack(seqs, now)
        if wants_keyframe:
            self._keyframe_request(wants_keyframe, now)

    def _keyframe_request(self, downtracks: set[DownTrack], now: float) -> None:
        self.counters.keyframe_requests += 1
        last = self._last_keyframe_request
        if last is not None and now - last < KEYFRAME_REQUEST_INTERVAL:
            self.counters.keyframe_requests_refused += 1
            return
        self._last_keyframe_request = now
        for downtrack in downtracks:
            downtrack.keyframe_requests += 1
            downtrack.forwarder.request_keyframe()

    # -- reports --------------------------------------------------------------------------------

    def reports(self, now: float) -> list[bytes]:
        """Slow timer: one SR per started DownTrack plus SDES (RFC 3550 §6.4.1)."""
        ntp = ntp_now()
        if self.congestion is not None:
            self.congestion.tick(now)  # playout delay, probes
        reports: list[object] = []
        for downtrack in self.downtracks:
            report = downtrack.sender_report(now, ntp)
            if report is not None:
                reports.append(report)
                reports.append(RtcpSdes.cname(downtrack.ssrc, self.cname))
        return [serialize_compound(reports)] if reports else []  # type: ignore[arg-type]

    def stats(self) -> dict[str, float]:
        rtts = [d.stats.rtt for d in self.downtracks if d.stats.rtt is not None]
        return {
            "packets_sent": sum(d.packets_sent for d in self.downtracks),
            "payload_bytes": sum(d.payload_bytes for d in self.downtracks),
            "retransmitted": sum(d.retransmitted for d in self.downtracks),
            "rtcp_dropped": self.rtcp_dropped,
            "rtt": max(rtts) if rtts else -1.0,
        }
