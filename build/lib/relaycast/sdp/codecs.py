"""Supported codecs and codec identity.

relaycast forwards RTP untouched, so a viewer can only be given the exact format the publisher
sends. :func:`codec_key` names that format: two codecs with the same key are interchangeable on
the wire (the payload type is rewritten per viewer).

Supported, in preference order:

* video: VP8 (RFC 7741), H.264 with ``packetization-mode=1`` only (RFC 6184 §6.2; mode 0 is
  single-NAL and cannot carry what encoders emit at useful bitrates), VP9, AV1;
* audio: Opus 48000/2 (RFC 7587 §7);
* RTX (RFC 4588) for an accepted video codec.

H.264 profile table (RFC 6184 §8.1 ``profile-level-id`` = profile_idc, profile-iop, level_idc;
the same table libwebrtc uses). ``profile-iop`` bits are written MSB first
(constraint_set0 .. constraint_set5, then two reserved zero bits); ``x`` = don't care:

============  ===========  =====================
profile_idc   profile-iop  profile
============  ===========  =====================
0x42          x1xx0000     constrained-baseline
0x4D          1xxx0000     constrained-baseline
0x58          11xx0000     constrained-baseline
0x42          x0xx0000     baseline
0x58          10xx0000     baseline
0x4D          0x0x0000     main
0x64          00000000     high
0x64          00001100     constrained-high
0xF4          00000000     high-444-predictive
============  ===========  =====================

The level is ignored (``level-asymmetry-allowed``, RFC 6184 §8.2.2): a decoder of a profile
handles any level the sender picks in practice. An H.264 codec without ``profile-level-id`` is
taken as constrained-baseline, as libwebrtc does.
"""

from __future__ import annotations

from relaycast.sdp.model import Codec

#: Video codecs in preference order (names as written in ``a=rtpmap``, compared case-insensitively).
VIDEO_CODECS: tuple[str, ...] = ("VP8", "H264", "VP9", "AV1")
#: Audio codecs in preference order.
AUDIO_CODECS: tuple[str, ...] = ("opus",)

_H264_PROFILES: tuple[tuple[int, str, str], ...] = (
    (0x42, "x1xx0000", "constrained-baseline"),
    (0x4D, "1xxx0000", "constrained-baseline"),
    (0x58, "11xx0000", "constrained-baseline"),
    (0x42, "x0xx0000", "baseline"),
    (0x58, "10xx0000", "baseline"),
    (0x4D, "0x0x0000", "main"),
    (0x64, "00000000", "high"),
    (0x64, "00001100", "constrained-high"),
    (0xF4, "00000000", "high-444-predictive"),
)

_DEFAULT_H264_PROFILE = "constrained-baseline"


def _bits_match(pattern: str, value: int) -> bool:
    for i, ch in enumerate(pattern):
        bit = (value >> (7 - i)) & 1
        if ch != "x" and int(ch) != bit:
            return False
    return True


def h264_profile(profile_level_id: str) -> str | None:
    """Profile name for an H.264 ``profile-level-id`` (6 hex digits, RFC 6184 §8.1), or None
    when it is malformed or names a profile outside the table in the module docstring."""
    text = profile_level_id.strip()
    if len(text) != 6:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    profile_idc = value >> 16
    profile_iop = (value >> 8) & 0xFF
    for idc, pattern, name in _H264_PROFILES:
        if idc == profile_idc and _bits_match(pattern, profile_iop):
            return name
    return None


def _h264_profile_of(codec: Codec) -> str | None:
    plid = codec.fmtp.get("profile-level-id")
    return _DEFAULT_H264_PROFILE if plid is None else h264_profile(plid)


def codec_key(codec: Codec) -> str:
    """Wire identity of a codec: ``"vp8"``, ``"h264:<profile>"``, ``"vp9:<profile-id>"``,
    ``"av1:<profile>"``, ``"opus"``; other codecs give their lower-case name (an H.264 with an
    unknown profile gives ``"h264:?<profile-level-id>"``)."""
    name = codec.name.lower()
    if name == "h264":
        profile = _h264_profile_of(codec)
        if profile is None:
            return "h264:?" + codec.fmtp.get("profile-level-id", "").lower()
        return f"h264:{profile}"
    if name == "vp9":
        return "vp9:" + (codec.fmtp.get("profile-id") or "0")  # RFC 9628 §6
    if name == "av1":
        return "av1:" + (codec.fmtp.get("profile") or "0")  # AV1 RTP spec §7.2
    return name


def unsupported_reason(codec: Codec) -> str | None:
    """None when relaycast can forward ``codec``; otherwise why not, in words for a person."""
    name = codec.name.lower()
    if name == "h264":
        mode = codec.fmtp.get("packetization-mode", "0")
        if mode != "1":
            return f"H.264 with packetization-mode={mode} (only packetization-mode=1 is supported)"
        if _h264_profile_of(codec) is None:
            plid = codec.fmtp.get("profile-level-id", "")
            return f"H.264 with unknown profile-level-id={plid}"
        return None
    if name in ("vp8", "vp9", "av1"):
        return None if codec.clock_rate == 90000 else f"{codec.name}/{codec.clock_rate}"
    if name == "opus":
        if codec.clock_rate == 48000 and codec.channels == 2:
            return None
        return f"opus/{codec.clock_rate}/{codec.channels} (only opus/48000/2 is supported)"
    return f"{codec.rtpmap_value()} (not supported)"


def is_supported(codec: Codec, kind: str | None = None) -> bool:
    """True when ``codec`` is one relaycast forwards (and, if given, belongs to ``kind``)."""
    if unsupported_reason(codec) is not None:
        return False
    if kind is None:
        return True
    names = VIDEO_CODECS if kind == "video" else AUDIO_CODECS if kind == "audio" else ()
    return codec.name.lower() in (n.lower() for n in names)


def preference(codec: Codec) -> int:
    """Rank of the codec's name in our preference order (lower is better)."""
    order = [n.lower() for n in (*VIDEO_CODECS, *AUDIO_CODECS)]
    name = codec.name.lower()
    return order.index(name) if name in order else len(order)


_PRETTY = {"vp8": "VP8", "vp9": "VP9", "av1": "AV1", "h264": "H.264", "opus": "Opus"}


def describe(codec: Codec) -> str:
    """Human name of a codec for messages, e.g. ``"H.264 (constrained-baseline)"``."""
    key = codec_key(codec)
    name, _, detail = key.partition(":")
    pretty = _PRETTY.get(name, codec.name)
    if name == "h264":
        return f"{pretty} ({detail})"
    if name in ("vp9", "av1") and detail != "0":
        return f"{pretty} (profile {detail})"
    return pretty


def supported_summary() -> str:
    """One sentence listing what relaycast accepts."""
    return "VP8, H.264 (packetization-mode=1), VP9 or AV1 video and Opus (48000/2) audio"
