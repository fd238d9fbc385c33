"""One viewer transport's congestion state: transport-wide numbers, the estimator, its probes,
and the playout delay it is asked for.

* **TWCC to viewers.** When the viewer negotiated the transport-wide sequence number extension,
  one sequencer (media/bwe/history.py; the C one with the native kernel) numbers every RTP
  packet to it, audio and video alike, on the Python path and in the kernel; its feedback
  (RTPFB 15) is joined with the send history and feeds :class:`BandwidthEstimator`
  (``Subscriber.bwe``, what the layer selection reads).
* **Fallbacks.** Receiver reports (loss, round trip) and REMB go to the estimator too.
* **Probes.** When the layer selection wants a layer above the estimate
  (``bwe.want_probe``), the estimator grants probe bytes within its budget (at most the
  estimate on top of the media, for 100 ms, every few seconds); they go out as RTX of the
  newest video packets (the viewer drops them as duplicates, its feedback reports them), paced
  every 10 ms while a cluster lasts. Without RTX nothing is probed.
* **Playout delay** (:mod:`relaycast.media.feedback.playout_delay`): once a second the level
  is evaluated from the reports' loss and jitter and the feedback's loss; a change is a new
  extension layout for the video DownTrack (viewers with equal values share the block).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Sequence

from relaycast.media.bwe import BandwidthEstimator
from relaycast.media.bwe.history import SequencerLike, TransportFeedbackAdapter, new_sequencer
from relaycast.media.bwe.trace import RecordingEstimator, new_estimator
from relaycast.media.downtrack import DownTrack, ExtLayout, stamp_twcc
from relaycast.media.feedback.playout_delay import PlayoutDelayController, encode
from relaycast.rtp.rtcp import RtcpReceptionReport, RtcpTransportFeedback
from relaycast.sdp.negotiate import URI_PLAYOUT_DELAY

_HEADER = struct.Struct("!BBHII")
PROBE_TICK = 0.01
PROBE_PACKETS = 64  # newest packets a probe may resend
REPORT_TTL = 5.0  # a receiver report's loss and jitter count this long
#: a new viewer's first seconds (s): what it loses then is the server's own doing (the
#: fast-start burst, the top layer it gets before its first estimate), which the layer
#: selection answers; it does not raise the playout delay (each later step down cost
#: Chromium viewers behind a rate limit a freeze)
JOIN_GRACE = 4.0


class ViewerCongestion:
    __slots__ = (
        "_jitter",
        "_joined",
        "_loss",
        "_probe_handle",
        "adapter",
        "bwe",
        "feedback",
        "playout",
        "probe_bytes",
        "probe_packets",
        "sequencer",
        "video",
    )

    def __init__(
        self,
        downtracks: Sequence[DownTrack],
        *,
        playout_delay: bool = True,
        use_native: bool | None = None,
    ) -> None:
        twcc = any(d.layout.twcc_id is not None for d in downtracks)
        self.sequencer: SequencerLike | None = new_sequencer(use_native) if twcc else None
        for downtrack in downtracks:
            if downtrack.layout.twcc_id is not None:
                downtrack.transport_seq = self.sequencer
        # RELAYCAST_BWE_TRACE=<dir>: an estimator that records its inputs (media/bwe/trace.py)
        self.bwe: BandwidthEstimator = new_estimator(transport_cc=twcc)
        self.adapter = (
            TransportFeedbackAdapter(self.sequencer, self.bwe) if self.sequencer else None
        )
        self.video = next((d for d in downtracks if d.kind == "video"), None)
        self.playout: PlayoutDelayController | None = None
        video = self.video
        if video is not None and any(u == URI_PLAYOUT_DELAY for _, u, _ in video.layout.items):
            if playout_delay:
                self.playout = PlayoutDelayController()
                self._set_playout(*self.playout.delay)
            else:  # negotiated, never sent
                video.layout = ExtLayout(
                    tuple(item for item in video.layout.items if item[1] != URI_PLAYOUT_DELAY)
                )
        self._loss: dict[int, tuple[float, float]] = {}  # ssrc -> (fraction, at)
        self._jitter: dict[str, tuple[float, float]] = {}  # kind -> (ms, at)
        self._probe_handle: asyncio.TimerHandle | None = None
        self._joined: float | None = None  # the first report or tick
        self.feedback = 0
        self.probe_bytes = 0
        self.probe_packets = 0

    # -- RTCP from the viewer -------------------------------------------------------------------

    def on_transport_feedback(self, packet: RtcpTransportFeedback, now: float) -> None:
        if self.adapter is None:
            return
        self.feedback += 1
        self.adapter.on_feedback(packet, now)

    def on_report_block(self, downtrack: DownTrack, block: RtcpReceptionReport, now: float) -> None:
        rtt = downtrack.stats.rtt
        self.bwe.on_receiver_report(block.fraction_lost / 256, rtt, now)
        if self._in_grace(now):
            return
        self._loss[block.ssrc] = (block.fraction_lost / 256, now)
        self._jitter[downtrack.kind] = (block.jitter * 1000.0 / downtrack.clock_rate, now)

    def on_remb(self, bitrate: int, now: float) -> None:
        self.bwe.on_remb(bitrate, now)

    # -- the slow tick (every second) -----------------------------------------------------------

    def tick(self, now: float) -> None:
        self._evaluate_playout(now)
        if self._probe_handle is None and self.bwe.probe(now) == 0:
            return
        self._probe_step()

    def _evaluate_playout(self, now: float) -> None:
        playout = self.playout
        if playout is None:
            return
        losses = [loss for loss, at in self._loss.values() if now - at <= REPORT_TTL]
        if self.bwe.has_transport_feedback(now):
            losses.append(self.bwe.loss_fraction)
        jitter = self._jitter.get("audio") or self._jitter.get("video")
        jitter_ms = jitter[0] if jitter is not None and now - jitter[1] <= REPORT_TTL else 0.0
        congested = self.bwe.congested(now) or self._in_grace(now)
        change = playout.evaluate(max(losses, default=0.0), jitter_ms, now, congested)
        if change is not None:
            self._set_playout(*change)

    def _in_grace(self, now: float) -> bool:
        if self._joined is None:
            self._joined = now
        return now - self._joined < JOIN_GRACE

    def _set_playout(self, min_ms: int, max_ms: int) -> None:
        video = self.video
        if video is None:
            return
        value = encode(min_ms, max_ms)
        items = tuple(
            (i, uri, value if uri == URI_PLAYOUT_DELAY else constant)
            for i, uri, constant in video.layout.items
        )
        video.set_layout(ExtLayout(items))

    # -- probes ---------------------------------------------------------------------------------

    def _probe_step(self) -> None:
        """Send what the estimator grants now; again in 10 ms while a cluster lasts."""
        self._probe_handle = None
        now = time.monotonic()
        granted = self.bwe.probe(now)
        if granted:
            self.send_probe(granted)
        if not self.bwe.probing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._probe_handle = loop.call_later(PROBE_TICK, self._probe_step)

    def send_probe(self, budget: int) -> int:
        """RTX of the newest video packets, about ``budget`` bytes; the bytes sent."""
        video = self.video
        if video is None or not video.started:
            return 0
        rtx_pt, rtx_ssrc = video.rtx_payload_type, video.rtx_ssrc
        forwarder = video.forwarder
        newest, source = forwarder.newest, forwarder.source
        if rtx_pt is None or rtx_ssrc is None or newest is None or source is None:
            return 0
        sequencer = self.sequencer if video.layout.twcc_id is not None else None
        sent = 0
        for back in range(PROBE_PACKETS):
            if sent >= budget:
                break
            packet = forwarder.lookup((newest.sequence_number - back) & 0xFFFF)
            if packet is None:
                break
            out_seq = (packet.sequence_number + video.seq_offset) & 0xFFFF
            b0, ext = video.layout.build(packet, source.ext_ids)
            twcc = None
            if sequencer is not None:
                twcc = sequencer.stamp()
                ext = stamp_twcc(ext, twcc)
            video._rtx_seq = rtx_seq = (video._rtx_seq + 1) & 0xFFFF
            header = _HEADER.pack(
                b0,
                (0x80 if packet.marker else 0) | rtx_pt,
                rtx_seq,
                (packet.timestamp + video.ts_offset) & 0xFFFFFFFF,
                rtx_ssrc,
            )
            size = video.sink.send_rtp(header + ext + struct.pack("!H", out_seq) + packet.payload)
            if size and sequencer is not None and twcc is not None:
                sequencer.sent(twcc, size)
            sent += size
            self.probe_packets += 1 if size else 0
        self.probe_bytes += sent
        return sent

    def close(self) -> None:
        if self._probe_handle is not None:
            self._probe_handle.cancel()
            self._probe_handle = None
        if isinstance(self.bwe, RecordingEstimator):
            self.bwe.close()

    def stats(self) -> dict[str, float]:
        out = dict(self.bwe.stats())
        out["transport_feedback"] = self.feedback
        out["probe_sent_bytes"] = self.probe_bytes
        if self.playout is not None:
            out["playout_min_ms"] = self.playout.delay[0]
        return out
