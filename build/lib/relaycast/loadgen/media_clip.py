"""A pre-encoded test clip for the synthetic publisher: VP8 or H.264 video made with PyAV from a
moving test pattern at a chosen bitrate, keyframes at a fixed interval, plus Opus audio (20 ms
frames). Payloads are already RTP-packetized (VP8: RFC 7741 §4.2 payload descriptor with a
15-bit PictureID; H.264: RFC 6184 §5.6 single NAL units and §5.8 FU-A), so the publisher only
adds RTP headers and paces them in real time. Clips are cached on disk because encoding 720p
takes a few seconds.
"""

from __future__ import annotations

import fractions
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms at 48 kHz
MAX_PAYLOAD = 1200  # bytes of RTP payload per packet (leaves room for SRTP and headers)

CLIP_FORMAT_VERSION = 2


@dataclass
class ClipFrame:
    """One encoded frame: RTP payloads in order, RTP timestamp offset from the clip start."""

    payloads: list[bytes]
    timestamp: int
    keyframe: bool = False


@dataclass
class MediaClip:
    """Pre-encoded audio and video; ``duration`` seconds, looped by the publisher."""

    codec: str
    width: int
    height: int
    fps: int
    bitrate: int
    keyframe_interval: float
    duration: float
    video: list[ClipFrame] = field(default_factory=list)
    audio: list[ClipFrame] = field(default_factory=list)

    @property
    def video_bitrate(self) -> float:
        """Encoded video bits per second (payload only)."""
        total = sum(len(p) for f in self.video for p in f.payloads)
        return total * 8 / self.duration

    def duplicate_payloads(self) -> int:
        """Payloads that are not unique within the clip by (crc32, length); the delay
        matcher needs them unique (repeats only across loops)."""
        seen: set[tuple[int, int]] = set()
        dups = 0
        for frame in (*self.video, *self.audio):
            for p in frame.payloads:
                key = (zlib.crc32(p), len(p))
                if key in seen:
                    dups += 1
                seen.add(key)
        return dups


# -- packetizers ----------------------------------------------------------------------------


def packetize_vp8(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """VP8 payload descriptor (RFC 7741 §4.2): X=1, S on the first packet, PID=0, I=1 with a
    15-bit PictureID (M=1)."""
    out: list[bytes] = []
    pid = picture_id & 0x7FFF
    ext = bytes((0x80, 0x80 | (pid >> 8), pid & 0xFF))
    room = max_payload - 4
    for pos in range(0, len(frame), room):
        first = 0x90 if pos == 0 else 0x80  # X=1, S=1 on the first packet
        out.append(bytes((first,)) + ext + frame[pos : pos + room])
    return out


def split_annexb(data: bytes) -> list[bytes]:
    """Split an H.264 Annex B byte stream into NAL units (start codes removed)."""
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j == -1 else j
        unit = data[start:end]
        if j != -1 and unit.endswith(b"\x00"):
            unit = unit[:-1]  # belongs to a 4-byte start code
        if unit:
            units.append(unit)
        i = j
    return units


def packetize_h264(nal_units: list[bytes], max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """H.264 RTP payloads (RFC 6184, packetization-mode=1): a NAL unit that fits goes alone
    (§5.6), a larger one is split into FU-A fragments (§5.8)."""
    out: list[bytes] = []
    for nal in nal_units:
        if len(nal) <= max_payload:
            out.append(nal)
            continue
        header = nal[0]
        indicator = (header & 0xE0) | 28
        body = nal[1:]
        room = max_payload - 2
        count = (len(body) + room - 1) // room
        for k in range(count):
            chunk = body[k * room : (k + 1) * room]
            fu = header & 0x1F
            if k == 0:
                fu |= 0x80
            if k == count - 1:
                fu |= 0x40
            out.append(bytes((indicator, fu)) + chunk)
    return out


# -- encoding ---------------------------------------------------------------------------------


def _pattern(width: int, height: int, index: int, rng: Any) -> Any:
    """A moving test pattern with a noisy band so the encoder spends its whole bitrate."""
    import numpy as np

    y = np.arange(height, dtype=np.uint16)[:, None]
    x = np.arange(width, dtype=np.uint16)[None, :]
    r = ((x + index * 4) % 256).astype(np.uint8)
    g = ((y + index * 2) % 256).astype(np.uint8)
    b = (((x // 32 + y // 32 + index // 8) % 2) * 200).astype(np.uint8)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = r
    image[..., 1] = g
    image[..., 2] = b
    band = height // 3
    top = (index * 3) % (height - band)
    noise = rng.integers(112, 144, size=(band, width // 2, 3), dtype=np.uint8)
    image[top : top + band, : width // 2] = noise
    return image


def _encode_video(
    codec: str, width: int, height: int, fps: int, bitrate: int, keyint: int, frames: int
) -> list[ClipFrame]:
    import av
    import numpy as np

    rng = np.random.default_rng(1234)
    if codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.options = {
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            "bufsize": str(bitrate),
            "undershoot-pct": "95",
            "overshoot-pct": "15",
            "static-thresh": "0",
        }
    else:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.profile = "Constrained Baseline"
        ctx.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "level": "31",
            "x264-params": f"vbv-maxrate={bitrate // 1000}:vbv-bufsize="
            f"{bitrate // 1000}:repeat-headers=1:keyint={keyint}:min-keyint={keyint}"
            ":scenecut=0",
        }
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.bit_rate = bitrate
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.gop_size = keyint
    if codec == "vp8":
        ctx.qmin, ctx.qmax = 4, 63
    out: list[ClipFrame] = []
    step = VIDEO_CLOCK // fps
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(_pattern(width, height, i, rng), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        frame.pict_type = (
            av.video.frame.PictureType.I if i % keyint == 0 else av.video.frame.PictureType.NONE
        )
        data = b"".join(bytes(p) for p in ctx.encode(frame))
        if not data:
            raise RuntimeError(f"{codec} encoder buffered frame {i}; expected zero latency")
        if codec == "vp8":
            payloads = packetize_vp8(data, i)
            key = not (data[0] & 0x01)  # RFC 6386 §9.1: P bit clear = key frame
        else:
            units = split_annexb(data)
            payloads = packetize_h264(units)
            key = any(u[0] & 0x1F == 5 for u in units)
        out.append(ClipFrame(payloads, i * step, key))
    return out


def _encode_audio(frames: int) -> list[ClipFrame]:
    import av
    import numpy as np

    ctx = av.CodecContext.create("libopus", "w")
    ctx.bit_rate = 64000
    ctx.sample_rate = AUDIO_CLOCK
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.options = {"application": "audio", "frame_duration": "20"}
    rng = np.random.default_rng(99)
    out: list[ClipFrame] = []
    pending: list[bytes] = []
    t = np.arange(AUDIO_FRAME_SAMPLES) / AUDIO_CLOCK
    i = 0
    while len(pending) < frames + 4:
        freq = 220.0 + 5.0 * (i % 200)
        tone = 8000 * np.sin(2 * np.pi * freq * (t + i * AUDIO_FRAME_SAMPLES / AUDIO_CLOCK))
        noise = rng.normal(0, 800, AUDIO_FRAME_SAMPLES)
        mono = (tone + noise).astype(np.int16)
        stereo = np.stack([mono, mono], axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * AUDIO_FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        pending.extend(bytes(p) for p in ctx.encode(frame))
        i += 1
    for k in range(frames):
        out.append(ClipFrame([pending[k]], k * AUDIO_FRAME_SAMPLES, False))
    return out


def encode_clip(
    codec: str,
    bitrate: int,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    keyframe_interval: float = 2.0,
    duration: float = 10.0,
) -> MediaClip:
    """Encode a clip; ``duration`` is rounded to whole keyframe intervals so loops keep the
    GOP structure."""
    if codec not in ("vp8", "h264"):
        raise ValueError(f"codec must be vp8 or h264, not {codec!r}")
    keyint = max(1, round(keyframe_interval * fps))
    gops = max(1, round(duration * fps / keyint))
    frames = gops * keyint
    real_duration = frames / fps
    audio_frames = round(real_duration * AUDIO_CLOCK / AUDIO_FRAME_SAMPLES)
    clip = MediaClip(codec, width, height, fps, bitrate, keyint / fps, real_duration)
    clip.video = _encode_video(codec, width, height, fps, bitrate, keyint, frames)
    clip.audio = _encode_audio(audio_frames)
    return clip


# -- cache ----------------------------------------------------------------------------------


def _write(clip: MediaClip, path: Path) -> None:
    meta = {
        "version": CLIP_FORMAT_VERSION,
        "codec": clip.codec,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
        "bitrate": clip.bitrate,
        "keyframe_interval": clip.keyframe_interval,
        "duration": clip.duration,
        "video": [[f.timestamp, f.keyframe, len(f.payloads)] for f in clip.video],
        "audio": [[f.timestamp, f.keyframe, len(f.payloads)] for f in clip.audio],
    }
    blobs = bytearray()
    for f in (*clip.video, *clip.audio):
        for p in f.payloads:
            blobs += struct.pack("!I", len(p)) + p
    head = json.dumps(meta).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(struct.pack("!I", len(head)) + head + bytes(blobs))
    os.replace(tmp, path)


def _read(path: Path) -> MediaClip:
    data = path.read_bytes()
    (n,) = struct.unpack_from("!I", data, 0)
    meta = json.loads(data[4 : 4 + n])
    if meta.get("version") != CLIP_FORMAT_VERSION:
        raise ValueError("clip cache has another format version")
    pos = 4 + n

    def frames(rows: list[list[int]]) -> list[ClipFrame]:
        nonlocal pos
        out = []
        for ts, key, count in rows:
            payloads = []
            for _ in range(count):
                (ln,) = struct.unpack_from("!I", data, pos)
                payloads.append(data[pos + 4 : pos + 4 + ln])
                pos += 4 + ln
            out.append(ClipFrame(payloads, ts, bool(key)))
        return out

    clip = MediaClip(
        meta["codec"],
        meta["width"],
        meta["height"],
        meta["fps"],
        meta["bitrate"],
        meta["keyframe_interval"],
        meta["duration"],
    )
    clip.video = frames(meta["video"])
    clip.audio = frames(meta["audio"])
    return clip


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "relaycast" / "bench"


def load_clip(
    codec: str,
    bitrate: int,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    keyframe_interval: float = 2.0,
    duration: float = 10.0,
) -> MediaClip:
    """The clip from the on-disk cache, encoding it first when missing."""
    key = f"{codec}-{bitrate}-{width}x{height}-{fps}-{keyframe_interval}-{duration}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache_dir() / f"clip-{codec}-{digest}.bin"
    if path.exists():
        try:
            return _read(path)
        except (ValueError, KeyError, struct.error):
            pass
    clip = encode_clip(
        codec,
        bitrate,
        width=width,
        height=height,
        fps=fps,
        keyframe_interval=keyframe_interval,
        duration=duration,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(clip, path)
    return clip
