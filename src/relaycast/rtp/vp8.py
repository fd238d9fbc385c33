"""The VP8 RTP payload descriptor (RFC 7741 §4.2): read it, and rewrite its picture id and
TL0PICIDX in place.

::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID | (REQUIRED)
    +-+-+-+-+-+-+-+-+
    |I|L|T|K| RSV   | (OPTIONAL, present when X)
    +-+-+-+-+-+-+-+-+
    |M| PictureID   | (OPTIONAL, present when I; M: 15 bits, a second byte follows)
    +-+-+-+-+-+-+-+-+
    |   TL0PICIDX   | (OPTIONAL, present when L)
    +-+-+-+-+-+-+-+-+
    |TID|Y| KEYIDX  | (OPTIONAL, present when T or K)
    +-+-+-+-+-+-+-+-+

The functions never raise: a payload too short for what its flags announce has no descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Vp8Descriptor", "parse_descriptor", "with_ids"]


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    """What a packet's descriptor says; ``*_at`` are byte offsets into the payload."""

    #: the PictureID, or None when the I bit is clear
    picture_id: int | None
    #: 7 or 15 (the M bit), 0 without a picture id
    picture_id_bits: int
    picture_id_at: int
    #: TL0PICIDX, or None when the L bit is clear
    tl0: int | None
    tl0_at: int
    #: the temporal layer index (T bit), None without one
    tid: int | None
    #: S=1 and PID=0: the first packet of a frame (RFC 7741 §4.2)
    frame_start: bool


def parse_descriptor(payload: bytes) -> Vp8Descriptor | None:
    """The descriptor at the start of ``payload``; None if the payload is too short for it."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    frame_start = bool(b0 & 0x10) and not b0 & 0x07
    picture_id: int | None = None
    bits = 0
    picture_id_at = tl0_at = 0
    tl0: int | None = None
    tid: int | None = None
    if b0 & 0x80:  # X
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:  # I
            if pos >= n:
                return None
            picture_id_at = pos
            if payload[pos] & 0x80:  # M: 15 bits
                if pos + 1 >= n:
                    return None
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                bits = 15
                pos += 2
            else:
                picture_id = payload[pos] & 0x7F
                bits = 7
                pos += 1
        if x & 0x40:  # L
            if pos >= n:
                return None
            tl0_at = pos
            tl0 = payload[pos]
            pos += 1
        if x & 0x30:  # T or K
            if pos >= n:
                return None
            if x & 0x20:
                tid = payload[pos] >> 6
            pos += 1
    return Vp8Descriptor(picture_id, bits, picture_id_at, tl0, tl0_at, tid, frame_start)


def with_ids(
    payload: bytes, descriptor: Vp8Descriptor, picture_id: int | None, tl0: int | None
) -> bytes:
    """``payload`` with its picture id and TL0PICIDX replaced (modulo their field widths);
    None leaves a field as it is, and a field the descriptor does not have stays absent."""
    out = bytearray(payload)
    if picture_id is not None and descriptor.picture_id is not None:
        at = descriptor.picture_id_at
        if descriptor.picture_id_bits == 15:
            value = picture_id & 0x7FFF
            out[at] = 0x80 | (value >> 8)
            out[at + 1] = value & 0xFF
        else:
            out[at] = picture_id & 0x7F
    if tl0 is not None and descriptor.tl0 is not None:
        out[descriptor.tl0_at] = tl0 & 0xFF
    return bytes(out)
