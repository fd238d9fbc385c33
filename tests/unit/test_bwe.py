"""The bandwidth estimator (relaycast/media/bwe) against deterministic bottleneck simulations.

The traces are made by :func:`relaycast.media.bwe.sim.simulate`: a sender that sends at the
estimate (plus the probes it is granted), a drop-tail bottleneck, and the server's own
transport-cc receive side (TwccRecorder) whose feedback goes over the wire format (serialized,
parsed) through the TransportFeedbackAdapter, as a viewer's feedback does.
"""

from __future__ import annotations

import statistics

import pytest

from relaycast.media.bwe import BandwidthEstimator
from relaycast.media.bwe.delay import InterArrival, OveruseDetector, TrendlineFilter, Usage
from relaycast.media.bwe.history import PySequencer, TransportFeedbackAdapter
from relaycast.media.bwe.loss import LossController
from relaycast.media.bwe.sim import Link, simulate
from relaycast.rtp.rtcp import RtcpTransportFeedback


def greedy(start: int = 300_000) -> BandwidthEstimator:
    estimator = BandwidthEstimator(start_bps=start)
    estimator.want_probe(100_000_000)  # a higher layer is always wanted
    return estimator


@pytest.mark.parametrize("capacity", [800_000, 2_500_000, 5_000_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_converges_within_10_percent_of_a_fixed_bottleneck_in_5_s(capacity: int, seed: int) -> None:
    trace = simulate(greedy(), Link([(0.0, capacity)]), 20.0, seed=seed)
    settled = trace.window(5.0, 20.0)
    assert min(settled) >= 0.85 * capacity, min(settled)
    assert max(settled) <= 1.1 * capacity, max(settled)
    assert abs(statistics.mean(settled) / capacity - 1) <= 0.1
    # before the estimator knew anything, it was far off: the test can fail
    assert trace.estimates[0] < 0.5 * capacity


@pytest.mark.parametrize("capacity", [2_500_000, 5_000_000])
def test_backs_off_within_1_s_of_a_halving(capacity: int) -> None:
    trace = simulate(greedy(), Link([(0.0, capacity), (12.0, capacity / 2)]), 18.0, seed=7)
    before = trace.window(11.0, 12.0)
    assert min(before) > 0.8 * capacity  # it was at the old capacity
    after = trace.window(13.0, 18.0)
    assert max(after) <= 1.1 * capacity / 2, max(after)
    backed_off = [
        t
        for t, e in zip(trace.times, trace.estimates, strict=True)
        if t >= 12.0 and e <= 0.55 * capacity
    ]
    assert backed_off and backed_off[0] <= 13.0, backed_off[:1]
    assert min(after) >= 0.8 * capacity / 2


def test_traces_are_deterministic() -> None:
    one = simulate(greedy(), Link([(0.0, 2_000_000)]), 6.0, seed=3, keep_wire=True)
    two = simulate(greedy(), Link([(0.0, 2_000_000)]), 6.0, seed=3, keep_wire=True)
    assert one.estimates == two.estimates
    assert one.feedback_wire == two.feedback_wire
    assert len(one.feedback_wire) > 100


def test_random_loss_above_10_percent_lowers_the_estimate() -> None:
    clean = simulate(greedy(), Link([(0.0, 4_000_000)]), 10.0, seed=2)
    lossy = simulate(greedy(), Link([(0.0, 4_000_000)], loss=0.2), 10.0, seed=2)
    assert statistics.mean(lossy.window(5, 10)) < 0.6 * statistics.mean(clean.window(5, 10))


def test_light_loss_does_not_lower_it() -> None:
    clean = simulate(greedy(), Link([(0.0, 3_000_000)]), 10.0, seed=4)
    light = simulate(greedy(), Link([(0.0, 3_000_000)], loss=0.01), 10.0, seed=4)
    assert statistics.mean(light.window(5, 10)) > 0.9 * statistics.mean(clean.window(5, 10))


def test_loss_controller_rules() -> None:
    loss = LossController(max_rate=10_000_000)
    assert loss.update(0.2, 2_000_000, 0.1, 0.0) == pytest.approx(2_000_000 * 0.9)
    # a second decrease waits 300 ms + rtt
    assert loss.update(0.2, 1_800_000, 0.1, 0.2) == pytest.approx(1_800_000)
    assert loss.update(0.2, 1_800_000, 0.1, 0.5) == pytest.approx(1_620_000)
    # 2..10 %: hold
    assert loss.update(0.05, 1_620_000, 0.1, 1.5) == pytest.approx(1_620_000)
    # < 2 %: relax by 8 % a second
    assert loss.update(0.0, 1_620_000, 0.1, 2.5) == pytest.approx(1_620_000 * 1.08)


def test_receiver_reports_are_the_fallback_without_transport_feedback() -> None:
    estimator = BandwidthEstimator(transport_cc=False)
    assert estimator.estimate_bps == estimator.max_bps  # nothing known: unlimited
    estimator.on_receiver_report(0.3, 0.05, 1.0)  # 30 % loss
    assert estimator.estimate_bps < estimator.max_bps
    lowered = estimator.estimate_bps
    estimator.on_receiver_report(77, 0.05, 2.0)  # the raw 8-bit field (30 %) works too
    assert estimator.estimate_bps < lowered
    assert estimator.rtt == pytest.approx(0.05, rel=0.5)


def test_remb_bounds_the_estimate_while_fresh() -> None:
    estimator = BandwidthEstimator(transport_cc=False)
    estimator.on_remb(700_000, 1.0)
    assert estimator.estimate_bps == 700_000
    estimator.on_receiver_report(0.0, None, 7.0)  # REMB is 6 s old: no longer counts
    assert estimator.estimate_bps > 700_000


def test_probe_budget_and_only_when_wanted() -> None:
    estimator = BandwidthEstimator(start_bps=1_000_000)
    adapter_history = PySequencer()
    adapter = TransportFeedbackAdapter(adapter_history, estimator)
    # some feedback so that the transport-wide estimate is live
    for i in range(30):
        seq = adapter_history.stamp()
        adapter_history.sent(seq, 1200, i * 10_000)
    adapter.on_feedback(
        RtcpTransportFeedback.from_arrivals(1, 2, 0, 0, [50_000 + i * 10_000 for i in range(30)]),
        0.35,
    )
    assert estimator.probe(0.4) == 0  # nothing above the estimate is wanted
    estimator.want_probe(3_000_000)
    granted = [estimator.probe(0.4 + i * 0.01) for i in range(30)]
    total = sum(granted)
    # at most the estimate on top of the media (<= 2x in all) for at most 100 ms
    assert 0 < total <= 1_000_000 * 0.1 / 8 + 1
    assert all(g == 0 for g in granted[11:])
    assert estimator.probing
    assert estimator.probe(1.0) == 0  # no feedback on the cluster yet: no new one


def test_probe_result_lifts_the_estimate_and_counts_as_success() -> None:
    estimator = greedy(start=500_000)
    simulate(estimator, Link([(0.0, 3_000_000)]), 3.0, seed=5)
    result = estimator.last_probe
    assert result is not None
    assert estimator.probe_succeeded(1_000_000, 3.0)
    assert not estimator.probe_succeeded(10_000_000, 3.0)
    assert not estimator.probe_succeeded(1_000_000, 30.0)  # too old


def test_inter_arrival_groups_by_send_time() -> None:
    inter = InterArrival()
    assert inter.add(0.000, 0.050) is None
    assert inter.add(0.004, 0.052) is None  # same group (within 5 ms)
    assert inter.add(0.010, 0.061) is None  # completes the first group
    deltas = inter.add(0.020, 0.075)  # completes the second: deltas between the two
    assert deltas is not None
    send_delta, arrival_delta, _ = deltas
    assert send_delta == pytest.approx(0.006)
    assert arrival_delta == pytest.approx(0.009)


def test_trendline_and_detector_see_a_growing_queue() -> None:
    trend = TrendlineFilter()
    detector = OveruseDetector()
    usage = Usage.NORMAL
    for i in range(60):  # each group arrives 2 ms later than it was sent after the previous
        slope = trend.update(2.0, i * 0.02)
        usage = detector.detect(slope, trend.modified_trend, 0.02, i * 0.02)
    assert slope > 0
    assert usage is Usage.OVERUSE
    for i in range(60, 200):  # the queue drains
        slope = trend.update(-2.0, i * 0.02)
        usage = detector.detect(slope, trend.modified_trend, 0.02, i * 0.02)
    assert usage is Usage.UNDERUSE


def test_adapter_joins_feedback_with_history_and_skips_repeats() -> None:
    history = PySequencer(capacity=16, first=0xFFFE)
    estimator = BandwidthEstimator()
    adapter = TransportFeedbackAdapter(history, estimator)
    seqs = [history.stamp() for _ in range(5)]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1, 2]
    for n, seq in enumerate(seqs):
        history.sent(seq, 1000 + n, 1_000_000 + n * 1000)
    feedback = RtcpTransportFeedback.from_arrivals(
        1, 2, 0xFFFE, 0, [64_000, None, 66_000, 67_000, None]
    )
    results = adapter.results(feedback)
    assert [(round(s, 3), size) for s, size, _ in results] == [
        (1.0, 1000),
        (1.001, 1001),
        (1.002, 1002),
        (1.003, 1003),
        (1.004, 1004),
    ]
    arrivals = [a for _, _, a in results]
    assert arrivals[1] is None and arrivals[4] is None
    assert arrivals[2] is not None and arrivals[0] is not None
    assert arrivals[2] - arrivals[0] == pytest.approx(0.002)
    assert adapter.results(feedback) == []  # reported before
    # overwritten entries (ring of 16) are unknown
    for _ in range(20):
        history.sent(history.stamp(), 1, 0)
    _, entries = history.lookup(0xFFFE, 3)
    assert entries == [None, None, None]
