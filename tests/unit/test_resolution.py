"""Picture size from RTP payloads: real VP8 / H.264 bitstreams made by libvpx and x264."""

from __future__ import annotations

import contextlib
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycast.rtp.resolution import (
    FrameSize,
    H264Sps,
    frame_size,
    vp8_frame_size,
    vp9_frame_size,
)


def _encode(codec: str, width: int, height: int, **options: str) -> list[bytes]:
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.options = options
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(3):
        img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def _annexb_units(stream: bytes) -> list[bytes]:
    parts = stream.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p]


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1280, 720), (320, 240)])
def test_vp8_keyframe_header(width: int, height: int) -> None:
    frames = _encode("libvpx", width, height)
    # RTP payload: a one-byte descriptor with S=1, PID=0 (RFC 7741 §4.2), then the frame
    assert vp8_frame_size(b"\x10" + frames[0]) == FrameSize(width, height)
    # with X, I (15-bit PictureID), L, T bits set
    assert vp8_frame_size(b"\x90\xe0\x80\x01\x00\x00" + frames[0]) == FrameSize(width, height)
    assert frame_size("vp8", b"\x10" + frames[1]) is None  # inter frame
    assert frame_size("vp8", b"\x00" + frames[0]) is None  # not the first packet


@pytest.mark.parametrize("profile", ["baseline", "high"])
@pytest.mark.parametrize(("width", "height"), [(640, 360), (1920, 1080), (854, 480)])
def test_h264_sps_single_nal_and_stap_a(profile: str, width: int, height: int) -> None:
    units = _annexb_units(_encode("libx264", width, height, profile=profile)[0])
    sps = next(u for u in units if u[0] & 0x1F == 7)
    pps = next(u for u in units if u[0] & 0x1F == 8)
    parsed = H264Sps.parse(sps)
    assert (parsed.width, parsed.height) == (width, height)
    assert parsed.profile_idc == (66 if profile == "baseline" else 100)
    assert frame_size("h264", sps) == FrameSize(width, height)
    stap_a = bytes([0x18]) + b"".join(len(u).to_bytes(2, "big") + u for u in (sps, pps))
    assert frame_size("h264", stap_a) == FrameSize(width, height)
    assert frame_size("h264", pps) is None


def test_vp9_scalability_structure() -> None:
    # I=1 (7-bit picture id), B=1, E=1, V=1; SS: N_S=0, Y=1, G=0; 1280x720
    payload = bytes([0x8E, 0x05, 0x10]) + (1280).to_bytes(2, "big") + (720).to_bytes(2, "big")
    assert vp9_frame_size(payload) == FrameSize(1280, 720)
    # two spatial layers: the last (largest) wins
    ss = bytes([0x30]) + bytes.fromhex("0280 0168 0500 02d0")
    assert vp9_frame_size(bytes([0x8E, 0x05]) + ss) == FrameSize(1280, 720)
    assert vp9_frame_size(bytes([0x8C, 0x05, 0x00])) is None  # V=0


def test_broken_headers_raise_precise_errors() -> None:
    frames = _encode("libvpx", 64, 64)
    bad = bytearray(b"\x10" + frames[0])
    bad[4:7] = b"\x00\x00\x00"
    with pytest.raises(ValueError, match="start code"):
        vp8_frame_size(bytes(bad))
    with pytest.raises(ValueError, match="truncated"):
        vp8_frame_size(b"\x10" + frames[0][:6])
    with pytest.raises(ValueError, match=r"not an H\.264 SPS"):
        H264Sps.parse(b"\x68\x00")
    with pytest.raises(ValueError, match="truncated"):
        H264Sps.parse(b"\x67\x42")
    assert frame_size("av1", b"\x00" * 20) is None


@given(st.sampled_from(["vp8", "vp9", "h264", "av1"]), st.binary(max_size=64))
def test_random_payloads_never_raise(codec: str, payload: bytes) -> None:
    result = frame_size(codec, payload)
    assert result is None or (result.width > 0 and result.height > 0)


@given(st.binary(max_size=40))
def test_random_sps_only_value_error(tail: bytes) -> None:
    with contextlib.suppress(ValueError):
        H264Sps.parse(b"\x67" + tail)
