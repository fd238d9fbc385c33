"""RTP packet parsing / serialisation (RFC 3550 §5.1, RFC 8285, RFC 4588, RFC 5761)."""

from __future__ import annotations

import struct

import pytest
from aiortc import rtp as artp
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from hypothesis import given
from hypothesis import strategies as st

from relaycast.rtp.packet import (
    EXTENSION_PROFILE_ONE_BYTE,
    EXTENSION_PROFILE_TWO_BYTE,
    RtpPacket,
    build_extensions,
    is_rtcp,
    parse_extensions,
    unwrap_rtx,
    wrap_rtx,
)

# Captures from aiortc's test suite (tests/*.bin), real packets from browsers / aiortc.
RTP = bytes.fromhex("80003d7feaaa63f4f01b40e9") + b"\xff" * 160
RTP_DTMF = bytes.fromhex("80e55e58efb0f6bca6a144f2018a03c0")
RTP_WITH_CSRC = bytes.fromhex("82003ed2000000905fbd169eabcdef01deadbeef") + b"\xff" * 160
RTP_WITH_SDES_MID = bytes.fromhex(
    "90ef374c4f1ba1adf3753f70bede00019030000078800a6dc705f7a2a43c1800066eab3c78aeb152"
    "4d8baaebaa791e80fbabad9ef92bcce3e2a1105f56337eac43fedb785bf417f29455"
)
RTP_ONLY_PADDING = bytes.fromhex(
    "a0786c6ff10b431ba91fbcbe348205fc4600e50e55dae72b8ab3afd2681d67d7759405fdcfb070f6"
    "03dd96ec8efa7053d06f81afe36c53f0b7b2142bf65b01b9e238ec3e313d159b66450acaa2081d17"
    "e80ea099fd337654a391ce92fdfc7e34898b0b60939af5700d0089c7cb3a4e81e4acdb50c998c836"
    "f83039b6a27b233867df846ac01a55492c1638598eded9e3574ad8311e8b9722b63cc1e15f800e45"
    "c3f5a940659a41c1addf1c7ebb04b293de77ce76cb7bf4a738199967681098f911f0ca58522dde8f"
    "6352ed3d82ae53f62e0ec2e06217da488f4d0f204ba59b7750ae3963414fa62d32798ee0"
)
RTP_ONLY_PADDING_WITH_EXT = (
    bytes.fromhex("b062567abd029f83597eaf6dbede000122f1cc8c") + b"\x00" * 223 + b"\xe0"
)

CANONICAL_CAPTURES = [RTP, RTP_DTMF, RTP_WITH_CSRC, RTP_WITH_SDES_MID, RTP_ONLY_PADDING_WITH_EXT]


def test_parse_plain_capture() -> None:
    p = RtpPacket.parse(RTP)
    assert (p.payload_type, p.sequence_number, p.timestamp, p.ssrc) == (
        0,
        15743,
        3937035252,
        0xF01B40E9,
    )
    assert p.marker is False
    assert p.csrc == []
    assert p.extension_profile == 0 and p.extensions == []
    assert p.payload == b"\xff" * 160
    assert p.padding_size == 0


def test_parse_dtmf_marker() -> None:
    p = RtpPacket.parse(RTP_DTMF)
    assert p.marker is True
    assert p.payload_type == 101
    assert p.payload == bytes.fromhex("018a03c0")


def test_parse_csrc() -> None:
    p = RtpPacket.parse(RTP_WITH_CSRC)
    assert p.csrc == [0xABCDEF01, 0xDEADBEEF]
    assert len(p.payload) == 160


def test_parse_sdes_mid_extension() -> None:
    p = RtpPacket.parse(RTP_WITH_SDES_MID)
    assert p.extension_profile == EXTENSION_PROFILE_ONE_BYTE
    assert p.extensions == [(9, b"0")]
    assert p.get_extension(9) == b"0"
    assert p.get_extension(3) is None
    assert p.payload_type == 111 and p.marker is True
    assert len(p.payload) == 54


def test_parse_padding_only_packets() -> None:
    p = RtpPacket.parse(RTP_ONLY_PADDING)
    assert p.payload == b""
    assert p.padding_size == 224
    assert p.payload_type == 120
    # random padding content is not kept: re-serialisation zero-fills it
    again = bytes(p)
    assert len(again) == len(RTP_ONLY_PADDING)
    assert again[:12] == RTP_ONLY_PADDING[:12] and again[-1] == 224

    q = RtpPacket.parse(RTP_ONLY_PADDING_WITH_EXT)
    assert q.extensions == [(2, b"\xf1\xcc\x8c")]
    assert q.padding_size == 224 and q.payload == b""


@pytest.mark.parametrize("data", CANONICAL_CAPTURES)
def test_captures_round_trip_byte_for_byte(data: bytes) -> None:
    assert bytes(RtpPacket.parse(data)) == data


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than the 12-byte header"),
        (RTP[:11], "shorter than the 12-byte header"),
        (b"\x40" + RTP[1:], "version"),
        (b"\x00" + RTP[1:], "version"),
        (bytes([0x8F]) + RTP[1:12] + b"\x00" * 56, "CSRC"),  # 15 CSRCs need 60 bytes
        (bytes([0x90]) + RTP[1:12] + b"\xbe\xde", "extension header is truncated"),
        (bytes([0x90]) + RTP[1:12] + b"\xbe\xde\x00\x02" + b"\x10\x00\x00\x00", "extension block"),
        (bytes([0xA0]) + RTP[1:12] + b"\x00", "padding count is zero"),
        (bytes([0xA0]) + RTP[1:12] + b"\x01\x02\x05", "padding is larger"),
        # one-byte element claiming 16 bytes inside a 4-byte block
        (bytes([0x90]) + RTP[1:12] + b"\xbe\xde\x00\x01\x1f\x00\x00\x00", "overruns"),
        # two-byte element header cut by the end of the block
        (bytes([0x90]) + RTP[1:12] + b"\x10\x00\x00\x01\x00\x00\x00\x05", "two-byte"),
        (bytes([0x90]) + RTP[1:12] + b"\x10\x00\x00\x01\x05\x09\x00\x00", "overruns"),
    ],
)
def test_malformed_packets_raise(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpPacket.parse(data)


def test_padding_exactly_the_rest_is_accepted() -> None:
    data = bytes([0xA0]) + RTP[1:12] + b"\x00\x00\x03"
    p = RtpPacket.parse(data)
    assert p.payload == b"" and p.padding_size == 3
    assert bytes(p) == data


# --- header extensions ----------------------------------------------------------------------


def test_one_byte_extension_padding_between_elements_and_id_15() -> None:
    block = b"\x10\xaa\x00\x00\x21\xbb\xcc\xf0\x31\x11\x00\x00"
    assert parse_extensions(EXTENSION_PROFILE_ONE_BYTE, block) == [
        (1, b"\xaa"),
        (2, b"\xbb\xcc"),
    ]  # id 15 stops parsing (RFC 8285 §4.2)


def test_two_byte_extensions_parse_and_zero_length() -> None:
    block = b"\x01\x00\x00\x05\x03abc\x00\x00"
    assert parse_extensions(0x1003, block) == [(1, b""), (5, b"abc")]


def test_generic_profile_kept_whole() -> None:
    assert parse_extensions(0xABCD, b"\x01\x02\x03\x04") == [(0, b"\x01\x02\x03\x04")]
    p = RtpPacket(extension_profile=0xABCD, extensions=[(0, b"\x01\x02\x03\x04")])
    assert RtpPacket.parse(bytes(p)) == p


def test_build_extensions_chooses_form() -> None:
    assert build_extensions([]) == (0, b"")
    profile, block = build_extensions([(1, b"\x01"), (3, b"abc")])
    assert profile == EXTENSION_PROFILE_ONE_BYTE
    assert block == b"\x10\x01\x32abc\x00\x00"
    profile, block = build_extensions([(15, b"x")])
    assert profile == EXTENSION_PROFILE_TWO_BYTE
    assert block == b"\x0f\x01x\x00"
    profile, block = build_extensions([(1, b"")])
    assert profile == EXTENSION_PROFILE_TWO_BYTE
    assert block == b"\x01\x00\x00\x00"
    profile, block = build_extensions([(2, b"y" * 17)])
    assert profile == EXTENSION_PROFILE_TWO_BYTE and len(block) == 20
    with pytest.raises(ValueError):
        build_extensions([(300, b"z")])


def test_serialiser_respects_two_byte_profile() -> None:
    p = RtpPacket(extension_profile=0x1002, extensions=[(1, b"\x01")], payload=b"x")
    data = bytes(p)
    assert data[12:16] == b"\x10\x02\x00\x01"
    assert data[16:20] == b"\x01\x01\x01\x00"
    assert RtpPacket.parse(data) == p


def test_one_byte_profile_falls_back_to_two_byte_when_needed() -> None:
    p = RtpPacket(extension_profile=EXTENSION_PROFILE_ONE_BYTE, extensions=[(20, b"abc")])
    q = RtpPacket.parse(bytes(p))
    assert q.extension_profile == EXTENSION_PROFILE_TWO_BYTE
    assert q.extensions == [(20, b"abc")]


def test_empty_extension_block_round_trips() -> None:
    p = RtpPacket(extension_profile=EXTENSION_PROFILE_ONE_BYTE, payload=b"abc")
    data = bytes(p)
    assert data[0] & 0x10 and data[12:16] == b"\xbe\xde\x00\x00"
    assert RtpPacket.parse(data) == p


def test_packet_from_scratch_bytes_layout() -> None:
    p = RtpPacket(
        marker=True,
        payload_type=96,
        sequence_number=0xFFFF,
        timestamp=0xDEADBEEF,
        ssrc=0x12345678,
        csrc=[1],
        extensions=[(1, b"\x00\x10")],
        payload=b"\x90\xe0",
        padding_size=4,
    )
    data = bytes(p)
    assert data.hex() == (
        "b1e0ffffdeadbeef12345678"  # V=2 P X CC=1, M PT=96
        "00000001"
        "bede0001"
        "11001000"  # one-byte extension id 1, 2 bytes
        "90e0"
        "00000004"
    )
    q = RtpPacket.parse(data)
    assert q.extension_profile == EXTENSION_PROFILE_ONE_BYTE
    q.extension_profile = 0
    assert q == p


def test_copy_is_independent() -> None:
    p = RtpPacket.parse(RTP_WITH_SDES_MID)
    c = p.copy()
    assert c == p and c is not p
    c.extensions.append((4, b"z"))
    c.csrc.append(5)
    assert p.extensions == [(9, b"0")] and p.csrc == []


# --- RTCP demultiplexing, RTX -------------------------------------------------------------


def test_is_rtcp() -> None:
    assert not is_rtcp(RTP)
    assert not is_rtcp(RTP_WITH_SDES_MID)  # PT 111 with marker = 239
    assert is_rtcp(bytes.fromhex("81c9000730b68407"))  # RR
    assert is_rtcp(b"\x80\xc0")  # 192
    assert is_rtcp(b"\x80\xdf")  # 223
    assert not is_rtcp(b"\x80\xbf")
    assert not is_rtcp(b"\x80\xe0")
    assert not is_rtcp(b"\x80")


def test_rtx_wrap_unwrap_round_trip() -> None:
    original = RtpPacket.parse(RTP_WITH_SDES_MID)
    rtx = wrap_rtx(original, rtx_pt=112, rtx_ssrc=0xCAFE, rtx_seq=70000)
    assert rtx.payload_type == 112 and rtx.ssrc == 0xCAFE
    assert rtx.sequence_number == 70000 & 0xFFFF
    assert rtx.payload[:2] == struct.pack("!H", original.sequence_number)
    assert rtx.timestamp == original.timestamp and rtx.marker == original.marker
    back = unwrap_rtx(RtpPacket.parse(bytes(rtx)), 111, original.ssrc)
    assert back == original


def test_unwrap_rtx_rejects_short_payload() -> None:
    with pytest.raises(ValueError, match="RTX"):
        unwrap_rtx(RtpPacket(payload=b"\x01"), 96, 1)


def test_rtx_matches_aiortc() -> None:
    ours = wrap_rtx(RtpPacket.parse(RTP_DTMF), 97, 1234, 7)
    theirs = artp.wrap_rtx(artp.RtpPacket.parse(RTP_DTMF), 97, 7, 1234)
    assert bytes(ours) == theirs.serialize()


# --- cross-check against aiortc's independent implementation ------------------------------

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _aiortc_map() -> artp.HeaderExtensionsMap:
    m = artp.HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
                RTCRtpHeaderExtensionParameters(id=2, uri=ABS_SEND_TIME_URI),
                RTCRtpHeaderExtensionParameters(id=3, uri=TWCC_URI),
            ]
        )
    )
    return m


@given(
    pt=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    mid=st.none() | st.text("abcdefgh0123456789", min_size=1, max_size=16),
    abs_send_time=st.none() | st.integers(0, 0xFFFFFF),
    twcc=st.none() | st.integers(0, 0xFFFF),
)
def test_aiortc_serialised_packets_parse_identically(
    pt: int,
    marker: bool,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    mid: str | None,
    abs_send_time: int | None,
    twcc: int | None,
) -> None:
    m = _aiortc_map()
    theirs = artp.RtpPacket(
        payload_type=pt, marker=int(marker), sequence_number=seq, timestamp=ts, ssrc=ssrc
    )
    theirs.payload = payload
    theirs.extensions.mid = mid
    theirs.extensions.abs_send_time = abs_send_time
    theirs.extensions.transport_sequence_number = twcc
    data = theirs.serialize(m)

    ours = RtpPacket.parse(data)
    assert (ours.payload_type, ours.marker, ours.sequence_number) == (pt, marker, seq)
    assert (ours.timestamp, ours.ssrc, ours.payload) == (ts, ssrc, payload)
    assert ours.get_extension(1) == (None if mid is None else mid.encode())
    expected_ast = None if abs_send_time is None else abs_send_time.to_bytes(3, "big")
    assert ours.get_extension(2) == expected_ast
    assert ours.get_extension(3) == (None if twcc is None else twcc.to_bytes(2, "big"))
    assert bytes(ours) == data  # aiortc writes canonical one-byte extensions


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    mid=st.none() | st.text("xyz", min_size=1, max_size=16),
    twcc=st.none() | st.integers(0, 0xFFFF),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_our_packets_parse_identically_in_aiortc(
    pt: int,
    seq: int,
    csrc: list[int],
    mid: str | None,
    twcc: int | None,
    payload: bytes,
    padding: int,
) -> None:
    exts: list[tuple[int, bytes]] = []
    if mid is not None:
        exts.append((1, mid.encode()))
    if twcc is not None:
        exts.append((3, twcc.to_bytes(2, "big")))
    ours = RtpPacket(
        payload_type=pt,
        sequence_number=seq,
        timestamp=123456,
        ssrc=0xABCDEF,
        csrc=csrc,
        extensions=exts,
        payload=payload,
        padding_size=padding,
    )
    theirs = artp.RtpPacket.parse(bytes(ours), _aiortc_map())
    assert theirs.payload_type == pt and theirs.sequence_number == seq
    assert theirs.csrc == csrc
    assert theirs.payload == payload
    assert theirs.padding_size == padding
    assert theirs.extensions.mid == mid
    assert theirs.extensions.transport_sequence_number == twcc


# --- property: round trip ------------------------------------------------------------------

_ext_items = st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=6)


@given(
    marker=st.booleans(),
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    exts=_ext_items,
    payload=st.binary(max_size=100),
    padding=st.integers(0, 255),
)
def test_round_trip(
    marker: bool,
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    csrc: list[int],
    exts: list[tuple[int, bytes]],
    payload: bytes,
    padding: int,
) -> None:
    p = RtpPacket(
        marker=marker,
        payload_type=pt,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        csrc=csrc,
        extensions=exts,
        payload=payload,
        padding_size=padding,
    )
    data = bytes(p)
    q = RtpPacket.parse(data)
    assert q.extension_profile == build_extensions(exts)[0]
    assert q.extensions == exts
    q.extension_profile = 0
    assert q == p
    assert bytes(RtpPacket.parse(data)) == data  # canonical bytes are a fixed point


def test_one_byte_padding_with_a_length_nibble_is_skipped() -> None:
    """Found by hypothesis: 0x01 has the reserved id 0; it is padding, not an element."""
    data = (
        bytes.fromhex("90ef374c4f1ba1adf3753f70bede0001") + bytes([0x01, 0x30, 0x00, 0x00]) + b"x"
    )
    packet = RtpPacket.parse(data)
    assert packet.extensions == [(3, b"\x00")]
    assert RtpPacket.parse(bytes(packet)).extensions == [(3, b"\x00")]


def test_generic_extension_with_profile_zero_round_trips() -> None:
    """Found by hypothesis: X=1 with the RFC 3550 profile 0x0000 is a generic extension."""
    data = (
        bytes.fromhex("9060000000000000000000000000" + "0001")
        + bytes([0x01, 0x00, 0xC8, 0x14])
        + b"payload"
    )
    packet = RtpPacket.parse(data)
    assert packet.extension_profile == 0
    assert packet.extensions == [(0, bytes([0x01, 0x00, 0xC8, 0x14]))]
    assert bytes(packet) == data
