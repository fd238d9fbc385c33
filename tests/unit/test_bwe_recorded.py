"""The estimator on a recorded real-browser trace (issue 9: "synthetic and recorded TWCC traces").

``bwe_traces/chromium_tbf_1500_750.jsonl`` holds every input one viewer session's estimator got
(``RELAYCAST_BWE_TRACE``, relaycast/media/bwe/trace.py), recorded by
``bench/record_bwe_trace.py``: a Chromium viewer behind ``tc tbf`` at 1500 kbit/s, fed a
Chromium publisher's single ~2 Mbit/s encoding (plus NACK answers) for 20 s, then 750 kbit/s for
10 s. Replayed through a fresh :class:`BandwidthEstimator`, clock from the trace.

The link rate compared against is the tbf rate in the estimator's units: the estimator counts
UDP payload bytes (what the sequencer records per packet), the tbf Ethernet frames, 42 bytes
more a packet (14 Ethernet, 20 IP, 8 UDP). The receive rate of the trace itself (reported
packets' bytes over their arrival span) is checked against it, so the reference is measured,
not assumed. Time 0 is the first transport-wide feedback (the WHEP POST was 0.09 s before).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relaycast.media.bwe import estimator as estimator_module
from relaycast.media.bwe.trace import expand, replay

TRACE = Path(__file__).parent / "bwe_traces" / "chromium_tbf_1500_750.jsonl"
OVERHEAD = 14 + 20 + 8  # Ethernet, IPv4, UDP header bytes a packet that tbf counts


def load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [json.loads(text) for text in TRACE.read_text().splitlines() if text.strip()]
    header = rows[0]
    assert header["in"] == "header"
    return header, list(expand(rows[1:]))


def estimates(lines: list[dict[str, Any]]) -> list[tuple[float, int, int]]:
    """(t, replayed estimate, live estimate) after each transport-wide feedback."""
    return [
        (float(line["t"]), est.estimate_bps, int(line["est"]))
        for line, est in replay(lines)
        if line["in"] == "fb"
    ]


def link_bps(lines: list[dict[str, Any]], kbit: int, start: float, end: float) -> float:
    """The tbf rate in payload bit/s for the packets received in [start, end); checks it
    against the receive rate the feedback shows."""
    received = [
        (arrival, size)
        for line in lines
        if line["in"] == "fb" and start <= float(line["t"]) < end
        for _, size, arrival in line["p"]
        if arrival is not None
    ]
    mean = sum(size for _, size in received) / len(received)
    link = kbit * 1000 * mean / (mean + OVERHEAD)
    span = received[-1][0] - received[0][0]
    acked = sum(size for _, size in received[1:]) * 8 / span
    assert abs(acked / link - 1) < 0.03, (acked, link)  # the link is what tbf says
    return float(link)


def test_the_trace_is_what_it_says() -> None:
    header, lines = load()
    assert header["tbf_kbit"] == [1500, 750]
    assert TRACE.stat().st_size < 300_000
    # the viewer was fed more than the link carried (a full bottleneck), and tbf passed its rate
    assert header["publisher_upload_bps"] > 1.2 * 1500_000
    passed = header["tbf_passed_bps"]
    assert abs(passed[0] / 1500_000 - 1) < 0.02 and abs(passed[1] / 750_000 - 1) < 0.02
    assert sum(1 for line in lines if line["in"] == "fb") > 400


def test_the_replay_is_the_live_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the estimator the trace was recorded with (loss floor 0.85 x the receive rate),
    the replay gives the live estimate after every input: the recorder loses nothing."""
    monkeypatch.setattr(estimator_module, "LOSS_FLOOR", 0.85)
    _, lines = load()
    runs = estimates(lines)
    assert [replayed for _, replayed, _ in runs] == [live for _, _, live in runs]
    # ... and that estimator sat at 85 % of the link (the reason the floor is now 0.95)
    link = link_bps(lines, 1500, 1.0, 19.0)
    settled = [e for t, e, _ in runs if 5.0 <= t < 19.0]
    assert max(settled) < 0.86 * link, (max(settled), link)


def test_converges_within_10_percent_of_the_tbf_rate_in_5_s() -> None:
    header, lines = load()
    halved = float(header["halved_at"])
    link = link_bps(lines, 1500, 1.0, halved)
    runs = estimates(lines)
    settled = [e for t, e, _ in runs if 5.0 <= t < halved]
    assert len(settled) > 200
    assert min(settled) >= 0.9 * link, (min(settled), link)
    assert max(settled) <= 1.1 * link, (max(settled), link)
    # it started from the default 1 Mbit/s: far from the link, so this can fail
    assert runs[0][1] < 0.75 * link


def test_backs_off_below_the_halved_rate_within_1_s() -> None:
    header, lines = load()
    halved = float(header["halved_at"])
    end = float(header["end_at"])
    link = link_bps(lines, 750, halved + 1.0, end + 1.0)
    runs = estimates(lines)
    before = [e for t, e, _ in runs if halved - 1.0 <= t < halved]
    assert min(before) > 1.5 * link  # still at the old rate until the halving
    after = [e for t, e, _ in runs if t >= halved + 1.0]
    assert len(after) > 100
    assert max(after) <= 1.1 * link, (max(after), link)
    assert min(after) >= 0.85 * link, (min(after), link)  # backed off, not collapsed
    first = next(t for t, e, _ in runs if t >= halved and e <= 1.1 * link)
    assert first - halved <= 1.0, first - halved
