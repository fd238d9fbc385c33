"""Encoded frames into a WebM or fragmented MP4 file with PyAV, without transcoding.

Streams are made from a template stream of an unopened encoder context (PyAV's
``add_stream_from_template``: the context is marked initialised, so it is never opened), and
the codec parameters the container needs are set on it: the picture size (read by decoding the
first keyframe once), the H.264 SPS and PPS (Annex B; the MP4 muxer turns them into its avcC
box and the access units into length-prefixed ones), the AV1 sequence header (av1C) and an
OpusHead (RFC 7845 §5.1). Packets are muxed with their presentation time in the stream's time
base; the muxer interleaves them.

MP4 is fragmented (``frag_keyframe+empty_moov+default_base_moof``), so a file whose server died
mid-show plays up to its last fragment; WebM clusters are written as they fill.
"""

from __future__ import annotations

import fractions
import io
import logging
import struct
from pathlib import Path
from typing import Any, Protocol

from relaycast.media.recording.depacketize import EncodedFrame, av1_sequence_header

__all__ = [
    "VIDEO_CODECS",
    "ContainerWriter",
    "FrameSink",
    "container_extension",
    "opus_head",
    "opus_samples",
]

log = logging.getLogger(__name__)

#: rtpmap name -> (encoder whose unopened context is the stream template, decoder for the size)
VIDEO_CODECS = {
    "vp8": ("libvpx", "vp8"),
    "vp9": ("libvpx-vp9", "vp9"),
    "av1": ("libsvtav1", "libdav1d"),
    "h264": ("libx264", "h264"),
}
AUDIO_CODECS = {"opus": "libopus"}
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
OPUS_RATE = 48000


def container_extension(video_codec: str | None) -> str:
    """``mp4`` for H.264, else ``webm`` (VP8, VP9, AV1, audio only)."""
    return "mp4" if video_codec == "h264" else "webm"


def opus_head(channels: int = 2, pre_skip: int = 0) -> bytes:
    """The Opus identification header (RFC 7845 §5.1), mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, OPUS_RATE, 0, 0)


def opus_samples(packet: bytes) -> int:
    """Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 §3.1); 960 if
    malformed."""
    if not packet:
        return 960
    toc = packet[0]
    config = toc >> 3
    if config < 12:
        per_frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:
        per_frame = (480, 960)[config & 1]
    else:
        per_frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            return 960
        frames = packet[1] & 0x3F
    return per_frame * frames or 960


def picture_size(codec: str, frame: EncodedFrame) -> tuple[int, int]:
    """Width and height of a keyframe, by decoding it (0, 0 if the decoder cannot)."""
    import av

    try:
        ctx: Any = av.CodecContext.create(VIDEO_CODECS[codec][1], "r")
        frames = list(ctx.decode(av.Packet(frame.data)))
        frames += list(ctx.decode(None))
    except (av.FFmpegError, ValueError) as exc:
        log.warning("recording: cannot decode the first %s keyframe for its size: %s", codec, exc)
        return 0, 0
    if not frames:
        return 0, 0
    return int(frames[0].width), int(frames[0].height)


class FrameSink(Protocol):
    """Where a recording's frames go (the container writer, or a test double)."""

    def open(self, video: EncodedFrame | None, parameter_sets: bytes | None) -> None: ...

    def write(self, kind: str, frame: EncodedFrame, pts: float) -> None: ...

    def close(self) -> None: ...


class ContainerWriter:
    """One output file; ``write`` takes presentation times in seconds from the file's start."""

    def __init__(self, path: Path, video_codec: str | None, audio_codec: str | None) -> None:
        self.path = path
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self._last: dict[str, int] = {}
        self._templates: list[Any] = []
        self.end = 0.0  # seconds: the end of the last frame written
        self.frames = {"video": 0, "audio": 0}
        self.width = 0
        self.height = 0

    def _template(self, encoder: str) -> Any:
        import av

        dummy: Any = av.open(io.BytesIO(), "w", format="matroska")
        self._templates.append(dummy)
        return dummy.add_stream(encoder)

    def open(self, video: EncodedFrame | None, parameter_sets: bytes | None) -> None:
        import av

        mp4 = container_extension(self.video_codec) == "mp4"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container: Any = av.open(
            str(self.path),
            "w",
            format="mp4" if mp4 else "webm",
            options=MP4_OPTIONS if mp4 else {},
        )
        try:
            if self.video_codec is not None:
                assert video is not None, "a video recording opens on its first keyframe"
                self.width, self.height = picture_size(self.video_codec, video)
                stream = container.add_stream_from_template(
                    self._template(VIDEO_CODECS[self.video_codec][0]), opaque=True
                )
                ctx = stream.codec_context
                ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
                if self.video_codec == "h264" and parameter_sets:
                    ctx.extradata = parameter_sets
                elif self.video_codec == "av1":
                    header = av1_sequence_header(video.data)
                    if header:
                        ctx.extradata = header
                stream.time_base = fractions.Fraction(1, 90000)
                self._streams["video"] = stream
            if self.audio_codec is not None:
                stream = container.add_stream_from_template(
                    self._template(AUDIO_CODECS[self.audio_codec]), opaque=True
                )
                ctx = stream.codec_context
                ctx.sample_rate = OPUS_RATE
                ctx.layout = "stereo"
                ctx.extradata = opus_head()
                stream.time_base = fractions.Fraction(1, OPUS_RATE)
                self._streams["audio"] = stream
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        self._container = container

    def write(self, kind: str, frame: EncodedFrame, pts: float) -> None:
        import av

        stream = self._streams.get(kind)
        if stream is None or self._container is None:
            return
        base = stream.time_base
        ticks = round(pts * base.denominator / base.numerator)
        last = self._last.get(kind)
        if last is not None and ticks <= last:
            ticks = last + 1  # the muxers need strictly increasing timestamps
        self._last[kind] = ticks
        packet = av.Packet(frame.data)
        packet.stream = stream
        packet.time_base = base
        packet.pts = packet.dts = ticks
        packet.is_keyframe = frame.keyframe
        end = float(ticks * base)
        if kind == "audio":
            samples = opus_samples(frame.data)
            packet.duration = round(samples * base.denominator / (OPUS_RATE * base.numerator))
            end += samples / OPUS_RATE
        self._container.mux(packet)
        self.frames[kind] += 1
        self.end = max(self.end, end)

    def close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()
        for dummy in self._templates:
            dummy.close()
        self._templates = []
