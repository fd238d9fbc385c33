"""NackGenerator (RFC 4585 §6.2.1): gap detection, retry schedule, give-up, wrap-around."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.media.feedback.nack import MAX_FCI_PER_NACK, NackGenerator
from relaycast.rtp.rtcp import RtcpNack, parse_compound

MEDIA = 0x11111111
SENDER = 0x22222222


def feed(gen: NackGenerator, seqs: list[int], now: float) -> None:
    for s in seqs:
        gen.on_packet(s, now)


def wire_lost(nack: RtcpNack) -> list[int]:
    (parsed,) = parse_compound(bytes(nack))
    assert isinstance(parsed, RtcpNack)
    assert parsed.sender_ssrc == SENDER and parsed.media_ssrc == MEDIA
    return parsed.lost


def test_loss_pattern_and_retry_schedule() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [s for s in range(10) if s not in (3, 5, 6)], 0.0)
    assert gen.missing_count == 3
    # Inside the reorder delay nothing is requested yet.
    assert gen.poll(0.002, rtt=0.05) is None
    first = gen.poll(0.006, rtt=0.05)
    assert first is not None
    assert first.lost == [3, 5, 6]
    assert wire_lost(first) == [3, 5, 6]
    # Retries wait max(rtt, 20 ms) = 50 ms after the previous request.
    assert gen.poll(0.030, rtt=0.05) is None
    assert gen.poll(0.055, rtt=0.05) is None
    second = gen.poll(0.056, rtt=0.05)
    assert second is not None and second.lost == [3, 5, 6]
    # 5 comes back (retransmission): it is no longer requested.
    gen.on_packet(5, 0.07)
    assert gen.stats.recovered == 1
    assert gen.poll(0.09, rtt=0.05) is None
    third = gen.poll(0.106, rtt=0.05)
    assert third is not None and third.lost == [3, 6]
    assert gen.stats.nacks_sent == 3
    assert gen.stats.packets_requested == 8
    assert gen.missing == [3, 6]


def test_small_rtt_retries_every_20ms() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [0, 2], 0.0)
    assert gen.poll(0.010, rtt=0.001) is not None
    assert gen.poll(0.029, rtt=0.001) is None
    assert gen.poll(0.030, rtt=0.001) is not None


def test_gives_up_after_max_retries_once_last_round_trip_passed() -> None:
    gen = NackGenerator(MEDIA, SENDER, max_retries=3, max_age=10.0)
    feed(gen, [0, 2], 0.0)
    sent_at = []
    t = 0.0
    while t < 1.0:
        nack = gen.poll(t, rtt=0.1)
        if nack is not None:
            assert nack.lost == [1]
            sent_at.append(round(t, 3))
        t = round(t + 0.01, 3)
    assert sent_at == [0.01, 0.11, 0.21]
    assert gen.missing_count == 0
    assert gen.stats.gave_up == 1
    assert gen.take_keyframe_request() is True
    assert gen.take_keyframe_request() is False


def test_gives_up_after_max_age() -> None:
    gen = NackGenerator(MEDIA, SENDER, max_retries=100, max_age=0.5)
    feed(gen, [0, 2], 0.0)
    assert gen.poll(0.5, rtt=0.0) is not None
    assert gen.poll(0.51, rtt=0.0) is None
    assert gen.missing_count == 0
    assert gen.stats.gave_up == 1


def test_wrap_around_at_65535() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [65532, 65533, 65534, 1, 2], 0.0)
    nack = gen.poll(0.01, rtt=0.0)
    assert nack is not None
    assert nack.lost == [65535, 0]
    # one FCI: PID 65535 with BLP bit 0 for seq 0
    assert len(bytes(nack)) == 16
    assert wire_lost(nack) == [65535, 0]
    gen.on_packet(0, 0.02)
    nack = gen.poll(0.04, rtt=0.0)
    assert nack is not None and nack.lost == [65535]


def test_reordered_packet_is_not_nacked() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [10, 11, 13], 0.0)
    gen.on_packet(12, 0.003)
    assert gen.poll(0.02, rtt=0.0) is None
    assert gen.stats.reordered == 1
    assert gen.stats.recovered == 0
    assert gen.stats.nacks_sent == 0


def test_duplicates_and_old_packets_are_ignored() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [1, 2, 2, 4, 4, 1], 0.0)
    assert gen.missing == [3]


def test_huge_jump_resets_instead_of_nacking() -> None:
    gen = NackGenerator(MEDIA, SENDER, max_missing=512)
    feed(gen, [100, 101, 103], 0.0)
    gen.on_packet(103 + 600, 0.001)
    assert gen.missing_count == 0
    assert gen.stats.resets == 1
    assert gen.poll(0.05, rtt=0.0) is None
    assert gen.take_keyframe_request() is True
    # tracking continues from the new position
    feed(gen, [704, 706], 0.06)
    nack = gen.poll(0.1, rtt=0.0)
    assert nack is not None and nack.lost == [705]


def test_jump_of_max_missing_is_still_nacked() -> None:
    gen = NackGenerator(MEDIA, SENDER, max_missing=512)
    feed(gen, [0, 512], 0.0)  # 511 missing
    assert gen.missing_count == 511
    assert gen.stats.resets == 0


def test_sender_restart_far_behind_resets_but_stray_packet_does_not() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    feed(gen, [30000, 30001, 30003], 0.0)
    gen.on_packet(100, 0.001)  # a stray ancient packet
    gen.on_packet(30004, 0.002)
    assert gen.missing == [30002]
    # a restart: two consecutive packets far behind
    feed(gen, [500, 501], 0.003)
    assert gen.missing_count == 0
    assert gen.stats.resets == 1
    feed(gen, [503], 0.004)
    assert gen.missing == [502]


def test_missing_list_is_capped_at_max_missing() -> None:
    gen = NackGenerator(MEDIA, SENDER, max_missing=100)
    seq = 0
    gen.on_packet(seq, 0.0)
    for _ in range(5):
        seq += 60  # 59 missing each time, below the reset threshold
        gen.on_packet(seq, 0.0)
    assert gen.missing_count == 100
    assert gen.stats.gave_up == 5 * 59 - 100
    assert gen.missing[-1] == seq - 1


def test_one_nack_holds_at_most_max_fci_entries() -> None:
    gen = NackGenerator(MEDIA, SENDER)
    lost = {17 * k for k in range(1, 251)}
    feed(gen, [s for s in range(0, 17 * 251) if s not in lost], 0.0)
    assert gen.missing_count == 250
    first = gen.poll(0.01, rtt=0.0)
    assert first is not None
    assert len(first.lost) == MAX_FCI_PER_NACK
    assert len(bytes(first)) == 12 + 4 * MAX_FCI_PER_NACK
    rest = gen.poll(0.01, rtt=0.0)
    assert rest is not None
    assert sorted(first.lost + rest.lost) == sorted(lost)


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    lost=st.sets(st.integers(1, 298), max_size=120),
    late=st.sets(st.integers(1, 298), max_size=30),
)
def test_nack_lists_exactly_the_packets_still_missing(
    start: int, lost: set[int], late: set[int]
) -> None:
    gen = NackGenerator(MEDIA, SENDER)
    for i in range(300):
        if i not in lost:
            gen.on_packet((start + i) & 0xFFFF, i * 0.001)
    for i in sorted(late & lost):
        gen.on_packet((start + i) & 0xFFFF, 0.3)  # recovered before any NACK
    still = sorted(lost - late)
    nack = gen.poll(0.31, rtt=0.0)
    if not still:
        assert nack is None
        return
    assert nack is not None
    expected = [(start + i) & 0xFFFF for i in still]
    assert nack.lost == expected
    assert wire_lost(nack) == expected
