"""The estimator for a viewer that takes less than the estimate: a simulcast layer.

Simulated (:func:`relaycast.media.bwe.sim.simulate`) like ``test_bwe.py``, but the sender
sends the bitrate of the layer a small copy of the selection rules picks (down at once to the
highest layer that fits, up after 3 s above 1.15 x the next layer's bitrate once a probe showed
the link carries it), as the server does for a viewer: the estimator sees an app-limited sender
and must climb by probing. Found with Chromium viewers behind ``tc tbf``
(``tests/browser/test_simulcast_bandwidth.py``): losses while a layer waits to switch down must
not compound into a paused video, probes must produce results at low rates, and a viewer whose
link got faster must climb within the issue's 20 s.
"""

from __future__ import annotations

from relaycast.media.bwe import BandwidthEstimator
from relaycast.media.bwe.loss import LossController
from relaycast.media.bwe.probe import ProbeController
from relaycast.media.bwe.sim import Link, simulate
from relaycast.media.feedback.playout_delay import MAX_MS, PlayoutDelayController

LAYERS = [140_000, 470_000, 1_400_000]  # q, h, f as a Chromium publisher sends them
UP_FACTOR, UP_HOLD = 1.15, 3.0


class Selection:
    """The layer the viewer gets (index into LAYERS, -1: paused), and its history."""

    def __init__(self) -> None:
        self.at: int | None = None
        self.since: float | None = None
        self.history: list[tuple[float, int]] = []

    def __call__(self, t: float, est: BandwidthEstimator) -> float:
        estimate = est.estimate_bps if est.measured else None
        if estimate is None:
            self.at = len(LAYERS) - 1
        else:
            if self.at is None or (self.at >= 0 and LAYERS[self.at] > estimate):
                fitting = [i for i, bps in enumerate(LAYERS) if bps <= estimate]
                self.at = fitting[-1] if fitting else -1
                self.since = None
            up = self.at + 1
            if up < len(LAYERS):
                est.want_probe(int(UP_FACTOR * LAYERS[up]))
                if estimate > UP_FACTOR * LAYERS[up]:
                    self.since = t if self.since is None else self.since
                    if t - self.since >= UP_HOLD and est.probe_succeeded(LAYERS[up], t):
                        self.at, self.since = up, None
                else:
                    self.since = None
            else:
                est.want_probe(None)
        if not self.history or self.history[-1][1] != self.at:
            self.history.append((t, self.at))
        return float(LAYERS[self.at]) if self.at >= 0 else 0.0

    def layer_at(self, t: float) -> int:
        return [layer for since, layer in self.history if since <= t][-1]

    def first(self, layer: int, after: float) -> float | None:
        return next((s - after for s, at in self.history if s >= after and at == layer), None)


def test_a_layer_viewer_follows_a_changing_limit() -> None:
    estimator = BandwidthEstimator()
    selection = Selection()
    schedule = [(0.0, 800_000), (20.0, 250_000), (35.0, 800_000), (55.0, 3_000_000)]
    trace = simulate(estimator, Link(schedule, queue_limit=0.2), 75.0, send_rate=selection, seed=1)
    assert selection.layer_at(19.9) == 1  # h at 800 kbit/s
    down = selection.first(0, 20.0)
    assert down is not None and down <= 5.0, selection.history
    # while it waits, losses do not compound below the lowest layer: no pause
    assert all(layer >= 0 for _, layer in selection.history), selection.history
    late = [e for t, e in zip(trace.times, trace.estimates, strict=True) if 22 <= t < 35]
    assert min(late) >= 0.75 * 250_000 and max(late) <= 1.1 * 250_000, (min(late), max(late))
    up = selection.first(1, 35.0)
    assert up is not None and up <= 20.0, selection.history
    top = selection.first(2, 55.0)
    assert top is not None and top <= 20.0, selection.history


def test_loss_decreases_stop_at_the_floor() -> None:
    loss = LossController(50_000_000)
    for i in range(10):  # 40 % loss for 5 s: each decrease would take another 20 %
        loss.update(0.4, 1_000_000, 0.05, i * 0.5, floor=300_000)
    assert loss.rate == 300_000
    assert loss.update(0.4, 1_000_000, 0.05, 10.0) < 300_000  # no floor: on down


def test_an_untested_estimate_above_the_target_is_probed_at_the_target() -> None:
    probes = ProbeController()
    probes.want(500_000)
    granted = sum(probes.grant(i * 0.01, 5_000_000, True) for i in range(60))
    # the target's worth for the cluster (at most 0.4 s), not the estimate's
    assert 0 < granted <= 500_000 * 0.4 / 8 + 1
    assert probes.clusters == 1


def test_the_same_layer_measured_anew_is_not_a_new_target() -> None:
    probes = ProbeController()
    probes.want(1_600_000)
    probes._backoff = 10.0  # after saturated probes
    probes.want(1_700_000)  # the layer's bitrate, measured a second later
    assert probes._backoff == 10.0
    probes.want(540_000)  # another layer
    assert probes._backoff == 5.0


def test_congestion_does_not_raise_the_playout_delay() -> None:
    ctl = PlayoutDelayController()
    # loss while the estimator saw a queue building: the layer selection's business
    for t in range(5):
        assert ctl.evaluate(0.2, 60.0, float(t), congested=True) is None
    assert ctl.index == 0
    # the same loss on an uncongested path (random loss): straight to heavy after two
    assert ctl.evaluate(0.2, 60.0, 5.0) is None
    assert ctl.evaluate(0.2, 60.0, 6.0) == (1000, MAX_MS)
    # congestion never lowers it by itself either: the usual way down
    assert ctl.evaluate(0.2, 60.0, 7.0, congested=True) is None
    assert ctl.index == 3


def test_the_estimator_says_when_it_saw_congestion() -> None:
    estimator = BandwidthEstimator(start_bps=300_000)
    estimator.want_probe(100_000_000)
    simulate(estimator, Link([(0.0, 800_000)]), 10.0, seed=1)  # fills the link: overuses
    last = estimator.last_overuse
    assert last is not None and 0 < last <= 10.0
    assert estimator.congested(last + 1.0)
    assert not estimator.congested(last + 3.5)
