"""ReceiverStats / SenderStats / rtp_timestamp_at (RFC 3550 §6.4, Appendix A.1, A.3, A.8)."""

from __future__ import annotations

import pytest

from relaycast.media.feedback.reports import ReceiverStats, SenderStats, rtp_timestamp_at
from relaycast.rtp.rtcp import (
    RtcpReceiverReport,
    RtcpReceptionReport,
    RtcpSenderReport,
    ntp_middle32,
    parse_compound,
)

SSRC = 0x5EED0001
NTP_1S = 1 << 32
NTP_T = (3_900_000_000 << 32) | 0x80000000  # some time in 2023, .5 s


def stream(stats: ReceiverStats, seqs: list[int], start_seq: int = 0) -> None:
    """Packets every 1/30 s with 3000-tick timestamps, perfectly regular."""
    for i in seqs:
        stats.on_packet((start_seq + i) & 0xFFFF, i * 3000, i / 30, size=1000)


def test_fraction_and_cumulative_lost_for_synthetic_stream() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    lost = {3, 10, 11, 12, 40, 41, 77, 78, 79, 98}
    stream(stats, [i for i in range(100) if i not in lost])
    assert stats.packets_received == 90
    assert stats.bytes == 90_000
    assert stats.expected == 100
    block = stats.report_block(10.0)
    assert block.ssrc == SSRC
    assert block.fraction_lost == (10 << 8) // 100 == 25
    assert block.packets_lost == 10
    assert block.highest_sequence == 99
    assert block.jitter == 0  # perfectly regular
    assert block.lsr == 0 and block.dlsr == 0
    assert stats.loss_fraction_total == pytest.approx(0.1)
    # next interval: 50 packets, 2 lost, and a late arrival of 98 (one "negative" loss)
    stream(stats, [i for i in range(100, 150) if i not in (120, 121)])
    stats.on_packet(98, 98 * 3000, 5.0)
    block = stats.report_block(11.0)
    assert block.fraction_lost == (1 << 8) // 50  # 2 lost - 1 recovered over 50 expected
    assert block.packets_lost == 11
    assert block.highest_sequence == 149
    # nothing new: fraction 0, cumulative unchanged
    block = stats.report_block(12.0)
    assert (block.fraction_lost, block.packets_lost) == (0, 11)


def test_duplicates_make_interval_loss_zero_and_cumulative_negative() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    stream(stats, [0, 1, 2, 2, 2])
    block = stats.report_block(1.0)
    assert block.fraction_lost == 0
    assert block.packets_lost == -2
    (rr,) = parse_compound(bytes(RtcpReceiverReport(1, [block])))
    assert isinstance(rr, RtcpReceiverReport)
    assert rr.reports[0].packets_lost == -2


def test_sequence_wrap_counts_cycles() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    stream(stats, list(range(100)), start_seq=65500)
    block = stats.report_block(1.0)
    assert block.highest_sequence == (1 << 16) + (65500 + 99 - 65536)
    assert block.packets_lost == 0
    assert stats.extended_highest_sequence == 65500 + 99


def test_cumulative_lost_is_clamped_to_24_bits() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    seq = 0
    stats.on_packet(0, 0, 0.0)
    for i in range(3100):  # jumps of 2900 (< MAX_DROPOUT): ~9 M packets lost
        seq += 2900
        stats.on_packet(seq & 0xFFFF, i, 0.0)
    assert stats.lost == 3100 * 2899
    block = stats.report_block(1.0)
    assert block.packets_lost == (1 << 23) - 1
    assert block.fraction_lost == 255  # (2899/2900) * 256 rounded down


def test_jitter_follows_a8_for_alternating_delay() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    n = 40
    for i in range(n):
        # every other packet is delayed by 1 ms = 90 ticks: |D| = 90 for every pair
        arrival = i / 30 + (0.001 if i % 2 else 0.0)
        stats.on_packet(i, i * 3000, arrival)
    expected = 90 * (1 - (15 / 16) ** (n - 1))
    assert stats.jitter == int(expected)
    assert stats.jitter_ms == pytest.approx(expected / 90, rel=1e-6)
    assert stats.report_block(2.0).jitter == int(expected)


def test_jitter_handles_rtp_timestamp_wrap_and_ignores_reordering() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    base_ts = 0xFFFFFFFF - 5000
    for i in range(10):
        stats.on_packet(i, (base_ts + i * 3000) & 0xFFFFFFFF, i / 30)
    stats.on_packet(3, base_ts + 9000, 5.0)  # a very late duplicate/retransmission
    assert stats.jitter == 0


def test_restart_after_big_jump_needs_two_sequential_packets() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    stream(stats, list(range(10)))
    stats.on_packet(40_000, 0, 1.0)  # ignored: too far
    assert stats.packets_received == 10
    stats.on_packet(40_001, 3000, 1.03)  # sequential: the source restarted
    assert stats.packets_received == 1
    stats.on_packet(40_003, 9000, 1.1)
    block = stats.report_block(2.0)
    assert block.packets_lost == 1
    assert block.highest_sequence == 40_003


def test_lsr_dlsr_and_last_sr() -> None:
    stats = ReceiverStats(SSRC, 90_000)
    stream(stats, list(range(5)))
    sr = RtcpSenderReport(SSRC, NTP_T, 123_456, 5, 5000)
    stats.on_sender_report(sr, now=10.0)
    assert stats.last_sr == (NTP_T, 123_456, 10.0)
    block = stats.report_block(10.5)
    assert block.lsr == ntp_middle32(NTP_T) == ((NTP_T >> 16) & 0xFFFFFFFF)
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s


def test_rtt_from_receiver_report() -> None:
    sender = SenderStats(SSRC, 90_000)
    for _ in range(7):
        sender.on_sent(1200)
    sr = sender.sender_report(now=1.0, ntp_now=NTP_T, rtp_ts_now=0x1_0000_0005)
    assert (sr.ssrc, sr.ntp_timestamp, sr.rtp_timestamp) == (SSRC, NTP_T, 5)
    assert (sr.packet_count, sr.octet_count) == (7, 8400)
    (parsed,) = parse_compound(bytes(sr))
    assert parsed == sr
    # the viewer held the SR for 200 ms; the RR reaches us 250 ms after the SR left
    block = RtcpReceptionReport(SSRC, 12, 34, 1000, 450, ntp_middle32(NTP_T), int(0.2 * 65536))
    rtt = sender.on_receiver_report(block, now=1.25, ntp_now=NTP_T + NTP_1S // 4)
    assert rtt is not None
    assert rtt == pytest.approx(0.05, abs=2 / 65536)
    assert sender.rtt == rtt
    assert (sender.fraction_lost, sender.packets_lost, sender.jitter) == (12, 34, 450)
    assert sender.jitter_ms == pytest.approx(5.0)


def test_rtt_across_middle32_wrap_and_invalid_cases() -> None:
    sender = SenderStats(SSRC, 48_000)
    ntp_sr = (0xFFFF << 48) | (0xFFFF_FFF0 << 16)  # middle32 = 0xFFFFFFF0
    lsr = ntp_middle32(ntp_sr)
    block = RtcpReceptionReport(SSRC, 0, 0, 0, 0, lsr, 0)
    rtt = sender.on_receiver_report(block, 2.0, ntp_sr + (1 << 30))  # +0.25 s, wraps
    assert rtt == pytest.approx(0.25, abs=1 / 65536)
    # no SR seen by the viewer yet: no RTT, stats still stored
    assert (
        sender.on_receiver_report(RtcpReceptionReport(SSRC, 7, 1, 0, 0, 0, 0), 3.0, NTP_T) is None
    )
    assert sender.fraction_lost == 7
    # negative result (DLSR larger than elapsed time): rejected, last RTT kept
    bad = RtcpReceptionReport(SSRC, 0, 0, 0, 0, ntp_middle32(NTP_T), 65536)
    assert sender.on_receiver_report(bad, 4.0, NTP_T + NTP_1S // 2) is None
    assert sender.rtt == rtt


def test_sender_counters_wrap_in_report() -> None:
    sender = SenderStats(SSRC, 90_000)
    sender.packet_count = 0xFFFFFFFF
    sender.octet_count = 0xFFFFFFFF
    sender.on_sent(10)
    sr = sender.sender_report(0.0, NTP_T, 0)
    assert (sr.packet_count, sr.octet_count) == (0, 9)


def test_rtp_timestamp_at() -> None:
    assert rtp_timestamp_at(NTP_T + NTP_1S, NTP_T, 1000, 90_000) == 91_000
    assert rtp_timestamp_at(NTP_T - NTP_1S // 2, NTP_T, 1000, 90_000) == (1000 - 45_000) % (1 << 32)
    assert rtp_timestamp_at(NTP_T + NTP_1S * 2, NTP_T, 0xFFFFFFFF - 10, 48_000) == 96_000 - 11
    # 10 ms at 90 kHz = 900 ticks; rounding of a fractional tick
    assert rtp_timestamp_at(NTP_T + NTP_1S // 100, NTP_T, 0, 90_000) == 900
    assert rtp_timestamp_at(NTP_T, NTP_T, 42, 8000) == 42


def test_invalid_clock_rate() -> None:
    with pytest.raises(ValueError, match="clock rate"):
        ReceiverStats(SSRC, 0)
    with pytest.raises(ValueError, match="clock rate"):
        SenderStats(SSRC, -1)
