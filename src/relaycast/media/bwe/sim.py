"""A deterministic bottleneck-link simulation for the estimator (tests, docs/bwe.md, bench).

The sender sends ``packet_size``-byte packets paced at a rate of its choosing (by default the
estimate itself: a sender that fills what the estimator allows, or a fixed rate), stamps each
with a transport-wide sequence number (:class:`PySequencer`, send times on the simulated clock)
and adds the probe bytes :meth:`BandwidthEstimator.probe` grants every 10 ms. The link is one
drop-tail FIFO queue served at the capacity of the moment (``schedule``), a one-way delay,
deterministic jitter and optional random loss (both from a seeded ``random.Random``). The
receiver is the server's own receive side (:class:`TwccRecorder`): every ``feedback_interval``
its feedback is serialized to wire bytes, parsed back and, one one-way delay later, given to the
sender through :class:`TransportFeedbackAdapter`, exactly as a viewer's feedback is.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from relaycast.media.bwe.estimator import BandwidthEstimator
from relaycast.media.bwe.history import PySequencer, TransportFeedbackAdapter
from relaycast.media.feedback.twcc import TwccRecorder
from relaycast.rtp.rtcp import RtcpTransportFeedback

TICK = 0.001


@dataclass
class Link:
    #: (from time s, capacity bit/s), sorted by time
    schedule: list[tuple[float, float]]
    one_way_delay: float = 0.025
    queue_limit: float = 0.25  # seconds of queueing at the current capacity: drop-tail beyond
    jitter: float = 0.0005
    loss: float = 0.0

    def capacity(self, t: float) -> float:
        rate = self.schedule[0][1]
        for start, value in self.schedule:
            if t >= start:
                rate = value
        return rate


@dataclass
class Trace:
    times: list[float] = field(default_factory=list)
    estimates: list[float] = field(default_factory=list)
    capacities: list[float] = field(default_factory=list)
    send_rates: list[float] = field(default_factory=list)
    feedback_wire: list[bytes] = field(default_factory=list)
    sent: int = 0
    dropped: int = 0
    probe_bytes: int = 0

    def window(self, start: float, end: float) -> list[float]:
        return [e for t, e in zip(self.times, self.estimates, strict=True) if start <= t < end]


def simulate(
    estimator: BandwidthEstimator,
    link: Link,
    duration: float,
    *,
    send_rate: Callable[[float, BandwidthEstimator], float] | None = None,
    packet_size: int = 1200,
    feedback_interval: float = 0.05,
    sample_every: float = 0.1,
    seed: int = 1,
    keep_wire: bool = False,
) -> Trace:
    rng = random.Random(seed)
    history = PySequencer(capacity=4096)
    adapter = TransportFeedbackAdapter(history, estimator)
    recorder = TwccRecorder(sender_ssrc=1, media_ssrc=2)
    trace = Trace()
    arrivals: list[tuple[float, int]] = []  # heap of (arrival time, transport seq)
    feedback_queue: list[tuple[float, int, bytes]] = []  # heap of (due, order, wire bytes)
    link_free = 0.0
    budget = 0.0
    probe_budget = 0.0
    next_feedback = feedback_interval
    next_sample = 0.0
    next_probe_tick = 0.0
    order = 0
    sent_bytes_window: list[tuple[float, int]] = []
    steps = round(duration / TICK)
    for step in range(steps + 1):
        t = step * TICK
        rate = send_rate(t, estimator) if send_rate is not None else estimator.estimate_bps
        budget = min(budget + rate * TICK / 8, 4 * packet_size)
        if t >= next_probe_tick:
            next_probe_tick += 0.01
            probe_budget += estimator.probe(t)
        while budget >= packet_size or probe_budget >= packet_size / 2:
            if budget >= packet_size:
                budget -= packet_size
            else:
                probe_budget -= packet_size
                trace.probe_bytes += packet_size
            seq = history.stamp()
            history.sent(seq, packet_size + 40, round(t * 1e6))
            trace.sent += 1
            sent_bytes_window.append((t, packet_size))
            # the bottleneck: a drop-tail FIFO served at the capacity of the moment
            capacity = link.capacity(t)
            start = max(t, link_free)
            if start - t > link.queue_limit or (link.loss and rng.random() < link.loss):
                trace.dropped += 1
                continue
            link_free = start + (packet_size + 40) * 8 / capacity
            arrival = link_free + link.one_way_delay + rng.random() * link.jitter
            heapq.heappush(arrivals, (arrival, seq))
        while arrivals and arrivals[0][0] <= t:
            arrival, seq = heapq.heappop(arrivals)
            recorder.on_packet(seq, round(arrival * 1e6))
        if t >= next_feedback:
            next_feedback += feedback_interval
            for packet in recorder.build(round(t * 1e6)):
                wire = bytes(packet)
                order += 1
                heapq.heappush(feedback_queue, (t + link.one_way_delay, order, wire))
        while feedback_queue and feedback_queue[0][0] <= t:
            _, _, wire = heapq.heappop(feedback_queue)
            if keep_wire:
                trace.feedback_wire.append(wire)
            adapter.on_feedback(RtcpTransportFeedback.parse(wire), t)
        if t >= next_sample:
            next_sample += sample_every
            horizon = t - 1.0
            sent_bytes_window = [(s, n) for s, n in sent_bytes_window if s > horizon]
            trace.times.append(round(t, 6))
            trace.estimates.append(estimator.estimate_bps)
            trace.capacities.append(link.capacity(t))
            trace.send_rates.append(sum(n for _, n in sent_bytes_window) * 8 / 1.0)
    return trace
