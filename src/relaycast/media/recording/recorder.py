"""Recording without transcoding: each broadcast to ``<record_dir>/<stream>/<UTC start>.webm``
(VP8, VP9, AV1 + Opus) or ``.mp4`` (H.264 + Opus, fragmented).

The hot path pays one call per packet (:meth:`RecordingTap.rtp`): a tuple of references onto a
bounded deque. A worker thread per recording drains it every 50 ms: reordering and loss handling
(:mod:`.assembler`), depacketizing (:mod:`.depacketize`), timing from the sender reports
(:mod:`.timeline`) and muxing (:mod:`.writer`). When the deque is full (the disk is slower than
the stream) the tap drops every packet until the queue has room again and a video keyframe
starts, asks the publisher for that keyframe, and the worker restarts its assemblers at the
gap.

:class:`Recorder` lives on the event loop: it starts a :class:`Recording` when a publisher of a
recorded stream arrives, keeps it for ``grace`` seconds after the publisher leaves, and hands
it to a new publisher of the same stream with the same codecs (the file continues, its time line
shows the real pause), else closes it and starts a new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib.util
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relaycast.config import ConfigError
from relaycast.media.recording.assembler import AssembledFrame, TrackAssembler
from relaycast.media.recording.depacketize import EncodedFrame
from relaycast.media.recording.timeline import PublisherClock, TrackClock
from relaycast.media.recording.writer import (
    AUDIO_CODECS,
    VIDEO_CODECS,
    ContainerWriter,
    FrameSink,
    container_extension,
)
from relaycast.rtp.codecs import is_keyframe_start

if TYPE_CHECKING:
    from relaycast.config import Config
    from relaycast.media.publisher import Publisher
    from relaycast.media.track import Track
    from relaycast.rtp.packet import RtpPacket
    from relaycast.rtp.rtcp import RtcpSenderReport

__all__ = ["RECONNECT_GRACE", "Recorder", "Recording", "RecordingTap", "list_recordings"]

log = logging.getLogger(__name__)

RECONNECT_GRACE = 15.0  # seconds a recording waits for its publisher to come back
QUEUE_LIMIT = 8192  # packets between the ingress and the recorder thread (~10 s at 6 Mbit/s)
DRAIN_INTERVAL = 0.05  # seconds the worker sleeps when the queue is empty
PENDING_AUDIO = 500  # Opus frames kept while a video recording waits for its first keyframe
METADATA_INTERVAL = 10.0  # seconds between updates of the sidecar JSON
OVERFLOW_LOG_INTERVAL = 10.0
KEYFRAME_REQUEST_INTERVAL = 1.0
_GAP = ("gap",)
_CLOSE = ("close",)


def utc_name(when: float) -> str:
    """``2026-11-30T17-05-00Z``: a UTC start time that is a valid file name everywhere."""
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


class RecordingTap:
    """The ingress side of a recording, one per publisher: cheap, on the event loop thread."""

    __slots__ = (
        "_dropping",
        "_last_log",
        "_last_request",
        "_limit",
        "_queue",
        "_resume_on_video",
        "dropped_packets",
        "overflows",
        "recording",
    )

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self._queue = recording.queue
        self._limit = recording.queue_limit
        self._resume_on_video = recording.video_codec is not None
        self._dropping = False
        self._last_log = -OVERFLOW_LOG_INTERVAL
        self._last_request = -KEYFRAME_REQUEST_INTERVAL
        self.dropped_packets = 0
        self.overflows = 0

    def rtp(self, track: Track, packet: RtpPacket, arrival_us: int) -> None:
        """One packet the ingress accepted (RTX already unwrapped)."""
        queue = self._queue
        if (self._dropping or len(queue) >= self._limit) and not self._overflow(track, packet):
            return
        queue.append(
            (
                self,
                track,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
                packet.payload,
                arrival_us,
            )
        )

    def sender_report(self, track: Track, report: RtcpSenderReport) -> None:
        self._queue.append(
            ("sr", self, track, report.ntp_timestamp, report.rtp_timestamp, time.time())
        )

    def _overflow(self, track: Track, packet: RtpPacket) -> bool:
        """Drop until there is room and a video keyframe starts; True to keep this packet."""
        now = time.monotonic()
        if not self._dropping:
            self._dropping = True
            self.overflows += 1
            self.recording.overflows += 1
        room = len(self._queue) <= self._limit // 2
        video = track.kind == "video"
        if room and (
            not self._resume_on_video
            or (video and is_keyframe_start(track.codec_name, packet.payload))
        ):
            self._dropping = False
            self._queue.append(_GAP)
            return True
        self.dropped_packets += 1
        self.recording.dropped_packets += 1
        if video and room and now - self._last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._last_request = now
            track.request_keyframe()
        if now - self._last_log >= OVERFLOW_LOG_INTERVAL:
            self._last_log = now
            log.warning(
                "recording %s: the recorder falls behind (slow disk?); %d packets dropped so "
                "far, resuming at the next keyframe",
                self.recording.stream,
                self.recording.dropped_packets,
            )
        return False


class _TrackState:
    __slots__ = ("assembler", "clock", "last_request", "track")

    def __init__(self, track: Track, assembler: TrackAssembler, clock: TrackClock) -> None:
        self.track = track
        self.assembler = assembler
        self.clock = clock
        self.last_request = 0.0


class Recording:
    """One file; its worker thread owns everything below the queue."""

    def __init__(
        self,
        stream: str,
        directory: Path,
        video_codec: str | None,
        audio_codec: str | None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        queue_limit: int = QUEUE_LIMIT,
        sink_factory: Callable[[Path, str | None, str | None], FrameSink] = ContainerWriter,
        wait: float = 0.5,
    ) -> None:
        self.stream = stream
        self.directory = directory
        self.video_codec = video_codec
        self.audio_codec = audio_codec
        self.queue: deque[tuple[Any, ...]] = deque()
        self.queue_limit = queue_limit
        self.publisher: Publisher | None = None
        self.left_at: float | None = None  # monotonic time the publisher went away
        self.overflows = 0
        self.dropped_packets = 0
        self.path: Path | None = None
        self.started: float | None = None
        self._loop = loop
        self._sink_factory = sink_factory
        self._sink: FrameSink | None = None
        self._wait = wait
        self._tracks: dict[str, _TrackState] = {}
        self._clocks: dict[RecordingTap, PublisherClock] = {}  # one per publisher
        self._pending_audio: deque[tuple[float, EncodedFrame]] = deque(maxlen=PENDING_AUDIO)
        self._origin = 0.0
        self._end = 0.0
        self._written = {"video": 0, "audio": 0}
        self._meta_at = 0.0
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"recording-{stream}", daemon=True)
        self._thread.start()

    def tap(self) -> RecordingTap:
        return RecordingTap(self)

    def matches(self, video_codec: str | None, audio_codec: str | None) -> bool:
        return (video_codec, audio_codec) == (self.video_codec, self.audio_codec)

    def close(self, timeout: float | None = None) -> None:
        """Finish the file (blocks until the worker is done)."""
        self.queue.append(_CLOSE)
        self._stop.set()
        self._thread.join(timeout)

    def close_async(self) -> None:
        """Finish the file without waiting."""
        self.queue.append(_CLOSE)
        self._stop.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    # -- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self.queue
        try:
            while True:
                try:
                    item = queue.popleft()
                except IndexError:
                    self._stop.wait(DRAIN_INTERVAL)
                    continue
                if len(item) == 7:
                    self._packet(item)
                elif item[0] == "sr":
                    self._sender_report(item)
                elif item is _GAP:
                    self._discontinuity()
                elif item is _CLOSE:
                    break
        except Exception as exc:  # the recording stops; the stream goes on
            self.error = exc
            log.exception("recording %s failed", self.stream)
        finally:
            queue.clear()
            try:
                self._finish()
            except Exception:
                log.exception("recording %s: closing the file failed", self.stream)

    def _state(self, tap: RecordingTap, track: Track) -> _TrackState | None:
        state = self._tracks.get(track.kind)
        if state is not None and state.track is track:
            return state
        codec = self.video_codec if track.kind == "video" else self.audio_codec
        if codec is None or track.codec_name != codec:
            return None
        if state is not None:  # a new publisher or an encoder restart: the old track is done
            self._frames(state, state.assembler.flush())
        clock = self._clocks.setdefault(tap, PublisherClock())
        state = _TrackState(
            track,
            TrackAssembler(codec, track.kind, wait=self._wait),
            TrackClock(track.clock_rate, clock),
        )
        self._tracks[track.kind] = state
        return state

    def _packet(self, item: tuple[Any, ...]) -> None:
        tap, track, seq, timestamp, marker, payload, arrival_us = item
        state = self._state(tap, track)
        if state is None:
            return
        assembler = state.assembler
        dropped = assembler.dropped_frames
        self._frames(state, assembler.push(seq, timestamp, marker, payload, arrival_us / 1e6))
        if assembler.need_keyframe and assembler.dropped_frames > dropped:
            self._request_keyframe(state)

    def _sender_report(self, item: tuple[Any, ...]) -> None:
        _, tap, track, ntp, rtp_timestamp, arrival = item
        state = self._state(tap, track)
        if state is not None:
            state.clock.sender_report(ntp, rtp_timestamp, arrival)

    def _discontinuity(self) -> None:
        for state in self._tracks.values():
            self._frames(state, state.assembler.discontinuity())

    def _request_keyframe(self, state: _TrackState) -> None:
        now = time.monotonic()
        loop = self._loop
        if loop is None or now - state.last_request < KEYFRAME_REQUEST_INTERVAL:
            return
        state.last_request = now
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(state.track.request_keyframe)

    def _frames(self, state: _TrackState, frames: list[AssembledFrame]) -> None:
        kind = state.track.kind
        for item in frames:
            when = state.clock.time(item.timestamp, item.arrival)
            if self._sink is None:
                if kind == "audio" and self.video_codec is not None:
                    self._pending_audio.append((when, item.frame))
                    continue
                self._open(when, item.frame if kind == "video" else None, state)
                if kind == "video":
                    for at, audio in self._pending_audio:
                        if at >= when:
                            self._write("audio", audio, at)
                    self._pending_audio.clear()
            self._write(kind, item.frame, when)

    def _open(self, when: float, video: EncodedFrame | None, state: _TrackState) -> None:
        self.started = when
        self._origin = when
        self.directory.mkdir(parents=True, exist_ok=True)
        ext = container_extension(self.video_codec)
        name = utc_name(when)
        path = self.directory / f"{name}.{ext}"
        n = 1
        while path.exists():
            path = self.directory / f"{name}-{n}.{ext}"
            n += 1
        sink = self._sink_factory(path, self.video_codec, self.audio_codec)
        depacketize = state.assembler.depacketize
        params = depacketize.h264.parameter_sets if depacketize.h264 is not None else None
        sink.open(video, params)
        self._sink = sink
        self.path = path
        log.info("recording %s to %s", self.stream, path)
        self._write_metadata(final=False)

    def _write(self, kind: str, frame: EncodedFrame, when: float) -> None:
        assert self._sink is not None
        pts = when - self._origin
        if pts < 0:
            if kind == "video" and not frame.keyframe:
                return
            pts = 0.0
        self._sink.write(kind, frame, pts)
        self._written[kind] += 1
        self._end = max(self._end, pts)
        now = time.monotonic()
        if now - self._meta_at >= METADATA_INTERVAL:
            self._write_metadata(final=False)

    def _finish(self) -> None:
        for state in self._tracks.values():
            self._frames(state, state.assembler.flush())
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            finally:
                end = getattr(sink, "end", None)
                if isinstance(end, float):
                    self._end = max(self._end, end)
                self._write_metadata(final=True)
                log.info("recording %s finished: %s (%.1f s)", self.stream, self.path, self._end)

    def _write_metadata(self, *, final: bool) -> None:
        """``<file>.json`` next to the file: start, duration so far, codecs, counters."""
        if self.path is None or self.started is None:
            return
        self._meta_at = time.monotonic()
        meta = {
            "stream": self.stream,
            "start": self.started,
            "duration": round(self._end, 3),
            "complete": final,
            "codecs": {
                k: v for k, v in (("video", self.video_codec), ("audio", self.audio_codec)) if v
            },
            "frames": dict(self._written),
            "dropped_packets": self.dropped_packets,
            "overflows": self.overflows,
        }
        side = self.path.with_name(self.path.name + ".json")
        tmp = side.with_name(side.name + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, side)


def check_record_dir(root: Path) -> None:
    """Refuse to start when recordings could not be written (ConfigError says why)."""
    if importlib.util.find_spec("av") is None:
        raise ConfigError(
            "--record-dir needs PyAV to write the files: pip install relaycast[record]"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--record-dir {str(root)!r} cannot be created: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"--record-dir {str(root)!r} is not writable")


def recordable_codecs(publisher: Publisher) -> tuple[str | None, str | None]:
    """The (video, audio) codecs of a publisher that relaycast can record."""
    codecs = publisher.codecs()
    video = codecs["video"].name.lower() if "video" in codecs else None
    audio = codecs["audio"].name.lower() if "audio" in codecs else None
    return (video if video in VIDEO_CODECS else None, audio if audio in AUDIO_CODECS else None)


class Recorder:
    """The recordings of one server, driven from the event loop (attach, tick, close)."""

    def __init__(self, config: Config, *, grace: float = RECONNECT_GRACE) -> None:
        self.config = config
        self.root = Path(config.record_dir) if config.record_dir else None
        if self.root is not None:
            check_record_dir(self.root)
        self.grace = grace
        self.recordings: dict[str, Recording] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def attach(self, stream: str, publisher: Publisher) -> None:
        """A publisher of *stream* arrived: continue its recording or start one."""
        if self.root is None or not self.config.records(stream):
            return
        video, audio = recordable_codecs(publisher)
        current = self.recordings.get(stream)
        if current is not None and not current.done and current.matches(video, audio):
            recording = current
        else:
            if current is not None:
                current.close_async()
                log.info("recording %s: the new publisher's codecs differ, new file", stream)
            if video is None and audio is None:
                self.recordings.pop(stream, None)
                log.warning("recording %s: nothing recordable in %s", stream, publisher.codecs())
                return
            recording = Recording(stream, self.root / stream, video, audio, loop=self._loop)
            self.recordings[stream] = recording
        recording.publisher = publisher
        recording.left_at = None
        publisher.ingress.recording = recording.tap()

    def tick(self, now: float) -> None:
        """Slow timer: notice publishers that left; close recordings after the grace period."""
        for stream, recording in list(self.recordings.items()):
            publisher = recording.publisher
            if publisher is not None and (
                publisher.closed or publisher.stream.publisher is not publisher
            ):
                recording.publisher = None
                recording.left_at = now
            if recording.done or (
                recording.left_at is not None and now - recording.left_at >= self.grace
            ):
                recording.close_async()
                del self.recordings[stream]

    def close(self) -> None:
        """Finish every file (blocking; call it from a thread at shutdown)."""
        recordings = list(self.recordings.values())
        self.recordings.clear()
        for recording in recordings:
            recording.close_async()
        for recording in recordings:
            recording.close(timeout=30.0)

    def stats(self) -> dict[str, int]:
        return {
            "active": len(self.recordings),
            "overflows": sum(r.overflows for r in self.recordings.values()),
            "dropped_packets": sum(r.dropped_packets for r in self.recordings.values()),
        }


def list_recordings(root: Path) -> list[dict[str, Any]]:
    """Every recording under *root*: stream, path (relative), size, start, duration, codecs."""
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(directory.iterdir()):
            if path.suffix not in (".webm", ".mp4") or not path.is_file():
                continue
            meta: dict[str, Any] = {}
            side = path.with_name(path.name + ".json")
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads(side.read_text())
            start = meta.get("start")
            out.append(
                {
                    "stream": directory.name,
                    "path": str(path.relative_to(root)),
                    "size": path.stat().st_size,
                    "start": (
                        datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat()
                        if isinstance(start, int | float)
                        else None
                    ),
                    "duration": meta.get("duration"),
                    "complete": meta.get("complete", False),
                    "codecs": meta.get("codecs", {}),
                }
            )
    return out
