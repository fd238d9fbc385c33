"""TwccRecorder (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.media.feedback.twcc import TwccRecorder, parse_transport_seq
from relaycast.rtp.rtcp import RtcpTransportFeedback, parse_compound

SENDER = 0x01020304
MEDIA = 0x0A0B0C0D
T0 = 7_000_123_457  # arbitrary monotonic µs, not aligned to anything


def parse(fb: RtcpTransportFeedback) -> RtcpTransportFeedback:
    (parsed,) = parse_compound(bytes(fb))
    assert isinstance(parsed, RtcpTransportFeedback)
    assert (parsed.sender_ssrc, parsed.media_ssrc) == (SENDER, MEDIA)
    return parsed


def reconstruct(fb: RtcpTransportFeedback) -> dict[int, int | None]:
    """16-bit seq -> arrival µs (None = lost) from a parsed packet, as a sender would do."""
    t = fb.reference_time * 64_000
    out: dict[int, int | None] = {}
    for seq, delta in fb.packets:
        if delta is None:
            out[seq] = None
        else:
            t += delta * 250
            out[seq] = t
    return out


def check_against(fbs: list[RtcpTransportFeedback], truth: dict[int, int | None]) -> None:
    """Every seq in `truth` reported exactly once, lost as None, arrival deltas within 250 µs."""
    seen: dict[int, int | None] = {}
    for fb in fbs:
        rebuilt = reconstruct(parse(fb))
        assert not set(rebuilt) & set(seen), "a sequence number was reported twice"
        seen.update(rebuilt)
    assert set(seen) == set(truth)
    received = [s for s, a in truth.items() if a is not None]
    for s, a in truth.items():
        assert (seen[s] is None) == (a is None), s
    # Absolute times are only known modulo the reference-time wrap; compare deltas.
    ref = received[0]
    ref_truth = truth[ref]
    ref_seen = seen[ref]
    assert ref_truth is not None and ref_seen is not None
    for s in received:
        a, b = truth[s], seen[s]
        assert a is not None and b is not None
        assert abs((b - ref_seen) - (a - ref_truth)) < 250, s


def test_arrivals_with_gaps_reconstruct_within_250us() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    truth: dict[int, int | None] = {}
    t = T0
    for seq in range(20):
        t += 5_123 if seq != 10 else 100_000  # one large delta
        if seq in (5, 6, 12):
            truth[seq] = None
            continue
        truth[seq] = t
    # 15 arrives before 14: a negative delta
    order = [s for s in range(20) if truth[s] is not None]
    i14, i15 = order.index(14), order.index(15)
    order[i14], order[i15] = order[i15], order[i14]
    t15 = truth[15]
    assert t15 is not None
    truth[15] = truth[14]
    truth[14] = t15
    for s in order:
        a = truth[s]
        assert a is not None
        rec.on_packet(s, a)
    fbs = rec.build(T0 + 1_000_000)
    assert len(fbs) == 1
    fb = parse(fbs[0])
    assert fb.base_sequence == 0
    assert fb.feedback_count == 0
    assert len(fb.packets) == 20
    assert [s for s, d in fb.packets if d is None] == [5, 6, 12]
    assert any(d is not None and d < 0 for _, d in fb.packets)
    assert any(d is not None and d > 255 for _, d in fb.packets)
    check_against(fbs, truth)
    assert rec.build(T0 + 1_100_000) == []


def test_consecutive_builds_continue_from_last_base() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    for s in range(10):
        rec.on_packet(s, T0 + s * 1000)
    (first,) = rec.build(0)
    # 10 and 11 lost, then 12..14
    for s in range(12, 15):
        rec.on_packet(s, T0 + s * 1000)
    (second,) = rec.build(0)
    p = parse(second)
    assert p.base_sequence == 10
    assert p.feedback_count == 1
    assert [d is None for _, d in p.packets] == [True, True, False, False, False]
    assert first.feedback_count == 0


def test_wraparound_duplicates_and_late_packets() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    seqs = [65530, 65531, 65532, 65533, 65535, 0, 1, 2]  # 65534 lost
    for i, s in enumerate(seqs):
        rec.on_packet(s, T0 + i * 2000)
    rec.on_packet(65531, T0 + 99_000)  # duplicate
    assert rec.duplicates == 1
    (fb,) = rec.build(0)
    p = parse(fb)
    assert p.base_sequence == 65530
    assert [s for s, _ in p.packets] == [*range(65530, 65536), 0, 1, 2]
    assert [s for s, d in p.packets if d is None] == [65534]
    rec.on_packet(65534, T0 + 50_000)  # too late: already reported lost
    assert rec.late == 1
    assert rec.build(0) == []
    rec.on_packet(3, T0 + 60_000)
    (fb2,) = rec.build(0)
    assert parse(fb2).base_sequence == 3


def test_feedback_count_wraps_at_256() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    counts = []
    for i in range(300):
        rec.on_packet(i, T0 + i * 1000)
        (fb,) = rec.build(0)
        counts.append(fb.feedback_count)
    assert counts[:3] == [0, 1, 2]
    assert counts[255:258] == [255, 0, 1]


@pytest.mark.parametrize("pattern", ["dense", "alternating_large", "random"])
def test_large_batches_split_under_1100_bytes(pattern: str) -> None:
    rng = random.Random(7)
    rec = TwccRecorder(SENDER, MEDIA)
    truth: dict[int, int | None] = {}
    t = T0
    for seq in range(4000):
        if pattern == "dense":
            t += 400
            arrived = True
        elif pattern == "alternating_large":  # worst case: 2-bit vectors, 2-byte deltas
            t += 70_000
            arrived = seq % 2 == 0
        else:
            t += rng.choice([0, 300, 1_000, 20_000, 90_000])
            arrived = rng.random() > 0.2
        truth[seq] = t if arrived else None
        if arrived:
            rec.on_packet(seq, t)
    while truth[max(truth)] is None:  # feedback ends at the highest received
        del truth[max(truth)]
    fbs = rec.build(0)
    assert len(fbs) > 1
    sizes = [len(bytes(fb)) for fb in fbs]
    assert max(sizes) <= 1100
    # no packet is needlessly tiny: all but the last are well filled
    assert min(sizes[:-1]) > 700
    assert [fb.feedback_count for fb in fbs] == list(range(len(fbs)))
    check_against(fbs, truth)


def test_split_when_arrival_gap_exceeds_delta_range() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    rec.on_packet(0, T0)
    rec.on_packet(1, T0 + 10_000_000)  # 10 s later: beyond ±8.19 s
    fbs = rec.build(0)
    assert len(fbs) == 2
    assert [parse(fb).base_sequence for fb in fbs] == [0, 1]


def test_split_on_status_count() -> None:
    rec = TwccRecorder(SENDER, MEDIA, max_status_count=100)
    for s in range(250):
        rec.on_packet(s, T0 + s * 1000)
    fbs = rec.build(0)
    assert [len(fb.packets) for fb in fbs] == [100, 100, 50]


def test_memory_is_bounded_without_builds() -> None:
    rec = TwccRecorder(SENDER, MEDIA, max_pending=100)
    for s in range(1000):
        rec.on_packet(s & 0xFFFF, T0 + s * 1000)
    assert rec.pending == 100
    fbs = rec.build(0)
    assert sum(len(fb.packets) for fb in fbs) == 100
    assert parse(fbs[0]).base_sequence == 900


def test_huge_sequence_jump_is_not_reported_as_thousands_lost() -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    rec.on_packet(0, T0)
    rec.build(0)
    rec.on_packet(30_000, T0 + 1000)
    (fb,) = rec.build(0)
    assert parse(fb).base_sequence == 30_000
    assert len(fb.packets) == 1


def test_parse_transport_seq() -> None:
    assert parse_transport_seq(b"\x12\x34") == 0x1234
    assert parse_transport_seq(b"\xff\xff") == 65535
    with pytest.raises(ValueError, match="2 bytes"):
        parse_transport_seq(b"\x01")
    with pytest.raises(ValueError, match="2 bytes"):
        parse_transport_seq(b"\x01\x02\x03")


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.tuples(st.integers(0, 300_000), st.booleans()), min_size=1, max_size=400),
)
def test_any_arrival_pattern_round_trips(start: int, steps: list[tuple[int, bool]]) -> None:
    rec = TwccRecorder(SENDER, MEDIA)
    truth: dict[int, int | None] = {}
    t = T0
    for i, (gap, arrived) in enumerate(steps):
        t += gap
        seq = (start + i) & 0xFFFF
        truth[seq] = t if arrived or i == 0 else None
        if truth[seq] is not None:
            rec.on_packet(seq, t)
    last = (start + len(steps) - 1) & 0xFFFF
    while truth[last] is None:
        del truth[last]
        last = (last - 1) & 0xFFFF
    fbs = rec.build(0)
    assert all(len(bytes(fb)) <= 1100 for fb in fbs)
    check_against(fbs, truth)
