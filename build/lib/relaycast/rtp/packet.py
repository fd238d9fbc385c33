"""RTP packets (RFC 3550 §5.1) with RFC 8285 header extensions, and RTX (RFC 4588).

``RtpPacket.parse`` runs once for every packet that arrives, so it is written for speed:
``struct.unpack_from`` on the buffer, one slice for the payload, header extensions parsed
eagerly into a list of ``(id, value)`` pairs.
"""

from __future__ import annotations

import struct

__all__ = [
    "EXTENSION_PROFILE_ONE_BYTE",
    "EXTENSION_PROFILE_TWO_BYTE",
    "RTP_HEADER_LENGTH",
    "RtpPacket",
    "build_extensions",
    "is_rtcp",
    "parse_extensions",
    "unwrap_rtx",
    "wrap_rtx",
]

RTP_HEADER_LENGTH = 12
EXTENSION_PROFILE_ONE_BYTE = 0xBEDE  # RFC 8285 §4.2
EXTENSION_PROFILE_TWO_BYTE = 0x1000  # RFC 8285 §4.3; the low 4 bits are "appbits"

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")


def _is_two_byte_profile(profile: int) -> bool:
    return (profile & 0xFFF0) == EXTENSION_PROFILE_TWO_BYTE


def _parse_one_byte(data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    """RFC 8285 §4.2 elements in ``data[pos:end]``: id 0 bytes are padding, id 15 stops."""
    items: list[tuple[int, bytes]] = []
    while pos < end:
        b = data[pos]
        ext_id = b >> 4
        if ext_id == 0:  # padding; a stray length nibble is ignored, as libwebrtc does
            pos += 1
            continue
        if ext_id == 15:
            break
        stop = pos + 2 + (b & 0x0F)
        if stop > end:
            raise ValueError("RTP one-byte header extension overruns the extension block")
        items.append((ext_id, data[pos + 1 : stop]))
        pos = stop
    return items


def _parse_two_byte(data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    """RFC 8285 §4.3 elements in ``data[pos:end]``: id 0 bytes are padding."""
    items: list[tuple[int, bytes]] = []
    while pos < end:
        ext_id = data[pos]
        if ext_id == 0:
            pos += 1
            continue
        if pos + 2 > end:
            raise ValueError("RTP two-byte header extension is truncated")
        stop = pos + 2 + data[pos + 1]
        if stop > end:
            raise ValueError("RTP two-byte header extension overruns the extension block")
        items.append((ext_id, data[pos + 2 : stop]))
        pos = stop
    return items


def _parse_block(profile: int, data: bytes, pos: int, end: int) -> list[tuple[int, bytes]]:
    if profile == EXTENSION_PROFILE_ONE_BYTE:
        return _parse_one_byte(data, pos, end)
    if (profile & 0xFFF0) == EXTENSION_PROFILE_TWO_BYTE:
        return _parse_two_byte(data, pos, end)
    return [(0, bytes(data[pos:end]))] if end > pos else []


def parse_extensions(profile: int, block: bytes) -> list[tuple[int, bytes]]:
    """Parse an RTP header extension block (RFC 8285 §4.2 one-byte, §4.3 two-byte form).

    Padding bytes (id 0, whatever their length nibble) are skipped; in the one-byte form id 15
    stops parsing (§4.2). Any other
    profile is a generic RFC 3550 §5.3.1 extension and is returned whole as ``[(0, block)]``.
    Raises ValueError when an element runs past the end of the block.
    """
    return _parse_block(profile, block, 0, len(block))


def _pad4(block: bytes) -> bytes:
    rem = len(block) & 3
    return block + b"\x00" * (4 - rem) if rem else block


def _build_one_byte(items: list[tuple[int, bytes]]) -> bytes | None:
    """One-byte form (RFC 8285 §4.2), or None when an item does not fit it."""
    out = bytearray()
    for ext_id, value in items:
        length = len(value)
        if not 0 < ext_id < 15 or not 0 < length <= 16:
            return None
        out.append((ext_id << 4) | (length - 1))
        out += value
    rem = len(out) & 3
    if rem:
        out += b"\x00" * (4 - rem)
    return bytes(out)


def _build_two_byte(items: list[tuple[int, bytes]]) -> bytes:
    parts: list[bytes] = []
    for ext_id, value in items:
        if not 1 <= ext_id <= 255 or len(value) > 255:
            raise ValueError(f"RTP header extension id {ext_id} / length {len(value)} invalid")
        parts.append(bytes((ext_id, len(value))))
        parts.append(value)
    return _pad4(b"".join(parts))


def build_extensions(items: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """Encode header extensions (RFC 8285), choosing the one-byte form when every id is 1..14
    and every value 1..16 bytes, the two-byte form otherwise. Returns ``(profile, block)`` with
    the block zero-padded to a multiple of 4 bytes; ``(0, b"")`` when ``items`` is empty.
    """
    if not items:
        return 0, b""
    block = _build_one_byte(items)
    if block is not None:
        return EXTENSION_PROFILE_ONE_BYTE, block
    return EXTENSION_PROFILE_TWO_BYTE, _build_two_byte(items)


class RtpPacket:
    """An RTP packet (RFC 3550 §5.1).

    ``extension_profile`` is 0 when the packet has no extension block; ``extensions`` is the
    ordered list of ``(id, value)`` pairs (RFC 8285), or ``[(0, raw_block)]`` for a non-RFC 8285
    profile. ``padding_size`` counts the padding bytes including the final count byte
    (RFC 3550 §5.1 P bit); padding is serialised as zeros followed by the count.
    """

    __slots__ = (
        "csrc",
        "extension_profile",
        "extensions",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        marker: bool = False,
        payload_type: int = 0,
        sequence_number: int = 0,
        timestamp: int = 0,
        ssrc: int = 0,
        csrc: list[int] | None = None,
        extension_profile: int = 0,
        extensions: list[tuple[int, bytes]] | None = None,
        payload: bytes = b"",
        padding_size: int = 0,
    ) -> None:
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrc: list[int] = [] if csrc is None else csrc
        self.extension_profile = extension_profile
        self.extensions: list[tuple[int, bytes]] = [] if extensions is None else extensions
        self.payload = payload
        self.padding_size = padding_size

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence_number}, "
            f"ts={self.timestamp}, ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"ext={self.extensions!r}, {len(self.payload)} bytes payload, "
            f"padding={self.padding_size})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return (
            self.marker == other.marker
            and self.payload_type == other.payload_type
            and self.sequence_number == other.sequence_number
            and self.timestamp == other.timestamp
            and self.ssrc == other.ssrc
            and self.csrc == other.csrc
            and self.extension_profile == other.extension_profile
            and self.extensions == other.extensions
            and self.payload == other.payload
            and self.padding_size == other.padding_size
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet (RFC 3550 §5.1). Raises ValueError on malformed input."""
        n = len(data)
        if n < RTP_HEADER_LENGTH:
            raise ValueError(f"RTP packet is {n} bytes, shorter than the 12-byte header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data, 0)
        if b0 >> 6 != 2:
            raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
        pos = RTP_HEADER_LENGTH
        cc = b0 & 0x0F
        if cc:
            pos += 4 * cc
            if pos > n:
                raise ValueError(f"RTP packet too short for its {cc} CSRC identifiers")
            csrc = list(struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LENGTH))
        else:
            csrc = []
        profile = 0
        extensions: list[tuple[int, bytes]]
        if b0 & 0x10:
            if pos + 4 > n:
                raise ValueError("RTP extension header is truncated")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            pos += 4
            end = pos + 4 * words
            if end > n:
                raise ValueError("RTP extension block runs past the end of the packet")
            extensions = _parse_block(profile, data, pos, end) if words else []
            pos = end
        else:
            extensions = []
        if b0 & 0x20:
            padding = data[n - 1]
            if padding == 0:
                raise ValueError("RTP padding count is zero")
            if padding > n - pos:
                raise ValueError("RTP padding is larger than the payload")
            end = n - padding
        else:
            padding = 0
            end = n

        packet = cls.__new__(cls)
        packet.marker = bool(b1 & 0x80)
        packet.payload_type = b1 & 0x7F
        packet.sequence_number = seq
        packet.timestamp = ts
        packet.ssrc = ssrc
        packet.csrc = csrc
        packet.extension_profile = profile
        packet.extensions = extensions
        packet.payload = data[pos:end]
        packet.padding_size = padding
        return packet

    def _extension_block(self) -> tuple[int, bytes]:
        items = self.extensions
        profile = self.extension_profile
        if not items:
            return profile, b""
        if len(items) == 1 and items[0][0] == 0:
            # a generic RFC 3550 §5.3.1 extension (any profile, 0 included) kept whole
            return profile, _pad4(items[0][1])
        if profile in (0, EXTENSION_PROFILE_ONE_BYTE):
            return build_extensions(items)
        if _is_two_byte_profile(profile):
            return profile, _build_two_byte(items)
        raise ValueError(f"cannot encode RFC 8285 extensions with profile {profile:#06x}")

    def __bytes__(self) -> bytes:
        """Serialise canonically (extensions per ``build_extensions``, zero padding)."""
        csrc = self.csrc
        padding = self.padding_size
        b0 = 0x80 | len(csrc)
        if padding:
            b0 |= 0x20
        if self.extensions or self.extension_profile:
            profile, block = self._extension_block()
            b0 |= 0x10
            ext = _EXT_HEADER.pack(profile, len(block) >> 2) + block
        else:
            ext = b""
        header = _HEADER.pack(
            b0,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        if csrc:
            header += struct.pack(f"!{len(csrc)}I", *csrc)
        if padding:
            return b"".join((header, ext, self.payload, b"\x00" * (padding - 1), bytes((padding,))))
        return b"".join((header, ext, self.payload))

    def get_extension(self, ext_id: int) -> bytes | None:
        """The value of the first header extension with ``ext_id``, or None."""
        for i, value in self.extensions:
            if i == ext_id:
                return value
        return None

    def copy(self) -> RtpPacket:
        """A shallow copy with its own ``csrc`` and ``extensions`` lists."""
        return RtpPacket(
            marker=self.marker,
            payload_type=self.payload_type,
            sequence_number=self.sequence_number,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            csrc=list(self.csrc),
            extension_profile=self.extension_profile,
            extensions=list(self.extensions),
            payload=self.payload,
            padding_size=self.padding_size,
        )


def is_rtcp(data: bytes) -> bool:
    """RTP/RTCP demultiplexing on one port (RFC 5761 §4): RTCP packet types 192..223 occupy
    the second byte where RTP has marker + payload type.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def unwrap_rtx(packet: RtpPacket, original_pt: int, original_ssrc: int) -> RtpPacket:
    """Recover the original packet from an RTX retransmission (RFC 4588 §4): the first two
    payload bytes are the original sequence number. Raises ValueError if they are missing.
    """
    payload = packet.payload
    if len(payload) < 2:
        raise ValueError("RTX payload is shorter than the 2-byte original sequence number")
    return RtpPacket(
        marker=packet.marker,
        payload_type=original_pt,
        sequence_number=(payload[0] << 8) | payload[1],
        timestamp=packet.timestamp,
        ssrc=original_ssrc,
        csrc=list(packet.csrc),
        extension_profile=packet.extension_profile,
        extensions=list(packet.extensions),
        payload=payload[2:],
    )


def wrap_rtx(packet: RtpPacket, rtx_pt: int, rtx_ssrc: int, rtx_seq: int) -> RtpPacket:
    """Build an RTX retransmission of ``packet`` (RFC 4588 §4): original sequence number
    prepended to the payload, sent with the RTX payload type, SSRC and its own sequence number.
    """
    return RtpPacket(
        marker=packet.marker,
        payload_type=rtx_pt,
        sequence_number=rtx_seq & 0xFFFF,
        timestamp=packet.timestamp,
        ssrc=rtx_ssrc,
        csrc=list(packet.csrc),
        extension_profile=packet.extension_profile,
        extensions=list(packet.extensions),
        payload=_U16.pack(packet.sequence_number) + packet.payload,
    )
