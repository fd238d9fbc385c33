"""STUN messages as used by ICE-lite (RFC 8489, RFC 8445 §7.1 and §16, RFC 7675).

Only what a Binding server needs: parse, encode with MESSAGE-INTEGRITY (HMAC-SHA1, short-term
credentials: the key is the local ICE password) and FINGERPRINT, verify both on raw received
bytes, and the XOR-MAPPED-ADDRESS codec.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct

__all__ = [
    "BINDING",
    "ERROR",
    "ERROR_CODE",
    "FINGERPRINT",
    "ICE_CONTROLLED",
    "ICE_CONTROLLING",
    "INDICATION",
    "MAGIC_COOKIE",
    "MESSAGE_INTEGRITY",
    "PRIORITY",
    "REQUEST",
    "SOFTWARE",
    "SUCCESS",
    "USERNAME",
    "USE_CANDIDATE",
    "XOR_MAPPED_ADDRESS",
    "StunMessage",
    "binding_error",
    "binding_success",
    "check_fingerprint",
    "check_integrity",
    "is_stun",
    "parse_xor_address",
    "xor_address",
]

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_FINGERPRINT_XOR = 0x5354554E

# method (RFC 8489 §18.2)
BINDING = 0x001

# classes (RFC 8489 §5)
REQUEST = 0b00
INDICATION = 0b01
SUCCESS = 0b10
ERROR = 0b11

# attributes (RFC 8489 §18.3, RFC 8445 §16.1)
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")


def _message_type(method: int, msg_class: int) -> int:
    """Interleave method and class bits into the 14-bit message type (RFC 8489 §5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((msg_class & 0b01) << 4)
        | ((msg_class & 0b10) << 7)
    )


def _split_type(message_type: int) -> tuple[int, int]:
    method = (
        (message_type & 0x000F) | ((message_type >> 1) & 0x0070) | ((message_type >> 2) & 0x0F80)
    )
    msg_class = ((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10)
    return method, msg_class


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing check (RFC 8489 §6, RFC 7983): at least 20 bytes, the two top bits
    zero and the magic cookie in bytes 4..7.
    """
    return len(data) >= 20 and data[0] < 0x40 and data[4:8] == _COOKIE_BYTES


def _walk(data: bytes) -> list[tuple[int, int, int]]:
    """Validate the header and return (type, value offset, value length) per attribute."""
    n = len(data)
    if n < 20:
        raise ValueError(f"STUN message is {n} bytes, shorter than the 20-byte header")
    if data[0] & 0xC0:
        raise ValueError("STUN message must start with two zero bits")
    length = (data[2] << 8) | data[3]
    if data[4:8] != _COOKIE_BYTES:
        raise ValueError("STUN magic cookie is missing")
    if length & 3:
        raise ValueError(f"STUN message length {length} is not a multiple of 4")
    if length != n - 20:
        raise ValueError(f"STUN length field says {length} bytes, message body has {n - 20}")
    attrs: list[tuple[int, int, int]] = []
    pos = 20
    while pos < n:
        if pos + 4 > n:
            raise ValueError("STUN attribute header is truncated")
        attr_type, attr_len = _ATTR.unpack_from(data, pos)
        start = pos + 4
        if start + attr_len > n:
            raise ValueError(f"STUN attribute {attr_type:#06x} is truncated")
        attrs.append((attr_type, start, attr_len))
        pos = start + ((attr_len + 3) & ~3)
    return attrs


class StunMessage:
    """A STUN message (RFC 8489 §5-6): method, class, 12-byte transaction id and the ordered
    attributes as ``(type, value)`` with padding removed.
    """

    __slots__ = ("attributes", "method", "msg_class", "transaction_id")

    def __init__(
        self,
        method: int,
        msg_class: int,
        transaction_id: bytes,
        attributes: list[tuple[int, bytes]] | None = None,
    ) -> None:
        if len(transaction_id) != 12:
            raise ValueError("STUN transaction id must be 12 bytes")
        self.method = method
        self.msg_class = msg_class
        self.transaction_id = transaction_id
        self.attributes: list[tuple[int, bytes]] = [] if attributes is None else attributes

    def __repr__(self) -> str:
        return (
            f"StunMessage(method={self.method:#x}, class={self.msg_class}, "
            f"tid={self.transaction_id.hex()}, attributes={self.attributes!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StunMessage):
            return NotImplemented
        return (
            self.method == other.method
            and self.msg_class == other.msg_class
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def parse(cls, data: bytes) -> StunMessage:
        """Parse a STUN message (RFC 8489 §5, §14). Raises ValueError when it is not one."""
        attrs = _walk(data)
        message_type, _, _, tid = _HEADER.unpack_from(data, 0)
        method, msg_class = _split_type(message_type)
        return cls(
            method,
            msg_class,
            tid,
            [(t, bytes(data[start : start + ln])) for t, start, ln in attrs],
        )

    def get(self, attr: int) -> bytes | None:
        """The value of the first attribute of type ``attr``, or None."""
        for t, value in self.attributes:
            if t == attr:
                return value
        return None

    def integrity_covered(self) -> StunMessage:
        """The message as MESSAGE-INTEGRITY vouches for it: the attributes before it.

        RFC 8489 §14.5: agents MUST ignore every attribute after MESSAGE-INTEGRITY except
        FINGERPRINT, so an attacker who appends USE-CANDIDATE to a captured request changes
        nothing. Without MESSAGE-INTEGRITY, nothing is covered.
        """
        covered: list[tuple[int, bytes]] = []
        for attr_type, value in self.attributes:
            if attr_type == MESSAGE_INTEGRITY:
                return StunMessage(self.method, self.msg_class, self.transaction_id, covered)
            covered.append((attr_type, value))
        return StunMessage(self.method, self.msg_class, self.transaction_id, [])

    @property
    def username(self) -> str | None:
        """The USERNAME attribute as text (None when absent or not UTF-8)."""
        value = self.get(USERNAME)
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None

    def encode(self, integrity_key: bytes | None = None, fingerprint: bool = True) -> bytes:
        """Serialise the message. Existing MESSAGE-INTEGRITY / FINGERPRINT attributes are
        dropped; MESSAGE-INTEGRITY is appended when ``integrity_key`` is given (HMAC-SHA1 with
        the length field covering it, RFC 8489 §14.5), then FINGERPRINT (CRC-32 xor
        0x5354554E, §14.7).
        """
        body = bytearray()
        for attr_type, value in self.attributes:
            if attr_type in (MESSAGE_INTEGRITY, FINGERPRINT):
                continue
            body += _ATTR.pack(attr_type, len(value))
            body += value
            rem = len(value) & 3
            if rem:
                body += b"\x00" * (4 - rem)
        message_type = _message_type(self.method, self.msg_class)
        if integrity_key is not None:
            header = _HEADER.pack(message_type, len(body) + 24, MAGIC_COOKIE, self.transaction_id)
            mac = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
            body += _ATTR.pack(MESSAGE_INTEGRITY, 20) + mac
        if fingerprint:
            header = _HEADER.pack(message_type, len(body) + 8, MAGIC_COOKIE, self.transaction_id)
            crc = binascii.crc32(header + body) ^ _FINGERPRINT_XOR
            body += _ATTR.pack(FINGERPRINT, 4) + crc.to_bytes(4, "big")
        return _HEADER.pack(message_type, len(body), MAGIC_COOKIE, self.transaction_id) + body


def check_integrity(data: bytes, key: bytes) -> bool:
    """Verify MESSAGE-INTEGRITY on the raw received bytes (RFC 8489 §14.5): the HMAC covers
    everything before the attribute, with the length field set as if the message ended right
    after it (so a trailing FINGERPRINT is excluded). False when absent or the message is
    malformed.
    """
    try:
        attrs = _walk(data)
    except ValueError:
        return False
    for attr_type, start, length in attrs:
        if attr_type == MESSAGE_INTEGRITY:
            if length != 20:
                return False
            end = start - 4
            header = bytes(data[0:2]) + (end + 24 - 20).to_bytes(2, "big") + bytes(data[4:20])
            mac = hmac.new(key, header + bytes(data[20:end]), hashlib.sha1).digest()
            return hmac.compare_digest(mac, bytes(data[start : start + 20]))
    return False


def check_fingerprint(data: bytes) -> bool:
    """Verify FINGERPRINT (RFC 8489 §14.7); it must be the last attribute. False when absent,
    misplaced or wrong.
    """
    try:
        attrs = _walk(data)
    except ValueError:
        return False
    if not attrs:
        return False
    attr_type, start, length = attrs[-1]
    if attr_type != FINGERPRINT or length != 4:
        return False
    crc = binascii.crc32(data[: start - 4]) ^ _FINGERPRINT_XOR
    return crc == int.from_bytes(data[start : start + 4], "big")


def xor_address(addr: tuple[str, int], transaction_id: bytes) -> bytes:
    """Encode an XOR-MAPPED-ADDRESS value (RFC 8489 §14.2) for IPv4 or IPv6."""
    host, port = addr[0], addr[1]
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    xport = (port ^ (MAGIC_COOKIE >> 16)) & 0xFFFF
    if ip.version == 4:
        xaddr = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, 1, xport, xaddr)
    mask = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
    return struct.pack("!BBH", 0, 2, xport) + (int(ip) ^ mask).to_bytes(16, "big")


def parse_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """Decode an XOR-MAPPED-ADDRESS value (RFC 8489 §14.2). Raises ValueError if malformed."""
    if len(value) < 4:
        raise ValueError("XOR-MAPPED-ADDRESS is truncated")
    family = value[1]
    port = ((value[2] << 8) | value[3]) ^ (MAGIC_COOKIE >> 16)
    if family == 1:
        if len(value) != 8:
            raise ValueError("XOR-MAPPED-ADDRESS IPv4 value must be 8 bytes")
        raw = int.from_bytes(value[4:8], "big") ^ MAGIC_COOKIE
        return str(ipaddress.IPv4Address(raw)), port
    if family == 2:
        if len(value) != 20:
            raise ValueError("XOR-MAPPED-ADDRESS IPv6 value must be 20 bytes")
        if len(transaction_id) != 12:
            raise ValueError("STUN transaction id must be 12 bytes")
        mask = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
        raw = int.from_bytes(value[4:20], "big") ^ mask
        return str(ipaddress.IPv6Address(raw)), port
    raise ValueError(f"XOR-MAPPED-ADDRESS has unknown address family {family}")


def binding_success(request: StunMessage, addr: tuple[str, int], integrity_key: bytes) -> bytes:
    """A Binding success response to ``request`` reporting ``addr`` (RFC 8445 §7.3.1.1), with
    MESSAGE-INTEGRITY and FINGERPRINT.
    """
    response = StunMessage(
        BINDING,
        SUCCESS,
        request.transaction_id,
        [(XOR_MAPPED_ADDRESS, xor_address(addr, request.transaction_id))],
    )
    return response.encode(integrity_key, fingerprint=True)


def binding_error(
    request: StunMessage, code: int, reason: str, integrity_key: bytes | None
) -> bytes:
    """A Binding error response with ERROR-CODE (RFC 8489 §14.8), e.g. 400 Bad Request,
    401 Unauthorized, 487 Role Conflict (RFC 8445 §7.3.1.1).
    """
    if not 300 <= code <= 699:
        raise ValueError(f"STUN error code {code} is outside 300..699")
    value = (
        struct.pack("!HBB", 0, code // 100, code % 100)
        + reason.encode()[:763].decode(errors="ignore").encode()
    )
    response = StunMessage(BINDING, ERROR, request.transaction_id, [(ERROR_CODE, value)])
    return response.encode(integrity_key, fingerprint=True)
