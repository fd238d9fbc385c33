"""Probing before stepping up: short clusters of extra packets, kept within a budget.

A probe is wanted only while the layer selection asks for a higher layer (``want(target_bps)``)
that no recent probe showed the link carries. A cluster lasts ``DURATION`` (100 ms; at low
rates up to ``MAX_DURATION``, until it has sent ``MIN_BYTES``: a result needs ``MIN_PACKETS``
with feedback) and adds
``extra = min(estimate, target)`` of probe traffic (RTX of recent packets, sent by the egress),
so what goes to the viewer during a probe is at most about twice the estimate. (A target below
the estimate is probed too: an estimate nothing has tested, such as one seeded from a fast-start
burst, must not keep the selection waiting for a probe that never starts.) Clusters start at
most every ``INTERVAL`` seconds, doubling up to ``MAX_INTERVAL`` while they keep saturating the
link; while the probes keep finding headroom (the link carried the whole cluster), the next may
follow after ``FOLLOW_UP`` (exponential search, as libwebrtc's initial probing does).

The result of a cluster is computed from transport-wide feedback on every packet *sent* within
its time window (media and probes): the send rate, and the receive rate over the arrival span.
When the viewer received noticeably slower than we sent (``< 0.9x``) the link is saturated and
the receive rate is its capacity; otherwise the link carried the send rate. Either way the
result (x 0.95) may lift the estimate (:class:`relaycast.media.bwe.BandwidthEstimator`).
"""

from __future__ import annotations

from dataclasses import dataclass

DURATION = 0.1
MAX_DURATION = 0.4
MIN_BYTES = 4 * 1200  # a cluster's probe bytes: at least this (longer clusters at low rates;
#: 10 packets made the queue a 250 kbit/s viewer's cluster builds long enough to freeze it)
INTERVAL = 5.0
MAX_INTERVAL = 10.0  # a viewer whose link got faster finds out within this (plus a cluster)
NEW_TARGET = 0.25  # a target this much off the last one is a new one
FOLLOW_UP = 0.5
MIN_PACKETS = 5
SATURATED = 0.9
RESULT_SCALE = 0.95
RESULT_TTL = 10.0  # a result counts for a step up this long
TIMEOUT = 2.0  # a cluster with no feedback after this long is abandoned


@dataclass(slots=True)
class ProbeResult:
    at: float
    sent_bps: float
    received_bps: float
    saturated: bool

    @property
    def bps(self) -> float:
        """What the link proved it carries."""
        return RESULT_SCALE * (self.received_bps if self.saturated else self.sent_bps)


@dataclass(slots=True)
class _Cluster:
    start: float
    end: float
    extra_bps: float
    granted: float = 0.0  # bytes handed out
    last_grant: float = 0.0
    # feedback on packets sent within [start, end]
    first_send: float | None = None
    first_send_size: int = 0
    last_send: float = 0.0
    first_arrival: float | None = None
    last_arrival: float = 0.0
    first_arrival_size: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    received: int = 0
    covered: bool = False  # feedback reached past its end


class ProbeController:
    """Decides when to probe and how many bytes, and judges the clusters from feedback."""

    __slots__ = (
        "_backoff",
        "_cluster",
        "_next_at",
        "clusters",
        "last_result",
        "target_bps",
        "total_bytes",
    )

    def __init__(self) -> None:
        self.target_bps: float | None = None
        self._cluster: _Cluster | None = None
        self._next_at = 0.0
        self._backoff = INTERVAL
        self.last_result: ProbeResult | None = None
        self.clusters = 0
        self.total_bytes = 0.0

    @property
    def active(self) -> bool:
        return self._cluster is not None

    def want(self, target_bps: float | None) -> None:
        old = self.target_bps
        if (old is None) != (target_bps is None) or (
            old is not None and target_bps is not None and abs(target_bps - old) > NEW_TARGET * old
        ):
            # a new target (another layer): probe at the normal pace again; the same layer's
            # bitrate, measured anew every second, is not one
            self._backoff = INTERVAL
        self.target_bps = target_bps

    def grant(self, now: float, estimate: float, may_start: bool) -> int:
        """Bytes of probe traffic the egress may send now (0: none)."""
        cluster = self._cluster
        if cluster is None:
            target = self.target_bps
            if not may_start or target is None or now < self._next_at:
                return 0
            if target <= estimate and self.succeeded(target, now):
                return 0  # the link has shown it carries the target: nothing to find out
            # the estimate on top of the media; when the estimate is already above the target
            # (it was never put to the test: seeded, or grown while the viewer took less),
            # the target's worth, which shows the link carries it
            extra = min(estimate, target)
            # at low rates a cluster lasts until it carried enough packets to be judged
            duration = min(max(DURATION, MIN_BYTES * 8 / max(extra, 1.0)), MAX_DURATION)
            cluster = self._cluster = _Cluster(now, now + duration, extra, last_grant=now)
            self.clusters += 1
            # the first grant covers one pacing tick (10 ms)
            amount = extra * 0.01 / 8
        else:
            if now >= cluster.end:
                if now - cluster.end > TIMEOUT:
                    self._finish(now, None)
                return 0
            amount = cluster.extra_bps * (now - cluster.last_grant) / 8
            cluster.last_grant = now
        budget = cluster.extra_bps * (cluster.end - cluster.start) / 8 - cluster.granted
        amount = max(min(amount, budget), 0.0)
        cluster.granted += amount
        self.total_bytes += amount
        return int(amount)

    def on_packet(self, send: float, size: int, arrival: float | None) -> None:
        """One packet of transport-wide feedback (times: send on our clock, arrival on the
        viewer's)."""
        cluster = self._cluster
        if cluster is None or send < cluster.start:
            return
        if send > cluster.end:
            cluster.covered = True
            return
        if cluster.first_send is None or send < cluster.first_send:
            cluster.first_send = send
            cluster.first_send_size = size
        cluster.last_send = max(cluster.last_send, send)
        cluster.sent_bytes += size
        if arrival is not None:
            if cluster.first_arrival is None or arrival < cluster.first_arrival:
                cluster.first_arrival = arrival
                cluster.first_arrival_size = size
            cluster.last_arrival = max(cluster.last_arrival, arrival)
            cluster.received_bytes += size
            cluster.received += 1

    def evaluate(self, now: float) -> ProbeResult | None:
        """After a batch of feedback: the finished cluster's result, if it has one now."""
        cluster = self._cluster
        if cluster is None or not cluster.covered:
            return None
        return self._finish(now, cluster)

    def _finish(self, now: float, cluster: _Cluster | None) -> ProbeResult | None:
        self._cluster = None
        result = None
        if (
            cluster is not None
            and cluster.received >= MIN_PACKETS
            and cluster.first_send is not None
            and cluster.first_arrival is not None
        ):
            # rates over the spans: the first packet's bytes went before the span began
            send_span = max(cluster.last_send - cluster.first_send, 0.001)
            arrival_span = max(cluster.last_arrival - cluster.first_arrival, 0.001)
            sent_bps = (cluster.sent_bytes - cluster.first_send_size) * 8 / send_span
            received = cluster.received_bytes - cluster.first_arrival_size
            received_bps = received * 8 / arrival_span
            # (lost packets count against the receive rate: bytes received vs sent)
            saturated = received_bps < SATURATED * sent_bps
            result = ProbeResult(now, sent_bps, received_bps, saturated)
            self.last_result = result
        if result is not None and not result.saturated:
            self._backoff = INTERVAL
            self._next_at = now + FOLLOW_UP
        else:
            # the link is full (or the probe got lost): each probe costs a queue, so the
            # next one waits longer while they keep failing
            self._next_at = now + self._backoff
            self._backoff = min(self._backoff * 2, MAX_INTERVAL)
        return result

    def succeeded(self, bps: float, now: float) -> bool:
        """A recent probe proved the link carries ``bps``."""
        result = self.last_result
        return result is not None and now - result.at <= RESULT_TTL and result.bps >= bps
