"""Keyframe detection on RTP payloads, without decoding (RFC 7741 VP8, RFC 6184 H.264,
RFC 9628 VP9, the AV1 RTP payload specification).

Codec names are lowercase rtpmap encoding names ("vp8", "h264", "vp9", "av1"). The functions
never raise: a payload that is too short or malformed is simply not a keyframe.
"""

from __future__ import annotations

__all__ = ["is_keyframe_packet", "is_keyframe_start"]

_H264_IDR = 5
_H264_SPS = 7
_H264_PPS = 8
_H264_STAP_A = 24
_H264_FU_A = 28


def _vp8_keyframe_start(p: bytes) -> bool:
    """RFC 7741 §4.2 payload descriptor then §4.3 payload header: S=1, PID=0 and P=0."""
    n = len(p)
    if n < 1:
        return False
    b0 = p[0]
    if not b0 & 0x10 or b0 & 0x07:  # S bit, partition index
        return False
    pos = 1
    if b0 & 0x80:  # X: extended control bits
        if n < 2:
            return False
        x = p[1]
        pos = 2
        if x & 0x80:  # I: PictureID, 7 or 15 bits (M bit)
            if pos >= n:
                return False
            pos += 2 if p[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX byte
            pos += 1
    if pos >= n:
        return False
    return not p[pos] & 0x01  # P bit of the VP8 payload header: 0 = key frame


def _h264_first_slice(first_byte: int) -> bool:
    """first_mb_in_slice == 0: the slice header starts with ue(v) 0, i.e. a single 1 bit."""
    return bool(first_byte & 0x80)


def _h264_stap_a_units(p: bytes) -> list[tuple[int, int]]:
    """(NAL type, offset) of the units inside a STAP-A (RFC 6184 §5.7.1); stops at a
    truncated unit.
    """
    units: list[tuple[int, int]] = []
    pos = 1
    n = len(p)
    while pos + 2 < n:
        size = (p[pos] << 8) | p[pos + 1]
        pos += 2
        if size == 0 or pos + size > n:
            break
        units.append((p[pos] & 0x1F, pos))
        pos += size
    return units


def _h264_unit_starts(p: bytes, nal: int, pos: int, end: int) -> bool:
    """Is the NAL unit of type ``nal`` whose header is at ``pos`` the start of a keyframe?"""
    if nal == _H264_SPS:
        return True
    return nal == _H264_IDR and pos + 1 < end and _h264_first_slice(p[pos + 1])


def _h264(p: bytes, start_only: bool) -> bool:
    """RFC 6184: single NAL unit (§5.6), STAP-A (§5.7.1) and FU-A (§5.8) packets."""
    n = len(p)
    if not n:
        return False
    members = (_H264_IDR, _H264_SPS, _H264_PPS)
    nal = p[0] & 0x1F
    if 1 <= nal <= 23:
        return _h264_unit_starts(p, nal, 0, n) if start_only else nal in members
    if nal == _H264_STAP_A:
        units = _h264_stap_a_units(p)
        if start_only:
            return any(_h264_unit_starts(p, t, pos, n) for t, pos in units)
        return any(t in members for t, _ in units)
    if nal == _H264_FU_A:
        if n < 2:
            return False
        fu = p[1]
        if not start_only:
            return (fu & 0x1F) in members
        if not fu & 0x80:
            return False
        inner = fu & 0x1F
        if inner == _H264_SPS:
            return True
        return inner == _H264_IDR and n > 2 and _h264_first_slice(p[2])
    return False


def _vp9_keyframe_start(p: bytes) -> bool:
    """RFC 9628 §4.2: B=1 (start of frame), P=0 (not inter-picture predicted) and, when layer
    indices are present, spatial layer 0.
    """
    n = len(p)
    if n < 1:
        return False
    b0 = p[0]
    if not b0 & 0x08 or b0 & 0x40:  # B bit set, P bit clear
        return False
    pos = 1
    if b0 & 0x80:  # I: picture id, 7 or 15 bits
        if pos >= n:
            return False
        pos += 2 if p[pos] & 0x80 else 1
    if b0 & 0x20:  # L: layer indices
        if pos >= n:
            return False
        if (p[pos] >> 1) & 0x07:  # SID
            return False
        pos += 1
        if not b0 & 0x10:  # non-flexible mode carries TL0PICIDX
            pos += 1
    return pos <= n


def _av1_keyframe_start(p: bytes) -> bool:
    """AV1 RTP payload spec §4.4: N=1 in the aggregation header marks the first packet of a
    coded video sequence (a keyframe with its sequence header).
    """
    return len(p) >= 2 and bool(p[0] & 0x08)


def is_keyframe_start(codec: str, payload: bytes) -> bool:
    """True iff this RTP payload carries the start of a keyframe.

    For H.264 that is an SPS, or the first slice (first_mb_in_slice 0) of an IDR picture, alone,
    in a STAP-A or as the first FU-A fragment; an encoder that sends SPS, PPS and IDR in
    separate packets therefore yields two start packets with the same RTP timestamp, which
    callers should treat as one keyframe.
    """
    try:
        if codec == "vp8":
            return _vp8_keyframe_start(payload)
        if codec == "h264":
            return _h264(payload, True)
        if codec == "vp9":
            return _vp9_keyframe_start(payload)
        if codec == "av1":
            return _av1_keyframe_start(payload)
    except (IndexError, TypeError):  # pragma: no cover - defensive, the parsers bound-check
        return False
    return False


def is_keyframe_packet(codec: str, payload: bytes) -> bool:
    """True when this RTP payload belongs to a keyframe as far as the payload alone tells: for
    H.264 any SPS/PPS/IDR NAL unit (FU-A fragments of an IDR regardless of the S bit); for the
    other codecs only the first packet of a keyframe is recognisable.
    """
    if codec == "h264":
        try:
            return _h264(payload, False)
        except (IndexError, TypeError):  # pragma: no cover
            return False
    return is_keyframe_start(codec, payload)
