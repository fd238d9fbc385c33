"""RTP payloads back into encoded frames, the inverse of the packetizers in
:mod:`relaycast.loadgen.media_clip` and of what browsers, OBS and FFmpeg send.

- VP8, RFC 7741 §4.2: strip the payload descriptor of every packet; the frame starts with S=1
  and partition index 0.
- VP9, RFC 9628 §4.2: strip the descriptor (picture id, layer indices, reference indices,
  scalability structure); B and E delimit a layer frame. Several spatial layers of one picture
  become a superframe (VP9 bitstream spec, Annex B) as WebM stores them.
- H.264, RFC 6184 §5.6 single NAL units, §5.7.1 STAP-A and §5.8 FU-A (packetization modes 0
  and 1) into an Annex B access unit with 4-byte start codes; the SPS and PPS are remembered and
  put in front of an IDR picture that arrives without them.
- AV1, the AV1 RTP payload specification §4.4-4.5: the aggregation header (Z, Y, W, N) and
  OBU elements (LEB128-length-prefixed, the last one without when W > 0), fragments joined
  across packets; the OBUs get their ``obu_size`` field back and temporal delimiters are
  dropped (the Matroska AV1 mapping stores a temporal unit without them).
- Opus, RFC 7587: one packet is one frame.

Every depacketizer raises :class:`ValueError` for a frame that cannot be whole (a missing start,
a fragment without its end); the recorder then waits for the next keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AV1_OBU_SEQUENCE_HEADER",
    "Depacketizer",
    "EncodedFrame",
    "H264Depacketizer",
    "depacketize_av1",
    "depacketize_vp8",
    "depacketize_vp9",
    "depacketizer_for",
    "frame_start",
    "h264_nal_units",
    "leb128",
    "split_annexb",
]

START_CODE = b"\x00\x00\x00\x01"
H264_IDR = 5
H264_SPS = 7
H264_PPS = 8
H264_STAP_A = 24
H264_FU_A = 28
AV1_OBU_SEQUENCE_HEADER = 1
AV1_OBU_TEMPORAL_DELIMITER = 2
AV1_OBU_TILE_LIST = 8
AV1_OBU_PADDING = 15


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame as a container stores it."""

    data: bytes
    keyframe: bool


# -- VP8 ----------------------------------------------------------------------------------------


def _vp8_descriptor(p: bytes) -> tuple[int, bool, int]:
    """(descriptor length, S bit, partition index) of an RFC 7741 §4.2 payload descriptor."""
    if not p:
        raise ValueError("VP8 payload is empty")
    b0 = p[0]
    pos = 1
    if b0 & 0x80:  # X
        if len(p) < 2:
            raise ValueError("VP8 descriptor truncated")
        x = p[1]
        pos = 2
        if x & 0x80:  # I: PictureID, M bit = 15 bits
            if pos >= len(p):
                raise ValueError("VP8 descriptor truncated")
            pos += 2 if p[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if pos > len(p):
        raise ValueError("VP8 descriptor longer than the payload")
    return pos, bool(b0 & 0x10), b0 & 0x07


def depacketize_vp8(payloads: list[bytes]) -> EncodedFrame:
    """The VP8 frame of one picture's payloads (in sequence order)."""
    if not payloads:
        raise ValueError("no VP8 payloads")
    parts: list[bytes] = []
    for i, p in enumerate(payloads):
        length, start, pid = _vp8_descriptor(p)
        if i == 0 and not (start and pid == 0):
            raise ValueError("VP8 frame does not begin with S=1, PID=0")
        parts.append(p[length:])
    data = b"".join(parts)
    if not data:
        raise ValueError("VP8 frame is empty")
    return EncodedFrame(data, not data[0] & 0x01)  # RFC 6386 §9.1: P bit 0 = key frame


# -- VP9 ----------------------------------------------------------------------------------------


def _vp9_descriptor(p: bytes) -> tuple[int, bool, bool, bool]:
    """(descriptor length, B, E, P) of an RFC 9628 §4.2 payload descriptor."""
    if not p:
        raise ValueError("VP9 payload is empty")
    b0 = p[0]
    n = len(p)
    pos = 1
    if b0 & 0x80:  # I: picture id, M bit = 15 bits
        if pos >= n:
            raise ValueError("VP9 descriptor truncated")
        pos += 2 if p[pos] & 0x80 else 1
    flexible = bool(b0 & 0x10)
    if b0 & 0x20:  # L: layer indices
        pos += 1 if flexible else 2  # TID/U/SID/D, then TL0PICIDX in non-flexible mode
    if flexible and b0 & 0x40:  # F and P: up to 3 P_DIFF bytes, N bit continues
        for _ in range(3):
            if pos >= n:
                raise ValueError("VP9 descriptor truncated")
            more = p[pos] & 0x01
            pos += 1
            if not more:
                break
    if b0 & 0x02:  # V: scalability structure
        if pos >= n:
            raise ValueError("VP9 descriptor truncated")
        ss = p[pos]
        pos += 1
        layers = (ss >> 5) + 1
        if ss & 0x10:  # Y: a width and height per spatial layer
            pos += 4 * layers
        if ss & 0x08:  # G: picture group description
            if pos >= n:
                raise ValueError("VP9 descriptor truncated")
            groups = p[pos]
            pos += 1
            for _ in range(groups):
                if pos >= n:
                    raise ValueError("VP9 descriptor truncated")
                refs = (p[pos] >> 2) & 0x03
                pos += 1 + refs
    if pos > n:
        raise ValueError("VP9 descriptor longer than the payload")
    return pos, bool(b0 & 0x08), bool(b0 & 0x04), bool(b0 & 0x40)


def _vp9_superframe(frames: list[bytes]) -> bytes:
    """Several layer frames of one picture as a VP9 superframe (VP9 bitstream spec, Annex B)."""
    largest = max(len(f) for f in frames)
    mag = 1 if largest < 1 << 8 else 2 if largest < 1 << 16 else 3 if largest < 1 << 24 else 4
    marker = 0xC0 | ((mag - 1) << 3) | (len(frames) - 1)
    index = bytes([marker]) + b"".join(len(f).to_bytes(mag, "little") for f in frames)
    return b"".join(frames) + index + bytes([marker])


def depacketize_vp9(payloads: list[bytes]) -> EncodedFrame:
    """The VP9 frame (or superframe of spatial layers) of one picture's payloads."""
    if not payloads:
        raise ValueError("no VP9 payloads")
    frames: list[bytes] = []
    current: list[bytes] | None = None
    keyframe = False
    for i, p in enumerate(payloads):
        length, begin, end, inter = _vp9_descriptor(p)
        if begin:
            if current is not None:
                raise ValueError("VP9 layer frame without its end (E) bit")
            current = []
            if i == 0:
                keyframe = not inter
        elif current is None:
            raise ValueError("VP9 frame does not begin with B=1")
        current.append(p[length:])
        if end:
            frames.append(b"".join(current))
            current = None
    if current is not None:
        raise ValueError("VP9 frame without its end (E) bit")
    if not frames or not all(frames):
        raise ValueError("VP9 frame is empty")
    data = frames[0] if len(frames) == 1 else _vp9_superframe(frames)
    return EncodedFrame(data, keyframe)


# -- H.264 --------------------------------------------------------------------------------------


def h264_nal_units(payloads: list[bytes]) -> list[bytes]:
    """The NAL units of one access unit's RTP payloads (RFC 6184 §5.6, §5.7.1, §5.8)."""
    units: list[bytes] = []
    fragment: bytearray | None = None
    for p in payloads:
        if not p:
            raise ValueError("H.264 payload is empty")
        nal = p[0] & 0x1F
        if fragment is not None and nal != H264_FU_A:
            raise ValueError("H.264 FU-A without its end fragment")
        if 1 <= nal <= 23:
            units.append(p)
        elif nal == H264_STAP_A:
            pos = 1
            while pos < len(p):
                if pos + 2 > len(p):
                    raise ValueError("H.264 STAP-A unit size truncated")
                size = (p[pos] << 8) | p[pos + 1]
                pos += 2
                if size == 0 or pos + size > len(p):
                    raise ValueError("H.264 STAP-A unit runs past the packet")
                units.append(p[pos : pos + size])
                pos += size
        elif nal == H264_FU_A:
            if len(p) < 2:
                raise ValueError("H.264 FU-A header truncated")
            fu = p[1]
            if fu & 0x80:
                if fragment is not None:
                    raise ValueError("H.264 FU-A start inside another fragmented unit")
                fragment = bytearray(((p[0] & 0xE0) | (fu & 0x1F),))
            elif fragment is None:
                raise ValueError("H.264 FU-A fragment without its start")
            fragment += p[2:]
            if fu & 0x40:
                units.append(bytes(fragment))
                fragment = None
        else:
            raise ValueError(f"H.264 packet type {nal} is not supported (STAP-B, MTAP, FU-B)")
    if fragment is not None:
        raise ValueError("H.264 FU-A without its end fragment")
    return units


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes of 3 or 4 bytes removed)."""
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        unit = data[start : len(data) if j == -1 else j]
        if j != -1 and unit.endswith(b"\x00"):
            unit = unit[:-1]
        if unit:
            units.append(unit)
        i = j
    return units


class H264Depacketizer:
    """Access units in Annex B; remembers the last SPS and PPS (:attr:`parameter_sets`)."""

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None

    @property
    def parameter_sets(self) -> bytes | None:
        """SPS and PPS in Annex B (the container's extradata), once both were seen."""
        if self.sps is None or self.pps is None:
            return None
        return START_CODE + self.sps + START_CODE + self.pps

    def __call__(self, payloads: list[bytes]) -> EncodedFrame:
        units = h264_nal_units(payloads)
        if not units:
            raise ValueError("H.264 access unit has no NAL units")
        types = [u[0] & 0x1F for u in units]
        for unit, kind in zip(units, types, strict=True):
            if kind == H264_SPS:
                self.sps = unit
            elif kind == H264_PPS:
                self.pps = unit
        keyframe = H264_IDR in types
        if keyframe and (H264_SPS not in types or H264_PPS not in types):
            if self.sps is None or self.pps is None:
                raise ValueError("H.264 IDR picture before any SPS and PPS")
            units = [self.sps, self.pps, *units]
        return EncodedFrame(b"".join(START_CODE + u for u in units), keyframe)


# -- AV1 ----------------------------------------------------------------------------------------


def leb128(value: int) -> bytes:
    """Unsigned LEB128 (AV1 spec §4.10.5)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError("AV1 LEB128 truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("AV1 LEB128 longer than 8 bytes")


def _av1_obu_with_size(obu: bytes) -> bytes | None:
    """An OBU element as a low-overhead bitstream OBU (with ``obu_size``); None to drop it."""
    if not obu:
        raise ValueError("AV1 OBU element is empty")
    header = obu[0]
    kind = (header >> 3) & 0x0F
    if kind in (AV1_OBU_TEMPORAL_DELIMITER, AV1_OBU_TILE_LIST, AV1_OBU_PADDING):
        return None
    head_len = 2 if header & 0x04 else 1  # obu_extension_flag
    if len(obu) < head_len:
        raise ValueError("AV1 OBU header truncated")
    if header & 0x02:  # already has obu_size
        size, start = _read_leb128(obu, head_len)
        if start + size > len(obu):
            raise ValueError("AV1 OBU size runs past its element")
        return obu[: start + size]
    payload = obu[head_len:]
    return bytes((header | 0x02,)) + obu[1:head_len] + leb128(len(payload)) + payload


def av1_obu_elements(payloads: list[bytes]) -> list[bytes]:
    """Whole OBU elements of one temporal unit's RTP payloads (fragments joined)."""
    elements: list[bytes] = []
    pending: bytearray | None = None
    for index, p in enumerate(payloads):
        if not p:
            raise ValueError("AV1 payload is empty")
        agg = p[0]
        z, y, w = bool(agg & 0x80), bool(agg & 0x40), (agg >> 4) & 0x03
        if z != (pending is not None):
            if index == 0 and z:
                raise ValueError("AV1 temporal unit begins with a continued OBU fragment")
            raise ValueError("AV1 fragment continuation does not match the previous packet")
        pos = 1
        count = 0
        items: list[bytes] = []
        while pos < len(p):
            count += 1
            if w and count == w:
                size = len(p) - pos
            else:
                size, pos = _read_leb128(p, pos)
            if pos + size > len(p):
                raise ValueError("AV1 OBU element runs past the packet")
            items.append(p[pos : pos + size])
            pos += size
        if w and count != w:
            raise ValueError(f"AV1 packet announces {w} OBU elements and has {count}")
        if not items:
            raise ValueError("AV1 packet without OBU elements")
        if pending is not None:
            pending += items[0]
            items[0] = bytes(pending)
            pending = None
        if y:
            pending = bytearray(items.pop())
        elements.extend(items)
    if pending is not None:
        raise ValueError("AV1 temporal unit ends inside a fragmented OBU")
    return elements


def depacketize_av1(payloads: list[bytes]) -> EncodedFrame:
    """The temporal unit (OBUs with sizes, no temporal delimiter) of one picture's payloads.

    A keyframe is a temporal unit whose first packet has N=1 or that carries a sequence header.
    """
    if not payloads:
        raise ValueError("no AV1 payloads")
    obus = [o for o in map(_av1_obu_with_size, av1_obu_elements(payloads)) if o is not None]
    if not obus:
        raise ValueError("AV1 temporal unit has no OBUs")
    keyframe = bool(payloads[0][0] & 0x08) or any(
        (o[0] >> 3) & 0x0F == AV1_OBU_SEQUENCE_HEADER for o in obus
    )
    return EncodedFrame(b"".join(obus), keyframe)


def av1_sequence_header(frame: bytes) -> bytes | None:
    """The sequence header OBU of a temporal unit (with sizes), for the av1C box."""
    pos = 0
    while pos < len(frame):
        header = frame[pos]
        head_len = 2 if header & 0x04 else 1
        size, body = _read_leb128(frame, pos + head_len)
        if (header >> 3) & 0x0F == AV1_OBU_SEQUENCE_HEADER:
            return frame[pos : body + size]
        pos = body + size
    return None


# -- Opus and the table -------------------------------------------------------------------------


def depacketize_opus(payloads: list[bytes]) -> EncodedFrame:
    """RFC 7587 §4.2: a packet is one Opus packet; every Opus packet decodes on its own."""
    if len(payloads) != 1 or not payloads[0]:
        raise ValueError("an Opus frame is exactly one non-empty RTP payload")
    return EncodedFrame(payloads[0], True)


class Depacketizer:
    """A codec's depacketizer and frame-start test, by lowercase rtpmap name."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.h264: H264Depacketizer | None = None
        if codec == "vp8":
            self._fn = depacketize_vp8
        elif codec == "vp9":
            self._fn = depacketize_vp9
        elif codec == "av1":
            self._fn = depacketize_av1
        elif codec == "opus":
            self._fn = depacketize_opus
        elif codec == "h264":
            self.h264 = H264Depacketizer()
            self._fn = self.h264
        else:
            raise ValueError(f"no depacketizer for {codec!r}")

    def __call__(self, payloads: list[bytes]) -> EncodedFrame:
        return self._fn(payloads)


def depacketizer_for(codec: str) -> Depacketizer | None:
    """A depacketizer for *codec*, or None when relaycast cannot record it."""
    try:
        return Depacketizer(codec)
    except ValueError:
        return None


def frame_start(codec: str, payload: bytes) -> bool:
    """Can this packet be the first of a frame? Used to resynchronise after a loss (never
    raises; a malformed payload is not a start)."""
    if not payload:
        return False
    b0 = payload[0]
    if codec == "vp8":
        return bool(b0 & 0x10) and not b0 & 0x07
    if codec == "vp9":
        return bool(b0 & 0x08)
    if codec == "av1":
        return not b0 & 0x80
    if codec == "h264":
        nal = b0 & 0x1F
        if nal == H264_STAP_A:
            return len(payload) > 3 and _h264_unit_starts(payload[3], payload[4:5])
        if nal == H264_FU_A:
            return (
                len(payload) > 2
                and bool(payload[1] & 0x80)
                and _h264_unit_starts(payload[1], payload[2:3])
            )
        return _h264_unit_starts(b0, payload[1:2])
    return True


def _h264_unit_starts(header: int, first: bytes) -> bool:
    """A NAL unit that begins an access unit: parameter sets, SEI, delimiter, or a slice with
    first_mb_in_slice = 0 (its ue(v) is a single 1 bit)."""
    nal = header & 0x1F
    if nal in (1, 5):
        return bool(first) and bool(first[0] & 0x80)
    return nal in (6, 7, 8, 9)
