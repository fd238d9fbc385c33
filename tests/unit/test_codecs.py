"""Keyframe detection on RTP payloads (RFC 7741, RFC 6184, RFC 9628, AV1 RTP spec)."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from relaycast.rtp.codecs import is_keyframe_packet, is_keyframe_start

# --- real payloads from aiortc's independent VP8 / H.264 packetizers -----------------------


def _encode(mime: str, keyframes: list[bool]) -> list[list[bytes]]:
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96))
    rng = np.random.default_rng(1)
    frames: list[list[bytes]] = []
    for i, force in enumerate(keyframes):
        pixels = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=force)
        frames.append(payloads)
    return frames


def test_vp8_from_aiortc_encoder() -> None:
    frames = _encode("video/VP8", [False, False, True, False])
    for index, payloads in enumerate(frames):
        key = index in (0, 2)  # the first frame is always a keyframe
        assert len(payloads) > 1
        assert is_keyframe_start("vp8", payloads[0]) is key
        assert not any(is_keyframe_start("vp8", p) for p in payloads[1:])
        assert is_keyframe_packet("vp8", payloads[0]) is key


def test_h264_from_aiortc_encoder() -> None:
    frames = _encode("video/H264", [False, False, True, False])
    for index, payloads in enumerate(frames):
        key = index in (0, 2)
        assert is_keyframe_start("h264", payloads[0]) is key  # STAP-A with SPS/PPS
        starts = [i for i, p in enumerate(payloads) if is_keyframe_start("h264", p)]
        members = [is_keyframe_packet("h264", p) for p in payloads]
        if key:
            # SPS/PPS aggregate, then the FU-A start of the IDR's first slice; the encoder
            # also emits a second IDR slice whose start must not count (first_mb_in_slice > 0)
            assert starts == [0, 1]
            second_slice = [i for i, p in enumerate(payloads) if i > 1 and p[1] == 0x85]
            assert second_slice, "expected a multi-slice IDR from libx264"
            assert all(members)  # every IDR fragment belongs to the keyframe
        else:
            assert starts == [] and not any(members)


# --- VP8 (RFC 7741 §4.2 descriptor, §4.3 payload header) ---------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x10\x9d", False),  # S=1 PID=0, P bit of the frame tag set: inter frame
        (b"\x10\x9c\x01\x2a", True),  # P bit clear: key frame
        (b"\x00\x9c", False),  # S=0: continuation
        (b"\x11\x9c", False),  # PID=1
        (b"\x90\x80\x05\x9c", True),  # X, I with 7-bit PictureID
        (b"\x90\x80\x85\x05\x9c", True),  # 15-bit PictureID (M bit)
        (b"\x90\x80\x85\x05", False),  # descriptor only, no payload header
        (b"\x90\xf0\x85\x05\x11\x22\x9c", True),  # I, L, T and K all present
        (b"\x90\xf0\x85\x05\x11\x22\x9d", False),
        (b"\x90\x40\x11\x9c", True),  # L only
        (b"\x90\x20\x22\x9c", True),  # T only
        (b"\x90", False),
        (b"\x90\x80", False),
        (b"\x10", False),
        (b"", False),
    ],
)
def test_vp8_descriptor_variants(payload: bytes, expected: bool) -> None:
    assert is_keyframe_start("vp8", payload) is expected


# --- H.264 (RFC 6184 §5.6-5.8) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "start", "member"),
    [
        (b"\x65\x88\x84", True, True),  # single NAL, IDR, first_mb_in_slice 0
        (b"\x65\x48\x84", False, True),  # IDR slice not starting at macroblock 0
        (b"\x65", False, True),  # IDR without a slice header
        (b"\x67\x42\xc0\x1f", True, True),  # SPS
        (b"\x68\xce\x3c\x80", False, True),  # PPS
        (b"\x41\x9a\x00", False, False),  # non-IDR slice
        (b"\x06\x05", False, False),  # SEI
        (b"\x78\x00\x04\x67\x42\xc0\x1f\x00\x03\x68\xce\x3c", True, True),  # STAP-A SPS+PPS
        (b"\x78\x00\x02\x09\x10\x00\x03\x65\x88\x84", True, True),  # STAP-A AUD + IDR
        (b"\x78\x00\x02\x09\x10\x00\x03\x65\x08\x84", False, True),  # later IDR slice
        (b"\x78\x00\x02\x09\x10\x00\x02\x41\x9a", False, False),  # STAP-A AUD + P slice
        (b"\x78\x00\x09\x67", False, False),  # truncated STAP-A
        (b"\x7c\x85\x88", True, True),  # FU-A start of IDR
        (b"\x7c\x85\x2a", False, True),  # FU-A start of a later IDR slice
        (b"\x7c\x85", False, True),  # FU-A start without slice header byte
        (b"\x7c\x87\x42", True, True),  # FU-A fragmented SPS
        (b"\x7c\x05\x88", False, True),  # FU-A middle of IDR
        (b"\x7c\x45\x88", False, True),  # FU-A end of IDR
        (b"\x7c\x81\x9a", False, False),  # FU-A start of non-IDR
        (b"\x7c", False, False),
        (b"\x79\x00\x04\x67\x42", False, False),  # STAP-B: not used by WebRTC
        (b"", False, False),
    ],
)
def test_h264_packetization_modes(payload: bytes, start: bool, member: bool) -> None:
    assert is_keyframe_start("h264", payload) is start
    assert is_keyframe_packet("h264", payload) is member


# --- VP9 (RFC 9628 §4.2) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x08\x00", True),  # B=1, P=0, no optional fields
        (b"\x48\x00", False),  # P=1: inter-picture predicted
        (b"\x00\x00", False),  # B=0: not the start of a frame
        (b"\x88\x12\x00", True),  # I with 7-bit picture id
        (b"\x88\x81\x23\x00", True),  # I with 15-bit picture id
        (b"\x88", False),  # I set but no picture id
        (b"\xa8\x81\x23\x00\x05\x00", True),  # I, L (non-flexible): SID 0, TL0PICIDX
        (b"\xa8\x81\x23\x02\x05\x00", False),  # SID 1: not the base spatial layer
        (b"\xb8\x81\x23\x00\x00", True),  # flexible mode: no TL0PICIDX
        (b"\xa8\x81\x23\x00", False),  # non-flexible but TL0PICIDX missing
        (b"\x0a\x00", True),  # V (scalability structure) present
        (b"", False),
    ],
)
def test_vp9_descriptor_variants(payload: bytes, expected: bool) -> None:
    assert is_keyframe_start("vp9", payload) is expected


# --- AV1 (AV1 RTP payload format §4.4 aggregation header) ----------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x18\x0a\x0b", True),  # N=1, W=1: new coded video sequence
        (b"\x10\x32\x00", False),  # N=0
        (b"\x58\x32\x00", True),  # Y=1, N=1
        (b"\x98\x32\x00", True),  # Z=1 would be odd for N=1 but N decides
        (b"\x08", False),  # aggregation header only
        (b"", False),
    ],
)
def test_av1_aggregation_header(payload: bytes, expected: bool) -> None:
    assert is_keyframe_start("av1", payload) is expected
    assert is_keyframe_packet("av1", payload) is expected


def test_unknown_codecs_are_never_keyframes() -> None:
    assert not is_keyframe_start("opus", b"\x10\x9c\x01\x2a")
    assert not is_keyframe_start("VP8", b"\x10\x9c")  # names are lowercase rtpmap names
    assert not is_keyframe_packet("pcmu", b"\x65")
