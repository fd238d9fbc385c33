"""Picture size of a video stream read from RTP payloads, without decoding.

- VP8: the key frame header after the RFC 7741 §4.2 payload descriptor (RFC 6386 §9.1: frame
  tag, start code ``9d 01 2a``, 14-bit width and height, little-endian).
- H.264: the sequence parameter set (ITU-T H.264 §7.3.2.1.1) carried as a single NAL unit or
  inside a STAP-A (RFC 6184 §5.6, §5.7.1); the size is the macroblock grid minus cropping.
- VP9: the scalability structure of the RFC 9628 §4.2 payload descriptor (V=1), sent by
  encoders with every key frame.

AV1 is not parsed (the size sits in the sequence header OBU): :func:`frame_size` returns None.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameSize", "H264Sps", "frame_size", "vp8_frame_size", "vp9_frame_size"]

_VP8_START_CODE = b"\x9d\x01\x2a"
_H264_SPS = 7
_H264_STAP_A = 24
# profile_idc values whose SPS carries chroma_format_idc and friends (H.264 §7.3.2.1.1)
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@dataclass(frozen=True)
class FrameSize:
    """Width and height in pixels."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def _vp8_descriptor_length(p: bytes) -> int:
    """Length of the RFC 7741 §4.2 payload descriptor at the start of *p*."""
    if not p:
        raise ValueError("VP8 payload is empty")
    pos = 1
    if p[0] & 0x80:  # X
        if len(p) < 2:
            raise ValueError("VP8 descriptor truncated in the extension byte")
        x = p[1]
        pos = 2
        if x & 0x80:  # I: PictureID (M bit: 15 bits)
            if pos >= len(p):
                raise ValueError("VP8 descriptor truncated in the PictureID")
            pos += 2 if p[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    if pos > len(p):
        raise ValueError("VP8 descriptor longer than the payload")
    return pos


def vp8_frame_size(payload: bytes) -> FrameSize | None:
    """Size from the first packet of a VP8 key frame; None for other packets.

    Raises ValueError when the packet claims to start a key frame but its header is broken.
    """
    pos = _vp8_descriptor_length(payload)
    if not payload[0] & 0x10 or payload[0] & 0x07:  # S=1 and PID=0: the frame's first bytes
        return None
    frame = payload[pos:]
    if len(frame) < 3 or frame[0] & 0x01:  # P bit set: inter frame
        return None
    if len(frame) < 10:
        raise ValueError(f"VP8 key frame header truncated ({len(frame)} of 10 bytes)")
    if frame[3:6] != _VP8_START_CODE:
        raise ValueError(f"VP8 key frame start code is {frame[3:6].hex()}, not 9d012a")
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if not width or not height:
        raise ValueError("VP8 key frame with a zero dimension")
    return FrameSize(width, height)


def vp9_frame_size(payload: bytes) -> FrameSize | None:
    """Size of the highest spatial layer in the RFC 9628 §4.2 scalability structure, if any."""
    if not payload:
        raise ValueError("VP9 payload is empty")
    b0 = payload[0]
    if not b0 & 0x02:  # V: no scalability structure in this packet
        return None
    i_bit, p_bit, l_bit, f_bit = b0 & 0x80, b0 & 0x40, b0 & 0x20, b0 & 0x10
    pos = 1
    if i_bit:
        if pos >= len(payload):
            raise ValueError("VP9 descriptor truncated in the picture ID")
        pos += 2 if payload[pos] & 0x80 else 1
    if l_bit:
        pos += 1 if f_bit else 2  # TID/U/SID/D, plus TL0PICIDX in non-flexible mode
    if f_bit and p_bit:
        for _ in range(3):  # up to three P_DIFF bytes, N bit says another follows
            if pos >= len(payload):
                raise ValueError("VP9 descriptor truncated in the reference indices")
            more = payload[pos] & 0x01
            pos += 1
            if not more:
                break
    if pos >= len(payload):
        raise ValueError("VP9 descriptor truncated before the scalability structure")
    ss = payload[pos]
    layers = (ss >> 5) + 1
    if not ss & 0x10:  # Y: no resolutions present
        return None
    pos += 1
    end = pos + 4 * layers
    if end > len(payload):
        raise ValueError(f"VP9 scalability structure truncated ({layers} layer sizes)")
    last = end - 4
    width = int.from_bytes(payload[last : last + 2], "big")
    height = int.from_bytes(payload[last + 2 : last + 4], "big")
    if not width or not height:
        raise ValueError("VP9 scalability structure with a zero dimension")
    return FrameSize(width, height)


class _BitReader:
    """MSB-first bit reader with Exp-Golomb codes (H.264 §9.1)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("H.264 SPS truncated")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("H.264 SPS has an Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """Remove emulation prevention bytes (00 00 03 -> 00 00), H.264 §7.4.1."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True)
class H264Sps:
    """The fields of a sequence parameter set that give the picture size (H.264 §7.3.2.1.1)."""

    profile_idc: int
    level_idc: int
    width: int
    height: int

    @classmethod
    def parse(cls, nal: bytes) -> H264Sps:
        """Parse an SPS NAL unit, header byte included."""
        if not nal or nal[0] & 0x1F != _H264_SPS:
            raise ValueError("not an H.264 SPS NAL unit (type 7)")
        r = _BitReader(_unescape(nal[1:]))
        profile_idc = r.u(8)
        r.u(8)  # constraint flags
        level_idc = r.u(8)
        r.ue()  # seq_parameter_set_id
        chroma_format_idc = 1
        separate_planes = 0
        if profile_idc in _H264_HIGH_PROFILES:
            chroma_format_idc = r.ue()
            if chroma_format_idc > 3:
                raise ValueError(f"H.264 SPS chroma_format_idc {chroma_format_idc} > 3")
            if chroma_format_idc == 3:
                separate_planes = r.u(1)
            r.ue()  # bit_depth_luma_minus8
            r.ue()  # bit_depth_chroma_minus8
            r.u(1)  # qpprime_y_zero_transform_bypass_flag
            if r.u(1):  # seq_scaling_matrix_present_flag
                for i in range(8 if chroma_format_idc != 3 else 12):
                    if r.u(1):
                        size = 16 if i < 6 else 64
                        last, nxt = 8, 8
                        for _ in range(size):
                            if nxt:
                                nxt = (last + r.se() + 256) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif poc_type == 1:
            r.u(1)
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        elif poc_type != 2:
            raise ValueError(f"H.264 SPS pic_order_cnt_type {poc_type} > 2")
        r.ue()  # max_num_ref_frames
        r.u(1)  # gaps_in_frame_num_value_allowed_flag
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)  # mb_adaptive_frame_field_flag
        r.u(1)  # direct_8x8_inference_flag
        crop = (0, 0, 0, 0)
        if r.u(1):  # frame_cropping_flag
            crop = (r.ue(), r.ue(), r.ue(), r.ue())
        # Table 6-1 and equations 7-19..7-22: the crop unit depends on the chroma format.
        if chroma_format_idc == 0 or separate_planes:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            unit_x = 1 if chroma_format_idc == 3 else 2
            unit_y = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
        width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
        height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
        if width <= 0 or height <= 0:
            raise ValueError(f"H.264 SPS crops the picture to {width}x{height}")
        return cls(profile_idc, level_idc, width, height)


def _h264_sps_units(payload: bytes) -> list[bytes]:
    """SPS NAL units in a single-NAL or STAP-A packet (RFC 6184 §5.6, §5.7.1)."""
    if not payload:
        raise ValueError("H.264 payload is empty")
    nal_type = payload[0] & 0x1F
    if nal_type == _H264_SPS:
        return [payload]
    units: list[bytes] = []
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 <= len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(payload):
                raise ValueError("H.264 STAP-A unit runs past the end of the packet")
            if payload[pos] & 0x1F == _H264_SPS:
                units.append(payload[pos : pos + size])
            pos += size
    return units


def frame_size(codec: str, payload: bytes) -> FrameSize | None:
    """The picture size announced by this RTP payload, or None (never raises).

    *codec* is the lowercase encoding name: ``vp8``, ``vp9``, ``h264`` (``av1``: None).
    """
    try:
        if codec == "vp8":
            return vp8_frame_size(payload)
        if codec == "vp9":
            return vp9_frame_size(payload)
        if codec == "h264":
            for unit in _h264_sps_units(payload):
                sps = H264Sps.parse(unit)
                return FrameSize(sps.width, sps.height)
    except ValueError:
        return None
    return None
