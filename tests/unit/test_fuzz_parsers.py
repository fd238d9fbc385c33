"""Fuzzing every wire-format parser: random bytes and mutations (truncation, bit flips,
splices) of valid packets. Only ValueError may escape a parser; keyframe detection never
raises; whatever parses re-serialises to something that parses to the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.net.stun import (
    FINGERPRINT,
    MESSAGE_INTEGRITY,
    StunMessage,
    binding_success,
    check_fingerprint,
    check_integrity,
    is_stun,
    parse_xor_address,
    xor_address,
)
from relaycast.rtp.codecs import is_keyframe_packet, is_keyframe_start
from relaycast.rtp.packet import RtpPacket, is_rtcp, parse_extensions
from relaycast.rtp.rtcp import (
    RtcpBye,
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpReceptionReport,
    RtcpRemb,
    RtcpSdes,
    RtcpSenderReport,
    RtcpTransportFeedback,
    RtcpUnknown,
    parse_compound,
    serialize_compound,
)

# Seeds: real captures (aiortc's test suite, pion/rtcp's Chrome TWCC, RFC 5769 §2.1 / §2.3).
RTP_WITH_SDES_MID = bytes.fromhex(
    "90ef374c4f1ba1adf3753f70bede00019030000078800a6dc705f7a2a43c1800066eab3c78aeb152"
    "4d8baaebaa791e80fbabad9ef92bcce3e2a1105f56337eac43fedb785bf417f29455"
)
RTP_WITH_CSRC = bytes.fromhex("82003ed2000000905fbd169eabcdef01deadbeef") + b"\xff" * 20
RTP_ONLY_PADDING_WITH_EXT = (
    bytes.fromhex("b062567abd029f83597eaf6dbede000122f1cc8c") + b"\x00" * 223 + b"\xe0"
)
SR = bytes.fromhex(
    "81c8000c6d2453eade46475b151a005c66a8dd3e0000010d000034f58ef891ed00000000000000f6"
    "0000007f0000000000000000"
)
RR = bytes.fromhex("81c9000730b68407479437af0000000000000276000007720000000000000000")
SDES = bytes.fromhex(
    "81ca000c6d2453ea01267b36336634353965612d343166652d343437342d396433332d3937303763"
    "396565373964317d00000000"
)
PLI = bytes.fromhex("81ce00025450626523013fb9")
NACK = bytes.fromhex(
    "81cd000c8b4477bbf71deee4000c00000020004000360000004c0000006e1000008e000000b70008"
    "00df1000010f000001240000"
)
TWCC_1 = bytes.fromhex("afcd0005fa17fa1743032fa0009900013de8021720019401")
TWCC_4 = bytes.fromhex("afcd0007fa17fa17193dd8bb0004000710636e0120074c2424100c0c10000003")
TWCC_6 = bytes.fromhex("afcd00079b74f61f9371dcbc853c000963f916b3d55200309baa6aaa7b010901")
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() + "00240004" + "6e0001ff"
    "80290008932ff9b151263b36"
    "00060009" + b"evtj:h6vY   ".hex() + "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" + b"test vector ".hex() + "00200014"
    "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)

RTP_SEEDS = [
    RTP_WITH_SDES_MID,
    RTP_WITH_CSRC[:40],
    RTP_ONLY_PADDING_WITH_EXT,
    bytes(
        RtpPacket(
            payload_type=96,
            extension_profile=0x1000,
            extensions=[(1, b""), (200, b"x" * 20)],
            payload=b"\x90\x80\x85\x05\x9c",
            padding_size=3,
        )
    ),
    bytes(RtpPacket(extension_profile=0x1234, extensions=[(0, b"abcd")], payload=b"z")),
]
RTCP_SEEDS = [
    SR,
    RR,
    SDES,
    NACK,
    PLI,
    TWCC_1,
    TWCC_4,
    TWCC_6,
    SR + SDES,
    bytes(RtcpBye([1, 2], b"bye")),
    bytes(RtcpFir(1, [(2, 3)])),
    bytes(RtcpRemb(1, 123456789, [5, 6])),
    bytes(RtcpUnknown(204, 3, b"abcde")),
]
STUN_SEEDS = [SAMPLE_REQUEST, SAMPLE_IPV6_RESPONSE]
PAYLOAD_SEEDS = [
    b"\x90\xf0\x85\x05\x11\x22\x9c",
    b"\x78\x00\x04\x67\x42\xc0\x1f\x00\x03\x68\xce\x3c",
    b"\x7c\x85\x88",
    b"\xa8\x81\x23\x00\x05\x00",
    b"\x18\x0a\x0b",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid packet, then a few truncations / bit flips / byte overwrites / splices."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "byte", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def _inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), mutated(seeds))


def _only_value_error(fn: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return fn(data)
    except ValueError:
        return None


FUZZ = settings(max_examples=200, deadline=None)


@FUZZ
@given(_inputs(RTP_SEEDS))
def test_rtp_parse(data: bytes) -> None:
    is_rtcp(data)
    packet = _only_value_error(RtpPacket.parse, data)
    if packet is not None:
        again = RtpPacket.parse(bytes(packet))
        assert again == packet


@FUZZ
@given(st.sampled_from([0xBEDE, 0x1000, 0x100F, 0x1234]), st.binary(max_size=64))
def test_parse_extensions(profile: int, block: bytes) -> None:
    items = _only_value_error(lambda b: parse_extensions(profile, b), block)
    if items is not None:
        for ext_id, value in items:
            assert 0 <= ext_id <= 255 and len(value) <= max(255, len(block))


@FUZZ
@given(_inputs(RTCP_SEEDS))
def test_rtcp_compound(data: bytes) -> None:
    packets = _only_value_error(parse_compound, data)
    if packets is not None:
        assert parse_compound(serialize_compound(packets)) == packets


RTCP_CLASSES = [
    RtcpSenderReport,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpBye,
    RtcpNack,
    RtcpTransportFeedback,
    RtcpPli,
    RtcpFir,
    RtcpRemb,
    RtcpUnknown,
]


@FUZZ
@given(st.sampled_from(RTCP_CLASSES), _inputs(RTCP_SEEDS))
def test_rtcp_single_packet_parsers(cls: Any, data: bytes) -> None:
    packet = _only_value_error(cls.parse, data)
    if packet is not None:
        assert type(packet).parse(bytes(packet)) == packet
    _only_value_error(RtcpReceptionReport.parse, data)


@FUZZ
@given(_inputs(STUN_SEEDS))
def test_stun(data: bytes) -> None:
    is_stun(data)
    check_fingerprint(data)
    check_integrity(data, b"VOkJxbRl1RmTxUk/WvJxBt")
    msg = _only_value_error(StunMessage.parse, data)
    if msg is not None:
        assert is_stun(data)
        kept = [(t, v) for t, v in msg.attributes if t not in (MESSAGE_INTEGRITY, FINGERPRINT)]
        again = StunMessage.parse(msg.encode(b"k"))
        assert again.attributes[: len(kept)] == kept
        assert (again.method, again.msg_class) == (msg.method, msg.msg_class)
        msg.username  # noqa: B018 - must not raise


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=24),
        mutated(
            [
                xor_address(("192.0.2.1", 32853), TID),
                xor_address(("2001:db8::1", 443), TID),
            ]
        ),
    ),
    st.binary(max_size=16),
)
def test_xor_address(value: bytes, tid: bytes) -> None:
    result = _only_value_error(lambda v: parse_xor_address(v, tid), value)
    if result is not None:
        host, port = result
        assert 0 <= port <= 0xFFFF and isinstance(host, str)


@FUZZ
@given(st.sampled_from(["vp8", "vp9", "h264", "av1", "opus"]), _inputs(PAYLOAD_SEEDS))
def test_keyframe_detection_never_raises(codec: str, payload: bytes) -> None:
    assert isinstance(is_keyframe_start(codec, payload), bool)
    assert isinstance(is_keyframe_packet(codec, payload), bool)


def test_seeds_are_valid() -> None:
    """The seeds really are valid packets before they get mutated."""
    request = StunMessage.parse(SAMPLE_REQUEST)
    response = binding_success(request, ("127.0.0.1", 9), b"pw")
    assert check_integrity(response, b"pw") and check_fingerprint(response)
    for seed in RTP_SEEDS:
        assert bytes(RtpPacket.parse(seed)) == seed
    for seed in RTCP_SEEDS:
        assert parse_compound(seed)
    for seed in STUN_SEEDS:
        assert check_integrity(seed, b"VOkJxbRl1RmTxUk/WvJxBt") and check_fingerprint(seed)
