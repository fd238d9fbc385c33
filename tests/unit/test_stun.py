"""STUN (RFC 8489) as used by ICE-lite, checked against the RFC 5769 test vectors and aioice."""

from __future__ import annotations

import pytest
from aioice import stun as astun
from hypothesis import given
from hypothesis import strategies as st

from relaycast.net import stun
from relaycast.net.stun import (
    BINDING,
    ERROR,
    ERROR_CODE,
    FINGERPRINT,
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    INDICATION,
    MESSAGE_INTEGRITY,
    PRIORITY,
    REQUEST,
    SUCCESS,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunMessage,
    binding_error,
    binding_success,
    check_fingerprint,
    check_integrity,
    is_stun,
    parse_xor_address,
    xor_address,
)

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 §2.1 sample request (note the USERNAME padding is three spaces, not zeros)
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" + b"STUN test client".hex() + "00240004" + "6e0001ff"
    "80290008932ff9b151263b36"
    "00060009" + b"evtj:h6vY   ".hex() + "00080014"
    "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# RFC 5769 §2.2 sample IPv4 response: 192.0.2.1 port 32853
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b" + b"test vector ".hex() + "00200008"
    "0001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# RFC 5769 §2.3 sample IPv6 response: 2001:db8:1234:5678:11:2233:4455:6677 port 32853
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" + b"test vector ".hex() + "00200014"
    "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)


def test_sample_request_parses() -> None:
    assert len(SAMPLE_REQUEST) == 108
    msg = StunMessage.parse(SAMPLE_REQUEST)
    assert (msg.method, msg.msg_class, msg.transaction_id) == (BINDING, REQUEST, TID)
    assert msg.username == "evtj:h6vY"
    assert msg.get(stun.SOFTWARE) == b"STUN test client"
    assert msg.get(PRIORITY) == bytes.fromhex("6e0001ff")
    assert msg.get(ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert msg.get(ICE_CONTROLLING) is None
    assert [t for t, _ in msg.attributes] == [
        stun.SOFTWARE,
        PRIORITY,
        ICE_CONTROLLED,
        USERNAME,
        MESSAGE_INTEGRITY,
        FINGERPRINT,
    ]


@pytest.mark.parametrize("data", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE])
def test_rfc5769_integrity_and_fingerprint(data: bytes) -> None:
    assert is_stun(data)
    assert check_fingerprint(data)
    assert check_integrity(data, PASSWORD)
    assert not check_integrity(data, b"wrong password")
    tampered = bytearray(data)
    tampered[25] ^= 0x01  # inside the first attribute's value
    assert not check_integrity(bytes(tampered), PASSWORD)
    assert not check_fingerprint(bytes(tampered))


def test_rfc5769_responses_xor_address() -> None:
    v4 = StunMessage.parse(SAMPLE_IPV4_RESPONSE)
    assert v4.msg_class == SUCCESS and v4.method == BINDING
    value = v4.get(XOR_MAPPED_ADDRESS)
    assert value is not None
    assert parse_xor_address(value, TID) == ("192.0.2.1", 32853)
    assert xor_address(("192.0.2.1", 32853), TID) == value

    v6 = StunMessage.parse(SAMPLE_IPV6_RESPONSE)
    value6 = v6.get(XOR_MAPPED_ADDRESS)
    assert value6 is not None
    assert parse_xor_address(value6, TID) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert xor_address(("2001:db8:1234:5678:11:2233:4455:6677", 32853), TID) == value6


def test_reencoded_sample_request_verifies() -> None:
    msg = StunMessage.parse(SAMPLE_REQUEST)
    data = msg.encode(PASSWORD)
    # the only difference to the RFC bytes is zero instead of space padding after USERNAME,
    # so everything up to the end of the USERNAME value and the next attribute header match
    assert data[:73] == SAMPLE_REQUEST[:73]
    assert data[73:76] == b"\x00\x00\x00" and SAMPLE_REQUEST[73:76] == b"   "
    assert data[76:80] == SAMPLE_REQUEST[76:80]
    assert len(data) == len(SAMPLE_REQUEST)
    assert check_integrity(data, PASSWORD)
    assert check_fingerprint(data)
    assert StunMessage.parse(data).attributes[:4] == msg.attributes[:4]


def test_reencoded_ipv4_response_verifies() -> None:
    # the SOFTWARE padding in RFC 5769 §2.2 is a space where we write a zero
    msg = StunMessage.parse(SAMPLE_IPV4_RESPONSE)
    data = msg.encode(PASSWORD)
    assert data[:32] == SAMPLE_IPV4_RESPONSE[:32]
    assert data[36:44] == SAMPLE_IPV4_RESPONSE[36:44]
    assert check_integrity(data, PASSWORD) and check_fingerprint(data)


def test_encode_layout_and_flags() -> None:
    msg = StunMessage(BINDING, REQUEST, TID, [(USERNAME, b"abc:def"), (USE_CANDIDATE, b"")])
    plain = msg.encode(fingerprint=False)
    assert plain[:4] == b"\x00\x01\x00\x10"
    assert plain[20:32] == b"\x00\x06\x00\x07abc:def\x00"
    assert plain[32:36] == b"\x00\x25\x00\x00"
    assert not check_fingerprint(plain) and not check_integrity(plain, b"k")
    fp_only = msg.encode()
    assert len(fp_only) == len(plain) + 8 and check_fingerprint(fp_only)
    both = msg.encode(b"key")
    assert len(both) == len(plain) + 24 + 8
    assert check_integrity(both, b"key") and check_fingerprint(both)
    integrity_only = msg.encode(b"key", fingerprint=False)
    assert check_integrity(integrity_only, b"key") and not check_fingerprint(integrity_only)


def test_encode_drops_stale_integrity_and_fingerprint() -> None:
    msg = StunMessage.parse(SAMPLE_REQUEST)
    again = StunMessage.parse(msg.encode(b"other"))
    assert [t for t, _ in again.attributes].count(MESSAGE_INTEGRITY) == 1
    assert [t for t, _ in again.attributes].count(FINGERPRINT) == 1


@pytest.mark.parametrize(
    ("method", "msg_class", "type_bytes"),
    [
        (BINDING, REQUEST, b"\x00\x01"),
        (BINDING, INDICATION, b"\x00\x11"),
        (BINDING, SUCCESS, b"\x01\x01"),
        (BINDING, ERROR, b"\x01\x11"),
        (0xFFF, ERROR, b"\x3f\xff"),
        (0x003, REQUEST, b"\x00\x03"),  # TURN Allocate
    ],
)
def test_message_type_encoding(method: int, msg_class: int, type_bytes: bytes) -> None:
    data = StunMessage(method, msg_class, TID).encode(fingerprint=False)
    assert data[:2] == type_bytes
    parsed = StunMessage.parse(data)
    assert (parsed.method, parsed.msg_class) == (method, msg_class)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (SAMPLE_REQUEST[:19], "shorter than the 20-byte header"),
        (b"\x40" + SAMPLE_REQUEST[1:], "two zero bits"),
        (SAMPLE_REQUEST[:4] + b"\x21\x12\xa4\x43" + SAMPLE_REQUEST[8:], "magic cookie"),
        (SAMPLE_REQUEST[:-1], "length field"),
        (SAMPLE_REQUEST + b"\x00\x00\x00\x00", "length field"),
        (b"\x00\x01\x00\x02" + SAMPLE_REQUEST[4:20] + b"\x00\x06", "multiple of 4"),
        (b"\x00\x01\x00\x04" + SAMPLE_REQUEST[4:20] + b"\x00\x06\x00\x09", "truncated"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StunMessage.parse(data)
    assert not check_integrity(data, PASSWORD)
    assert not check_fingerprint(data)


def test_is_stun() -> None:
    assert is_stun(SAMPLE_REQUEST)
    assert not is_stun(SAMPLE_REQUEST[:19])
    assert not is_stun(b"\x80" + SAMPLE_REQUEST[1:])  # RTP
    assert not is_stun(b"\x16\xfe\xfd" + b"\x00" * 30)  # DTLS
    assert not is_stun(SAMPLE_REQUEST[:4] + b"\x00\x00\x00\x00" + SAMPLE_REQUEST[8:])


def test_fingerprint_must_be_last() -> None:
    msg = StunMessage.parse(SAMPLE_REQUEST)
    fp = msg.get(FINGERPRINT)
    assert fp is not None
    moved = StunMessage(BINDING, REQUEST, TID, [(FINGERPRINT, fp), (PRIORITY, b"\x00" * 4)])
    assert not check_fingerprint(moved.encode(fingerprint=False))


def test_username_property() -> None:
    assert StunMessage(BINDING, REQUEST, TID).username is None
    assert StunMessage(BINDING, REQUEST, TID, [(USERNAME, b"\xff\xfe")]).username is None
    assert StunMessage(BINDING, REQUEST, TID, [(USERNAME, "ü:x".encode())]).username == "ü:x"
    with pytest.raises(ValueError):
        StunMessage(BINDING, REQUEST, b"short")


def test_binding_success_builder() -> None:
    request = StunMessage.parse(SAMPLE_REQUEST)
    data = binding_success(request, ("10.1.2.3", 5000), PASSWORD)
    response = StunMessage.parse(data)
    assert response.msg_class == SUCCESS and response.method == BINDING
    assert response.transaction_id == TID
    value = response.get(XOR_MAPPED_ADDRESS)
    assert value is not None and parse_xor_address(value, TID) == ("10.1.2.3", 5000)
    assert check_integrity(data, PASSWORD) and check_fingerprint(data)
    # aioice (independent implementation) accepts it
    parsed = astun.parse_message(data)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == ("10.1.2.3", 5000)
    assert parsed.check_message_integrity(PASSWORD)


def test_binding_error_builder() -> None:
    request = StunMessage.parse(SAMPLE_REQUEST)
    data = binding_error(request, 487, "Role Conflict", PASSWORD)
    response = StunMessage.parse(data)
    assert response.msg_class == ERROR
    assert response.get(ERROR_CODE) == b"\x00\x00\x04\x57Role Conflict"
    assert check_integrity(data, PASSWORD) and check_fingerprint(data)
    assert astun.parse_message(data).attributes["ERROR-CODE"] == (487, "Role Conflict")
    unauth = binding_error(request, 401, "Unauthorized", None)
    assert not check_integrity(unauth, PASSWORD) and check_fingerprint(unauth)
    assert StunMessage.parse(unauth).get(MESSAGE_INTEGRITY) is None
    with pytest.raises(ValueError):
        binding_error(request, 200, "OK", None)


def test_aioice_request_verifies_with_us() -> None:
    msg = astun.Message(
        message_method=astun.Method.BINDING,
        message_class=astun.Class.REQUEST,
        transaction_id=TID,
        attributes={
            "USERNAME": "server:client",
            "PRIORITY": 1853824767,
            "ICE-CONTROLLING": 0x1234567890ABCDEF,
            "USE-CANDIDATE": None,
        },
    )
    msg.add_message_integrity(b"server-password")
    data = bytes(msg)
    parsed = StunMessage.parse(data)
    assert parsed.username == "server:client"
    assert parsed.get(USE_CANDIDATE) == b""
    assert parsed.get(ICE_CONTROLLING) == (0x1234567890ABCDEF).to_bytes(8, "big")
    assert check_integrity(data, b"server-password")
    assert check_fingerprint(data)


def test_xor_address_errors() -> None:
    with pytest.raises(ValueError):
        parse_xor_address(b"\x00\x01\x00", TID)
    with pytest.raises(ValueError):
        parse_xor_address(b"\x00\x01\x00\x00\x00", TID)
    with pytest.raises(ValueError):
        parse_xor_address(b"\x00\x02\x00\x00" + b"\x00" * 4, TID)
    with pytest.raises(ValueError):
        parse_xor_address(b"\x00\x03\x00\x00" + b"\x00" * 4, TID)


_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)


@given(st.one_of(_ipv4, _ipv6), st.integers(0, 65535), st.binary(min_size=12, max_size=12))
def test_xor_address_round_trip_and_matches_aioice(host: str, port: int, tid: bytes) -> None:
    value = xor_address((host, port), tid)
    assert parse_xor_address(value, tid) == (host, port)
    assert value == astun.pack_xor_address((host, port), tid)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 0xFFFF).filter(lambda t: t not in (0x0008, 0x8028)),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    st.binary(min_size=12, max_size=12),
    st.none() | st.binary(min_size=1, max_size=32),
    st.booleans(),
)
def test_encode_parse_round_trip(
    attributes: list[tuple[int, bytes]], tid: bytes, key: bytes | None, fingerprint: bool
) -> None:
    msg = StunMessage(BINDING, REQUEST, tid, attributes)
    data = msg.encode(key, fingerprint)
    parsed = StunMessage.parse(data)
    assert parsed.attributes[: len(attributes)] == attributes
    assert check_fingerprint(data) is fingerprint
    if key is not None:
        assert check_integrity(data, key)
        assert not check_integrity(data, key + b"x")
    else:
        assert not check_integrity(data, b"anything")
