"""One viewer's bandwidth estimate: GCC's delay and loss halves, REMB and probes combined.

``estimate = min(delay-based, loss-based, REMB)`` where each part applies only while its input
is there: the delay-based rate needs transport-wide feedback (within ``FEEDBACK_TTL``), REMB
counts while fresh (``REMB_TTL``), and the loss-based constraint comes from the feedback's
losses or, without transport-wide feedback, from the viewer's receiver reports.

Pure and clock-injected: every input carries ``now`` (seconds, monotonic), nothing reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from relaycast.media.bwe.delay import (
    BETA,
    AimdRateControl,
    InterArrival,
    OveruseDetector,
    RateState,
    TrendlineFilter,
    Usage,
)
from relaycast.media.bwe.loss import LOW_LOSS, AckedRate, LossController
from relaycast.media.bwe.probe import ProbeController, ProbeResult

#: (send time on our clock, wire size in bytes, arrival time on the viewer's clock or None)
SentPacket = tuple[float, int, float | None]

START_BPS = 1_000_000
MIN_BPS = 50_000
MAX_BPS = 50_000_000
FEEDBACK_TTL = 2.0
REMB_TTL = 5.0
LOSS_INTERVAL = 0.5  # a loss fraction is taken over at least this much feedback
LOSS_MIN_PACKETS = 20
DEFAULT_RTT = 0.1
# x the acked rate: where a loss-based decrease stops. What got through is what the link
# carries: 0.95 of it is already below the link (0.85 held a Chromium viewer behind a 1.5 Mbit/s
# tbf, fed more than that, at 85 % of its link: tests/unit/test_bwe_recorded.py)
LOSS_FLOOR = 0.95
PROBE_FLOOR_TTL = 2.0  # s after a probe result its received rate bounds a delay decrease


class BandwidthEstimator:
    """GCC-style send-side estimate for one viewer transport (draft-ietf-rmcat-gcc-02)."""

    def __init__(
        self,
        *,
        start_bps: int = START_BPS,
        min_bps: int = MIN_BPS,
        max_bps: int = MAX_BPS,
        transport_cc: bool = True,
    ) -> None:
        #: the viewer negotiated transport-wide feedback: until its first feedback the delay
        #: half holds the start rate (rather than no bound at all)
        self.transport_cc = transport_cc
        self.min_bps = min_bps
        self.max_bps = max_bps
        self.rtt = DEFAULT_RTT
        self._measured = False
        self._rtt_measured = False
        self._inter = InterArrival()
        self._trend = TrendlineFilter()
        self._detector = OveruseDetector()
        self._aimd = AimdRateControl(start_bps, max_bps)
        self._loss = LossController(max_bps)
        self._acked = AckedRate()
        self._probes = ProbeController()
        self._remb: tuple[float, float] | None = None  # (bps, at)
        self._feedback_at: float | None = None
        self._lost = 0
        self._counted = 0
        self._loss_since: float | None = None
        # counters for stats()
        self.feedback_packets = 0
        self.reported = 0
        self.lost_total = 0
        self.overuses = 0
        #: when the delay signal last said the path is over its capacity (None: never)
        self.last_overuse: float | None = None
        self._estimate = float(start_bps) if transport_cc else float(max_bps)

    # -- the contract ---------------------------------------------------------------------------

    @property
    def estimate_bps(self) -> int:
        return int(self._estimate)

    @property
    def measured(self) -> bool:
        """Whether the estimate rests on anything the viewer reported (transport-wide feedback
        with a receive rate, REMB, or reports when there is no transport-wide feedback);
        before that it is only the start rate (or unlimited)."""
        return self._measured

    def on_transport_feedback(self, packets: Sequence[SentPacket], now: float) -> None:
        """The packets one transport-wide feedback message reported (RFC draft §3.1), in
        transport sequence order, joined with their send times and sizes."""
        if not packets:
            return
        self._feedback_at = now
        self.feedback_packets += 1
        probes = self._probes
        probing = probes.active
        received: list[tuple[float, float, int]] = []
        lost = 0
        for send, size, arrival in packets:
            if probing:
                probes.on_packet(send, size, arrival)
            if arrival is None:
                lost += 1
            else:
                received.append((arrival, send, size))
        self.reported += len(packets)
        self.lost_total += lost
        received.sort()
        inter = self._inter
        trend = self._trend
        detector = self._detector
        overuse = False
        for arrival, send, size in received:
            self._acked.add(arrival, size)
            deltas = inter.add(send, arrival)
            if deltas is None:
                continue
            send_delta, arrival_delta, group_arrival = deltas
            slope = trend.update((arrival_delta - send_delta) * 1000.0, group_arrival)
            usage = detector.detect(slope, trend.modified_trend, send_delta, now)
            overuse = overuse or usage is Usage.OVERUSE
        usage = Usage.OVERUSE if overuse else detector.usage
        if overuse:
            self.overuses += 1
            self.last_overuse = now
        acked = self._acked.rate()
        if not self._measured and acked is not None:
            # the first throughput seen: what we already send got through, start from there
            self._measured = True
            self._aimd.set_rate(max(acked, self._aimd.rate), now)
        self._aimd.update(usage, acked, self.rtt, now)
        if probing:
            result = probes.evaluate(now)
            if result is not None:
                self._take_probe(result, now)
        last = probes.last_result
        if last is not None and now - last.at <= PROBE_FLOOR_TTL:
            # the overuse a probe cluster causes itself (its queue) is no news: the cluster
            # just measured what the link carries, so a decrease stops at beta x that (an
            # app-limited viewer's acked rate is far below it, and 0.9 x the acked rate would
            # throw away what the probe found)
            floor = BETA * last.received_bps
            if self._aimd.rate < floor:
                self._aimd.rate = floor
        self._count_loss(lost, len(packets), now)
        self._combine(now)

    def on_receiver_report(self, fraction_lost: float, rtt_s: float | None, now: float) -> None:
        """A report block on one of our streams: ``fraction_lost`` in 0..1 (or the raw 8-bit
        field, 0..255), the round trip it measured (None: unknown). Its loss counts only while
        there is no transport-wide feedback (which reports the same losses sooner)."""
        if rtt_s is not None and rtt_s > 0:
            self.rtt = 0.875 * self.rtt + 0.125 * rtt_s if self._rtt_measured else rtt_s
            self._rtt_measured = True
        loss = fraction_lost / 256 if fraction_lost > 1 else fraction_lost
        if not self.transport_cc:
            self._measured = True
        if not self._twcc_active(now):
            self._loss.update(loss, self._estimate, self.rtt, now)
        self._combine(now)

    def on_remb(self, bps: int, now: float) -> None:
        """The viewer's own estimate (REMB, draft-alvestrand-rmcat-remb): an upper bound."""
        self._remb = (float(bps), now)
        self._measured = True
        self._combine(now)

    def probe(self, now: float) -> int:
        """Bytes of probe traffic the egress may send now (RTX of recent packets)."""
        may_start = (
            self._twcc_active(now)
            and self._detector.usage is Usage.NORMAL
            and self._aimd.state is not RateState.DECREASE
            and self._loss.loss < 0.02
        )
        return self._probes.grant(now, self._estimate, may_start)

    # -- for the layer selection (S1) and the snapshot ------------------------------------------

    def want_probe(self, target_bps: int | None) -> None:
        """A higher layer at ``target_bps`` is wanted (None: nothing above the estimate)."""
        self._probes.want(target_bps)

    def probe_succeeded(self, bps: int, now: float) -> bool:
        """A probe within the last 10 s showed the link carries ``bps``."""
        return self._probes.succeeded(bps, now)

    @property
    def probing(self) -> bool:
        return self._probes.active

    @property
    def last_probe(self) -> ProbeResult | None:
        return self._probes.last_result

    @property
    def loss_fraction(self) -> float:
        """The loss of the last interval the loss controller took (feedback or reports)."""
        return self._loss.loss

    @property
    def usage(self) -> Usage:
        return self._detector.usage

    def has_transport_feedback(self, now: float) -> bool:
        return self._twcc_active(now)

    def congested(self, now: float, within: float = 3.0) -> bool:
        """The delay signal saw a queue building (overuse) within the last ``within``
        seconds: losses and jitter now are the path's congestion (a layer too large, a probe
        cluster's queue), which the layer selection answers, not random loss."""
        return self.last_overuse is not None and now - self.last_overuse <= within

    def stats(self) -> dict[str, float]:
        return {
            "estimate_bps": self._estimate,
            "delay_bps": self._aimd.rate,
            "loss_bps": self._loss.rate,
            "loss": self._loss.loss,
            "threshold": self._detector.threshold,
            "trend": self._trend.trend,
            "feedback": self.feedback_packets,
            "reported": self.reported,
            "lost": self.lost_total,
            "overuses": self.overuses,
            "probes": self._probes.clusters,
            "probe_bytes": self._probes.total_bytes,
            "rtt": self.rtt,
        }

    # -- internals ------------------------------------------------------------------------------

    def _twcc_active(self, now: float) -> bool:
        if self._feedback_at is None:
            return False
        return now - self._feedback_at <= FEEDBACK_TTL

    def _delay_applies(self, now: float) -> bool:
        return self._twcc_active(now) or (self.transport_cc and self._feedback_at is None)

    def _take_probe(self, result: ProbeResult, now: float) -> None:
        bps = result.bps
        if bps > self._aimd.rate:
            self._aimd.set_rate(bps, now)
        if self._loss.loss < LOW_LOSS and bps > self._loss.rate:
            # the link just carried this (lost packets count against a probe's receive rate):
            # the loss constraint of an earlier congestion need not relax to it at 8 %/s (as
            # libwebrtc hands a probe's result to its loss-based half)
            self._loss.rate = bps
        if result.saturated and bps < self._aimd.rate:
            self._aimd.set_rate(bps, now)  # the probe hit the link's capacity below our rate

    def _count_loss(self, lost: int, total: int, now: float) -> None:
        self._lost += lost
        self._counted += total
        if self._loss_since is None:
            self._loss_since = now
        if now - self._loss_since >= LOSS_INTERVAL and self._counted >= LOSS_MIN_PACKETS:
            acked = self._acked.rate()
            floor = LOSS_FLOOR * acked if acked is not None else 0.0
            self._loss.update(self._lost / self._counted, self._estimate, self.rtt, now, floor)
            self._lost = self._counted = 0
            self._loss_since = now

    def _combine(self, now: float) -> None:
        estimate = self._loss.rate
        if self._delay_applies(now):
            estimate = min(estimate, self._aimd.rate)
        remb = self._remb
        if remb is not None and now - remb[1] <= REMB_TTL:
            estimate = min(estimate, remb[0])
        self._estimate = min(max(estimate, self.min_bps), self.max_bps)
        if self._estimate < self._aimd.rate and self._loss.rate < self._aimd.rate:
            # keep the delay half from drifting far above what loss allows (a bound only: it
            # must not lift the delay half past its own app-limited clamp as the loss
            # constraint relaxes)
            self._aimd.rate = min(self._aimd.rate, max(self._loss.rate * 1.5, self._estimate))
