"""RTCP packets (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4.3.1, REMB, transport-wide CC)."""

from __future__ import annotations

import struct
import time

import pytest
from aiortc import rtp as artp
from hypothesis import given
from hypothesis import strategies as st

from relaycast.rtp.rtcp import (
    RtcpBye,
    RtcpFir,
    RtcpNack,
    RtcpPacket,
    RtcpPli,
    RtcpReceiverReport,
    RtcpReceptionReport,
    RtcpRemb,
    RtcpSdes,
    RtcpSenderReport,
    RtcpTransportFeedback,
    RtcpUnknown,
    ntp_middle32,
    ntp_now,
    parse_compound,
    serialize_compound,
)

# Captures from aiortc's test suite (tests/rtcp_*.bin).
SR = bytes.fromhex(
    "81c8000c6d2453eade46475b151a005c66a8dd3e0000010d000034f58ef891ed00000000000000f6"
    "0000007f0000000000000000"
)
RR = bytes.fromhex("81c9000730b68407479437af0000000000000276000007720000000000000000")
SDES = bytes.fromhex(
    "81ca000c6d2453ea01267b36336634353965612d343166652d343437342d396433332d3937303763"
    "396565373964317d00000000"
)
BYE = bytes.fromhex("81cb0001ae528b43")
BYE_PADDING = bytes.fromhex("a0cb000104040404")
BYE_NO_SOURCES = bytes.fromhex("80cb0000")
PLI = bytes.fromhex("81ce00025450626523013fb9")
NACK = bytes.fromhex(
    "81cd000c8b4477bbf71deee4000c00000020004000360000004c0000006e1000008e000000b70008"
    "00df1000010f000001240000"
)
INVALID = {
    "sr": bytes.fromhex("81c80001ae528b43"),
    "rr": bytes.fromhex("81c90001ae528b43"),
    "bye": bytes.fromhex("91cb0001ae528b43"),
    "psfb": bytes.fromhex("81ce0001ae528b43"),
    "rtpfb": bytes.fromhex("81cd0001ae528b43"),
    "sdes_item": bytes.fromhex("81ca000730b68407479437af0000000000000276000007720000000000000000"),
    "sdes_source": bytes.fromhex("81ca00009000001b10000080d100"),
}

# Transport-wide CC feedback as sent by Chrome (from pion/rtcp's test suite).
TWCC_1 = bytes.fromhex("afcd0005fa17fa1743032fa0009900013de8021720019401")
TWCC_4 = bytes.fromhex("afcd0007fa17fa17193dd8bb0004000710636e0120074c2424100c0c10000003")
TWCC_6 = bytes.fromhex("afcd00079b74f61f9371dcbc853c000963f916b3d55200309baa6aaa7b010901")


def test_sender_report_capture() -> None:
    (sr,) = parse_compound(SR)
    assert isinstance(sr, RtcpSenderReport)
    assert sr.ssrc == 1831097322
    assert sr.ntp_timestamp == 16016567581311369308
    assert sr.rtp_timestamp == 1722342718
    assert sr.packet_count == 269 and sr.octet_count == 13557
    assert sr.reports == [RtcpReceptionReport(2398654957, 0, 0, 246, 127, 0, 0)]
    assert bytes(sr) == SR
    assert RtcpSenderReport.parse(SR) == sr


def test_receiver_report_capture() -> None:
    rr = RtcpReceiverReport.parse(RR)
    assert rr.ssrc == 817267719
    assert rr.reports == [RtcpReceptionReport(1200895919, 0, 0, 630, 1906, 0, 0)]
    assert bytes(rr) == RR


def test_sdes_capture() -> None:
    sdes = RtcpSdes.parse(SDES)
    assert sdes.chunks == [(1831097322, [(1, b"{63f459ea-41fe-4474-9d33-9707c9ee79d1}")])]
    assert bytes(sdes) == SDES
    assert RtcpSdes.cname(1831097322, "{63f459ea-41fe-4474-9d33-9707c9ee79d1}") == sdes


def test_bye_captures() -> None:
    assert RtcpBye.parse(BYE) == RtcpBye([0xAE528B43])
    assert bytes(RtcpBye([0xAE528B43])) == BYE
    assert RtcpBye.parse(BYE_NO_SOURCES) == RtcpBye([])
    assert bytes(RtcpBye([])) == BYE_NO_SOURCES
    assert parse_compound(BYE_PADDING) == [RtcpBye([])]  # padding bit, 4 bytes of padding


def test_pli_capture() -> None:
    assert RtcpPli.parse(PLI) == RtcpPli(1414554213, 587284409)
    assert bytes(RtcpPli(1414554213, 587284409)) == PLI


def test_nack_capture() -> None:
    nack = RtcpNack.parse(NACK)
    assert nack.sender_ssrc == 2336520123 and nack.media_ssrc == 4145934052
    assert nack.lost == [12, 32, 39, 54, 76, 110, 123, 142, 183, 187, 223, 236, 271, 292]
    assert bytes(nack) == NACK


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_captures_raise(name: str) -> None:
    with pytest.raises(ValueError):
        parse_compound(INVALID[name])


def test_compound_of_captures() -> None:
    data = SR + SDES + BYE + PLI + NACK + RR
    packets = parse_compound(data)
    assert [type(p) for p in packets] == [
        RtcpSenderReport,
        RtcpSdes,
        RtcpBye,
        RtcpPli,
        RtcpNack,
        RtcpReceiverReport,
    ]
    assert serialize_compound(packets) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x81\xc9\x00", "truncated header"),
        (b"\x41\xc9\x00\x00", "version"),
        (RR[:-4], "past the end"),
        (RR + b"\x80", "truncated header"),
        (b"\xa0\xcb\x00\x01\x00\x00\x00\x00", "padding count 0"),
        (b"\xa0\xcb\x00\x01\x00\x00\x00\x09", "padding count 9"),
        (b"\xa0\xcb\x00\x00", "padding bit set on an empty packet"),
    ],
)
def test_compound_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_compound(data)


def test_single_packet_parse_checks_type_and_length() -> None:
    with pytest.raises(ValueError, match="type"):
        RtcpSenderReport.parse(RR)
    with pytest.raises(ValueError, match="length"):
        RtcpReceiverReport.parse(RR + b"\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="FMT"):
        RtcpFir.parse(PLI)


def test_unknown_packets_are_kept() -> None:
    app = b"\x81\xcc\x00\x03" + b"\x00\x00\x00\x01" + b"name" + b"data"
    xr = b"\x80\xcf\x00\x01\x00\x00\x00\x02"
    afb = bytes(RtcpUnknown(206, 15, b"\x00\x00\x00\x01\x00\x00\x00\x00XXXX"))
    tllei = bytes(RtcpUnknown(205, 8, b"\x00" * 8))
    packets = parse_compound(app + xr + afb + tllei + RR)
    assert packets[:4] == [
        RtcpUnknown(204, 1, b"\x00\x00\x00\x01namedata"),
        RtcpUnknown(207, 0, b"\x00\x00\x00\x02"),
        RtcpUnknown(206, 15, b"\x00\x00\x00\x01\x00\x00\x00\x00XXXX"),
        RtcpUnknown(205, 8, b"\x00" * 8),
    ]
    assert isinstance(packets[4], RtcpReceiverReport)
    assert serialize_compound(packets) == app + xr + afb + tllei + RR


def test_unknown_with_unaligned_body_uses_padding() -> None:
    data = bytes(RtcpUnknown(204, 0, b"abcde"))
    assert data == b"\xa0\xcc\x00\x02abcde\x00\x00\x03"
    assert parse_compound(data) == [RtcpUnknown(204, 0, b"abcde")]


def test_reception_report_negative_loss_and_clamp() -> None:
    rr = RtcpReceiverReport(1, [RtcpReceptionReport(2, 25, -5, 70000, 3, 4, 5)])
    data = bytes(rr)
    assert data[12:16] == bytes([25, 0xFF, 0xFF, 0xFB])
    assert RtcpReceiverReport.parse(data) == rr
    big = RtcpReceptionReport(2, 0, 10_000_000, 0, 0, 0, 0)
    assert RtcpReceptionReport.parse(bytes(big)).packets_lost == 0x7FFFFF
    small = RtcpReceptionReport(2, 0, -10_000_000, 0, 0, 0, 0)
    assert RtcpReceptionReport.parse(bytes(small)).packets_lost == -0x800000


def test_sender_report_ignores_profile_extension() -> None:
    sr = RtcpSenderReport(1, 2, 3, 4, 5, [])
    data = bytearray(bytes(sr) + b"EXT!")
    data[3] += 1
    assert RtcpSenderReport.parse(bytes(data)) == sr


def test_sdes_multiple_chunks_and_items() -> None:
    sdes = RtcpSdes([(1, [(1, b"a"), (6, b"tool")]), (2, []), (3, [(1, b"abcdef")])])
    data = bytes(sdes)
    assert len(data) % 4 == 0 and data[0] == 0x83
    assert RtcpSdes.parse(data) == sdes


def test_sdes_missing_terminator() -> None:
    with pytest.raises(ValueError, match="terminating"):
        RtcpSdes.parse(b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x02ab")


def test_bye_reason() -> None:
    bye = RtcpBye([1, 2], b"camera off")
    data = bytes(bye)
    assert data[:4] == b"\x82\xcb\x00\x05"
    assert data[12:23] == b"\x0acamera off"
    assert RtcpBye.parse(data) == bye
    with pytest.raises(ValueError, match="reason"):
        RtcpBye.parse(b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc")


def test_nack_encoding_pairs() -> None:
    nack = RtcpNack(1, 2, [100, 101, 103, 116, 117, 200])
    data = bytes(nack)
    assert data[12:] == struct.pack("!HHHHHH", 100, 0b1000000000000101, 117, 0, 200, 0)
    assert RtcpNack.parse(data).lost == [100, 101, 103, 116, 117, 200]


def test_nack_wraps_and_dedups() -> None:
    data = bytes(RtcpNack(1, 2, [65534, 65535, 0, 0, 3]))
    assert data[12:] == struct.pack("!HH", 65534, 0b10011)
    assert RtcpNack.parse(data).lost == [65534, 65535, 0, 3]


def test_fir() -> None:
    fir = RtcpFir(0x11111111, [(0x22222222, 7), (0x33333333, 255)])
    data = bytes(fir)
    assert data[:4] == b"\x84\xce\x00\x06"
    assert data[8:12] == b"\x00\x00\x00\x00"  # media SSRC unused (RFC 5104 §4.3.1.1)
    assert data[12:20] == b"\x22\x22\x22\x22\x07\x00\x00\x00"
    assert RtcpFir.parse(data) == fir
    assert parse_compound(data) == [fir]


def test_remb_encoding_and_precision() -> None:
    remb = RtcpRemb(0xAAAA, 1_000_000, [0x1234, 0x5678])
    data = bytes(remb)
    assert data[:4] == b"\x8f\xce\x00\x06"
    assert data[12:16] == b"REMB"
    parsed = RtcpRemb.parse(data)
    assert parsed.ssrcs == [0x1234, 0x5678]
    # 1_000_000 needs 20 bits: mantissa keeps the top 18, so the low 2 bits are lost
    assert parsed.bitrate == 1_000_000 >> 2 << 2
    assert RtcpRemb.parse(bytes(RtcpRemb(1, 250_000, []))).bitrate == 250_000
    assert parse_compound(data) == [parsed]


@given(st.integers(0, 2**40), st.lists(st.integers(0, 0xFFFFFFFF), max_size=5))
def test_remb_matches_aiortc(bitrate: int, ssrcs: list[int]) -> None:
    data = bytes(RtcpRemb(7, bitrate, ssrcs))
    (theirs,) = artp.RtcpPacket.parse(data)
    assert isinstance(theirs, artp.RtcpPsfbPacket) and theirs.fmt == 15
    their_bitrate, their_ssrcs = artp.unpack_remb_fci(theirs.fci)
    ours = RtcpRemb.parse(data)
    assert (their_bitrate, their_ssrcs) == (ours.bitrate, ssrcs)
    assert bitrate - ours.bitrate < max(1, bitrate >> 17)  # 18 significant bits kept
    aiortc_data = bytes(artp.RtcpPsfbPacket(15, 7, 0, artp.pack_remb_fci(bitrate, ssrcs)))
    assert RtcpRemb.parse(aiortc_data).bitrate == ours.bitrate


# --- cross-checks with aiortc --------------------------------------------------------------

_u32 = st.integers(0, 0xFFFFFFFF)
_reports = st.lists(
    st.builds(
        RtcpReceptionReport,
        _u32,
        st.integers(0, 255),
        st.integers(-0x800000, 0x7FFFFF),
        _u32,
        _u32,
        _u32,
        _u32,
    ),
    max_size=3,
)


@given(_u32, st.integers(0, 2**64 - 1), _u32, _u32, _u32, _reports)
def test_sender_report_vs_aiortc(
    ssrc: int, ntp: int, rtp_ts: int, pc: int, oc: int, reports: list[RtcpReceptionReport]
) -> None:
    ours = RtcpSenderReport(ssrc, ntp, rtp_ts, pc, oc, reports)
    theirs = artp.RtcpSrPacket(
        ssrc=ssrc,
        sender_info=artp.RtcpSenderInfo(ntp, rtp_ts, pc, oc),
        reports=[artp.RtcpReceiverInfo(*_fields(r)) for r in reports],
    )
    assert bytes(ours) == bytes(theirs)
    (parsed,) = artp.RtcpPacket.parse(bytes(ours))
    assert parsed == theirs


@given(_u32, _reports)
def test_receiver_report_vs_aiortc(ssrc: int, reports: list[RtcpReceptionReport]) -> None:
    theirs = artp.RtcpRrPacket(
        ssrc=ssrc, reports=[artp.RtcpReceiverInfo(*_fields(r)) for r in reports]
    )
    assert RtcpReceiverReport.parse(bytes(theirs)) == RtcpReceiverReport(ssrc, reports)


@given(_u32, st.text(min_size=1, max_size=60))
def test_sdes_vs_aiortc(ssrc: int, cname: str) -> None:
    value = cname.encode()[:255]
    theirs = artp.RtcpSdesPacket(chunks=[artp.RtcpSourceInfo(ssrc=ssrc, items=[(1, value)])])
    ours = RtcpSdes([(ssrc, [(1, value)])])
    assert RtcpSdes.parse(bytes(theirs)) == ours
    (parsed,) = artp.RtcpPacket.parse(bytes(ours))
    assert parsed == theirs


@given(st.lists(_u32, max_size=31))
def test_bye_vs_aiortc(sources: list[int]) -> None:
    assert bytes(RtcpBye(sources)) == bytes(artp.RtcpByePacket(sources=sources))
    assert RtcpBye.parse(bytes(artp.RtcpByePacket(sources=sources))) == RtcpBye(sources)


@given(_u32, _u32, st.lists(st.integers(0, 0xFFFF), max_size=40))
def test_nack_vs_aiortc(sender: int, media: int, lost: list[int]) -> None:
    lost = sorted(set(lost))
    ours = RtcpNack(sender, media, lost)
    (theirs,) = artp.RtcpPacket.parse(bytes(ours))
    assert isinstance(theirs, artp.RtcpRtpfbPacket)
    assert (theirs.ssrc, theirs.media_ssrc, theirs.lost) == (sender, media, lost)
    aiortc_bytes = bytes(artp.RtcpRtpfbPacket(fmt=1, ssrc=sender, media_ssrc=media, lost=lost))
    assert RtcpNack.parse(aiortc_bytes).lost == lost
    assert aiortc_bytes == bytes(ours)


@given(_u32, _u32)
def test_pli_vs_aiortc(sender: int, media: int) -> None:
    theirs = artp.RtcpPsfbPacket(fmt=1, ssrc=sender, media_ssrc=media)
    assert bytes(RtcpPli(sender, media)) == bytes(theirs)


def _fields(r: RtcpReceptionReport) -> tuple[int, int, int, int, int, int, int]:
    return (r.ssrc, r.fraction_lost, r.packets_lost, r.highest_sequence, r.jitter, r.lsr, r.dlsr)


# --- transport-wide congestion control feedback -------------------------------------------


def test_twcc_chrome_run_length() -> None:
    fb = RtcpTransportFeedback.parse(TWCC_1)
    assert (fb.sender_ssrc, fb.media_ssrc) == (4195875351, 1124282272)
    assert (fb.base_sequence, fb.reference_time, fb.feedback_count) == (153, 4057090, 23)
    assert fb.packets == [(153, 148)]  # 37 ms
    assert bytes(fb) == TWCC_1


def test_twcc_chrome_run_of_seven() -> None:
    fb = RtcpTransportFeedback.parse(TWCC_4)
    assert fb.base_sequence == 4 and fb.reference_time == 1074030 and fb.feedback_count == 1
    assert [d for _, d in fb.packets] == [76, 36, 36, 16, 12, 12, 16]
    assert [s for s, _ in fb.packets] == list(range(4, 11))
    assert bytes(fb) == TWCC_4


def test_twcc_chrome_two_bit_vector_then_run() -> None:
    fb = RtcpTransportFeedback.parse(TWCC_6)
    assert fb.base_sequence == 34108 and fb.feedback_count == 179
    assert fb.reference_time == 6551830
    assert fb.packets == [
        (34108, 155),
        (34109, 170),
        (34110, 106),
        (34111, 170),
        (34112, 123),
        (34113, None),
        (34114, 265),  # large delta
        (34115, None),
        (34116, None),
    ]
    assert RtcpTransportFeedback.parse(bytes(fb)) == fb


def test_twcc_one_bit_vector_encoding() -> None:
    # same content as libwebrtc would send: pion/rtcp's marshal examples 5 and 6
    fb = RtcpTransportFeedback(
        4195875351,
        423483579,
        1,
        1074029,
        0,
        [(1, 16), (2, 12), (3, 12), (4, None), (5, 16)] + [(s, None) for s in range(6, 15)],
    )
    assert bytes(fb).hex() == "afcd0006fa17fa17193dd8bb0001000e10636d00ba00100c0c100002"
    deltas = [193, 63, 59, 63, 83, 144, 59]
    received = iter(deltas)
    status = [1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    fb2 = RtcpTransportFeedback(
        4195875351,
        1124282272,
        39956,
        7701536,
        0,
        [(39956 + i, next(received) if s else None) for i, s in enumerate(status)],
    )
    expected = "afcd0007fa17fa1743032fa09c14000c75842000bec0c13f3b3f53903b000003"
    assert bytes(fb2).hex() == expected
    assert RtcpTransportFeedback.parse(bytes.fromhex(expected)) == fb2


def test_twcc_empty_and_reserved_symbol() -> None:
    empty = bytes.fromhex("8fcd00049acb0442" + "00" * 12)
    fb = RtcpTransportFeedback.parse(empty)
    assert fb.packets == [] and fb.sender_ssrc == 2596996162
    reserved = bytes(RtcpTransportFeedback(1, 2, 0, 0, 0, [(0, 1)]))
    bad = bytearray(reserved)
    bad[20:22] = b"\x60\x01"  # run length chunk with symbol 3
    with pytest.raises(ValueError, match="reserved"):
        RtcpTransportFeedback.parse(bytes(bad))


def test_twcc_truncations() -> None:
    data = bytes(RtcpTransportFeedback(1, 2, 10, 5, 1, [(10, 3), (11, 1000), (12, None)]))
    body = data[4:]
    for cut in range(0, len(body), 4):
        truncated = bytes([0x8F, 205, 0, cut // 4]) + body[:cut]
        with pytest.raises(ValueError):
            RtcpTransportFeedback.parse(truncated)


def test_twcc_encoder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        bytes(RtcpTransportFeedback(1, 2, 10, 0, 0, [(10, 1), (12, 1)]))
    with pytest.raises(ValueError, match="16 bits"):
        bytes(RtcpTransportFeedback(1, 2, 10, 0, 0, [(10, 40000)]))


def test_twcc_from_arrivals() -> None:
    t0 = 1_000_000_123  # µs
    arrivals: list[int | None] = [t0, t0 + 1000, None, t0 + 300, t0 + 100_000, None]
    fb = RtcpTransportFeedback.from_arrivals(1, 2, 65534, 9, arrivals)
    assert fb.reference_time == t0 // 64000
    assert fb.base_sequence == 65534 and fb.feedback_count == 9
    assert [s for s, _ in fb.packets] == [65534, 65535, 0, 1, 2, 3]
    # reconstruct absolute arrival times from the deltas
    now = fb.reference_time * 64000
    rebuilt: list[int | None] = []
    for _, delta in fb.packets:
        if delta is None:
            rebuilt.append(None)
        else:
            now += delta * 250
            rebuilt.append(now)
    for got, want in zip(rebuilt, arrivals, strict=True):
        if want is None:
            assert got is None
        else:
            assert got is not None and 0 <= want - got < 250
    deltas = [d for _, d in fb.packets]
    assert deltas[3] is not None and deltas[3] < 0  # reordered arrival: negative delta
    assert RtcpTransportFeedback.parse(bytes(fb)) == fb
    with pytest.raises(ValueError):
        RtcpTransportFeedback.from_arrivals(1, 2, 0, 0, [None, None])
    with pytest.raises(ValueError):
        RtcpTransportFeedback.from_arrivals(1, 2, 0, 0, [0, 10_000_000])


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFF),
    st.integers(0, 255),
    st.lists(
        st.none() | st.integers(0, 255) | st.integers(-0x8000, 0x7FFF),
        max_size=300,
    ),
)
def test_twcc_round_trip(base: int, ref: int, count: int, deltas: list[int | None]) -> None:
    packets = [((base + i) & 0xFFFF, d) for i, d in enumerate(deltas)]
    fb = RtcpTransportFeedback(11, 22, base, ref, count, packets)
    data = bytes(fb)
    assert len(data) % 4 == 0
    assert RtcpTransportFeedback.parse(data) == fb
    assert parse_compound(data + RR)[0] == fb


# --- properties and helpers -----------------------------------------------------------------

_packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(RtcpSenderReport, _u32, st.integers(0, 2**64 - 1), _u32, _u32, _u32, _reports),
    st.builds(RtcpReceiverReport, _u32, _reports),
    st.builds(
        RtcpSdes,
        st.lists(
            st.tuples(
                _u32, st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), max_size=3)
            ),
            max_size=4,
        ),
    ),
    st.builds(RtcpBye, st.lists(_u32, max_size=5), st.none() | st.binary(max_size=30)),
    st.builds(RtcpNack, _u32, _u32, st.lists(st.integers(0, 0xFFFF), max_size=20)),
    st.builds(RtcpPli, _u32, _u32),
    st.builds(RtcpFir, _u32, st.lists(st.tuples(_u32, st.integers(0, 255)), max_size=4)),
    st.builds(RtcpRemb, _u32, st.integers(0, 0x3FFFF), st.lists(_u32, max_size=4)),
    st.builds(RtcpUnknown, st.sampled_from([204, 207, 210]), st.integers(0, 31), st.binary()),
)


@given(st.lists(_packets, min_size=1, max_size=5))
def test_compound_round_trip(packets: list[RtcpPacket]) -> None:
    data = serialize_compound(packets)
    parsed = parse_compound(data)
    assert len(parsed) == len(packets)
    for got, want in zip(parsed, packets, strict=True):
        if isinstance(want, RtcpNack):
            assert isinstance(got, RtcpNack)
            assert sorted(set(got.lost)) == sorted(set(want.lost))
        else:
            assert got == want
    assert serialize_compound(parsed) == data


def test_ntp_now_and_middle32() -> None:
    ntp = ntp_now()
    seconds = ntp >> 32
    assert abs(seconds - (time.time() + 2208988800)) < 2
    assert ntp_middle32(0x0123456789ABCDEF) == 0x456789AB
    assert ntp_middle32(ntp) == (ntp >> 16) & 0xFFFFFFFF
