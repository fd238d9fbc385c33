"""RembEstimator (draft-alvestrand-rmcat-remb): the documented receive-rate policy."""

from __future__ import annotations

import itertools

import pytest

from relaycast.media.feedback.remb import RembEstimator
from relaycast.rtp.rtcp import RtcpRemb, parse_compound

SENDER = 0x0BADCAFE
MEDIA = [0x1111, 0x2222]


def run(
    est: RembEstimator, start: float, seconds: float, rate_bps: float
) -> list[tuple[float, RtcpRemb]]:
    """Feeds packets at `rate_bps` (100 packets/s) and calls build() every 100 ms."""
    out = []
    size = int(rate_bps / 8 / 100)
    steps = round(seconds * 100)
    for i in range(1, steps + 1):
        now = start + i * 0.01
        est.on_packet(size, now)
        if i % 10 == 0:
            remb = est.build(now, MEDIA)
            if remb is not None:
                out.append((now, remb))
    return out


def test_first_build_reports_start_bitrate_and_roundtrips() -> None:
    est = RembEstimator(SENDER)
    remb = est.build(0.0, MEDIA)
    assert remb is not None
    assert remb.bitrate == 1_500_000
    (parsed,) = parse_compound(bytes(remb))
    assert isinstance(parsed, RtcpRemb)
    assert parsed.ssrcs == MEDIA
    assert 1_499_000 < parsed.bitrate <= 1_500_000


def test_clean_link_ramps_to_max_and_sends_once_per_second() -> None:
    est = RembEstimator(SENDER)
    sent = run(est, 0.0, 30.0, rate_bps=500_000)  # app-limited sender
    times = [t for t, _ in sent]
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert 28 <= len(sent) <= 30
    rates = [r.bitrate for _, r in sent]
    assert rates == sorted(rates)
    # 8 %/s from 1.5 Mbps: ~3.24 Mbps after 10 s, capped at 10 Mbps after ~25 s
    at_10s = next(r.bitrate for t, r in sent if t >= 10.0 - 1e-9)
    assert at_10s == pytest.approx(1_500_000 * 1.08**10, rel=0.03)
    assert est.estimate == 10_000_000
    assert rates[-1] == 10_000_000


def test_estimate_follows_measured_rate_times_1_5() -> None:
    est = RembEstimator(SENDER)
    run(est, 0.0, 2.0, rate_bps=4_000_000)
    assert est.measured_rate(2.0) == pytest.approx(4_000_000, rel=0.02)
    assert est.estimate >= 6_000_000 * 0.98


def test_heavy_loss_drops_to_85_percent_of_measured_immediately() -> None:
    est = RembEstimator(SENDER)
    run(est, 0.0, 3.0, rate_bps=2_000_000)
    before = est.estimate
    assert before >= 3_000_000
    est.build(3.0, MEDIA)  # just sent: the next one would normally wait 1 s
    est.on_loss(0.2)
    for i in range(1, 5):
        est.on_packet(2500, 3.0 + i * 0.01)
    remb = est.build(3.05, MEDIA)
    assert remb is not None  # a >10 % drop goes out at once
    measured = est.measured_rate(3.05)
    assert remb.bitrate == int(measured * 0.85)
    # a stale loss value does not ratchet the estimate further down
    assert est.build(3.1, MEDIA) is None
    assert est.estimate == remb.bitrate


def test_moderate_loss_holds_and_min_clamp() -> None:
    est = RembEstimator(SENDER, min_bitrate=300_000)
    est.build(0.0, MEDIA)
    est.on_loss(0.05)
    est.build(5.0, MEDIA)
    assert est.estimate == 1_500_000  # held
    est.on_loss(0.5)
    est.build(6.0, MEDIA)  # nothing measured: clamps to the minimum
    assert est.estimate == 300_000


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError, match="min_bitrate"):
        RembEstimator(SENDER, min_bitrate=2_000_000, max_bitrate=1_000_000)
