"""Codec identity and the H.264 profile table."""

from __future__ import annotations

import pytest

from relaycast.sdp import Codec, codec_key, describe, h264_profile, is_supported
from relaycast.sdp.codecs import unsupported_reason


@pytest.mark.parametrize(
    ("plid", "profile"),
    [
        ("42e01f", "constrained-baseline"),
        ("42c01f", "constrained-baseline"),
        ("424015", "constrained-baseline"),
        ("4d801f", "constrained-baseline"),
        ("58c01f", "constrained-baseline"),
        ("42001f", "baseline"),
        ("42800d", "baseline"),
        ("42000d", "baseline"),
        ("58801f", "baseline"),
        ("4d001f", "main"),
        ("4d4029", "main"),
        ("640032", "high"),
        ("640c1f", "constrained-high"),
        ("f4001f", "high-444-predictive"),
        ("42E01F", "constrained-baseline"),
    ],
)
def test_h264_profiles(plid: str, profile: str) -> None:
    assert h264_profile(plid) == profile


@pytest.mark.parametrize(
    "plid", ["", "42e0", "zzzzzz", "42e01f00", "6e001f", "640400", "4d0101", "4d2029"]
)
def test_h264_profile_invalid(plid: str) -> None:
    assert h264_profile(plid) is None


def h264(pt: int, plid: str | None, mode: str | None = "1") -> Codec:
    fmtp: dict[str, str] = {"level-asymmetry-allowed": "1"}
    if mode is not None:
        fmtp["packetization-mode"] = mode
    if plid is not None:
        fmtp["profile-level-id"] = plid
    return Codec(pt, "H264", 90000, fmtp=fmtp)


def test_codec_keys() -> None:
    assert codec_key(Codec(96, "VP8", 90000)) == "vp8"
    assert (
        codec_key(h264(102, "42e01f"))
        == codec_key(h264(125, "42c032"))
        == ("h264:constrained-baseline")
    )
    assert codec_key(h264(102, None)) == "h264:constrained-baseline"  # libwebrtc default
    assert codec_key(h264(1, "640c1f")) == "h264:constrained-high"
    assert codec_key(Codec(98, "VP9", 90000, fmtp={"profile-id": "2"})) == "vp9:2"
    assert codec_key(Codec(98, "vp9", 90000)) == "vp9:0"
    assert codec_key(Codec(45, "AV1", 90000, fmtp={"level-idx": "5", "profile": "1"})) == "av1:1"
    assert codec_key(Codec(45, "AV1", 90000)) == "av1:0"
    assert codec_key(Codec(111, "OPUS", 48000, 2)) == "opus"
    assert codec_key(h264(1, "123456")) == "h264:?123456"


def test_supported() -> None:
    assert is_supported(h264(1, "42e01f"), "video")
    assert not is_supported(h264(1, "42e01f", mode="0"))
    assert not is_supported(h264(1, "42e01f", mode=None))  # absent means mode 0 (RFC 6184)
    assert unsupported_reason(h264(1, "42e01f", mode="0")) == (
        "H.264 with packetization-mode=0 (only packetization-mode=1 is supported)"
    )
    assert not is_supported(h264(1, "123456"))
    assert is_supported(Codec(111, "opus", 48000, 2), "audio")
    assert not is_supported(Codec(111, "opus", 48000, 2), "video")
    assert not is_supported(Codec(111, "opus", 48000, 1))
    assert not is_supported(Codec(0, "PCMU", 8000, 1))
    assert not is_supported(Codec(97, "rtx", 90000, fmtp={"apt": "96"}))
    assert not is_supported(Codec(49, "H265", 90000))


def test_describe() -> None:
    assert describe(h264(1, "42e01f")) == "H.264 (constrained-baseline)"
    assert describe(Codec(96, "VP8", 90000)) == "VP8"
    assert describe(Codec(98, "VP9", 90000, fmtp={"profile-id": "2"})) == "VP9 (profile 2)"
    assert describe(Codec(111, "opus", 48000, 2)) == "Opus"
