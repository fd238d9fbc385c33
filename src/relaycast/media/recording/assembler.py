"""Frames from one SSRC's RTP packets: reordering, waiting for retransmissions, and the loss
rule (after a gap that is not filled in time, video waits for the next keyframe).

Time is the packets' arrival time (seconds), so the assembler is deterministic: a gap is given
up once a packet that arrived ``wait`` seconds after the first packet behind the gap has been
seen, or at :meth:`TrackAssembler.flush`.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaycast.media.recording.depacketize import Depacketizer, EncodedFrame, frame_start

__all__ = ["AssembledFrame", "TrackAssembler"]

SEQ_MOD = 1 << 16
MAX_BUFFERED = 4096  # packets waiting behind a gap; more and the gap is given up at once
RESTART_JUMP = 3000  # a sequence jump this large is a sender restart, not a loss (RFC 3550 A.1)


@dataclass(frozen=True, slots=True)
class AssembledFrame:
    """A frame ready for the container: RTP timestamp (32 bit) and arrival of its last packet."""

    timestamp: int
    frame: EncodedFrame
    arrival: float


class TrackAssembler:
    """One SSRC: packets in any order in, whole frames in order out."""

    def __init__(self, codec: str, kind: str, *, wait: float = 0.5) -> None:
        self.codec = codec
        self.kind = kind
        self.wait = wait
        self.depacketize = Depacketizer(codec)
        self._video = kind == "video"
        self._buffer: dict[int, tuple[int, bool, bytes, float]] = {}
        self._next: int | None = None  # extended sequence number expected next
        self._highest = 0
        self._now = 0.0
        self._frame: list[bytes] = []
        self._frame_ts: int | None = None
        self._frame_arrival = 0.0
        self._resync = True  # skip packets until one that can start a frame
        self.need_keyframe = self._video
        # counters
        self.frames = 0
        self.lost_packets = 0
        self.gaps = 0
        self.dropped_frames = 0  # damaged, or not a keyframe while one was needed
        self.late_packets = 0

    # -- input --------------------------------------------------------------------------------

    def push(
        self, seq: int, timestamp: int, marker: bool, payload: bytes, arrival: float
    ) -> list[AssembledFrame]:
        """One packet; returns the frames it completed (possibly none)."""
        self._now = max(self._now, arrival)
        ext = self._extend(seq)
        if ext is None:
            return []
        self._buffer.setdefault(ext, (timestamp, marker, payload, arrival))
        return self._drain(final=False)

    def flush(self) -> list[AssembledFrame]:
        """The end of the track: every gap is final, the last frame ends with its packets."""
        out = self._drain(final=True)
        out.extend(self._finish())
        return out

    def discontinuity(self) -> list[AssembledFrame]:
        """Packets were dropped before they reached us (queue overflow): what is whole is kept,
        then the assembler starts over at the next packet and, for video, the next keyframe."""
        out = self.flush()
        self._buffer.clear()
        self._next = None
        self._resync = True
        self.need_keyframe = self._video
        return out

    # -- internals ----------------------------------------------------------------------------

    def _extend(self, seq: int) -> int | None:
        if self._next is None:
            self._next = self._highest = seq
            return seq
        base = self._highest
        ext = base + ((seq - base + SEQ_MOD // 2) % SEQ_MOD) - SEQ_MOD // 2
        if ext > base + RESTART_JUMP or ext < self._next - RESTART_JUMP:
            # the sender restarted its sequence: what is buffered is final, start again here
            self._buffer.clear()
            self._lose()
            self._next = self._highest = ext
            return ext
        if ext < self._next:
            self.late_packets += 1  # a retransmission after we gave up, or a duplicate
            return None
        self._highest = max(self._highest, ext)
        return ext

    def _drain(self, *, final: bool) -> list[AssembledFrame]:
        out: list[AssembledFrame] = []
        buffer = self._buffer
        while buffer:
            assert self._next is not None
            item = buffer.pop(self._next, None)
            if item is not None:
                self._next += 1
                self._consume(item, out)
                continue
            first = min(buffer)
            waited = self._now - buffer[first][3]
            if not (final or waited >= self.wait or len(buffer) > MAX_BUFFERED):
                break
            self.lost_packets += first - self._next
            self.gaps += 1
            self._lose()
            self._next = first
        return out

    def _lose(self) -> None:
        """A gap is final: the frame being assembled is damaged; video needs a keyframe."""
        if self._frame_ts is not None:
            self.dropped_frames += 1
        self._frame = []
        self._frame_ts = None
        self._resync = True
        if self._video:
            self.need_keyframe = True

    def _consume(self, item: tuple[int, bool, bytes, float], out: list[AssembledFrame]) -> None:
        timestamp, marker, payload, arrival = item
        if not payload:
            return  # padding-only
        if not self._video:
            self._emit(timestamp, [payload], arrival, out)
            return
        if self._frame_ts is not None and timestamp != self._frame_ts:
            out.extend(self._finish())  # the previous frame ended without a marker bit
        if self._resync:
            if not frame_start(self.codec, payload):
                return
            self._resync = False
        if self._frame_ts is None:
            self._frame_ts = timestamp
        self._frame.append(payload)
        self._frame_arrival = arrival
        if marker:
            out.extend(self._finish())

    def _finish(self) -> list[AssembledFrame]:
        if self._frame_ts is None:
            return []
        payloads, timestamp = self._frame, self._frame_ts
        self._frame = []
        self._frame_ts = None
        out: list[AssembledFrame] = []
        self._emit(timestamp, payloads, self._frame_arrival, out)
        return out

    def _emit(
        self, timestamp: int, payloads: list[bytes], arrival: float, out: list[AssembledFrame]
    ) -> None:
        try:
            frame = self.depacketize(payloads)
        except ValueError:
            self.dropped_frames += 1
            if self._video:
                self.need_keyframe = True
            return
        if self.need_keyframe:
            if not frame.keyframe:
                self.dropped_frames += 1
                return
            self.need_keyframe = False
        self.frames += 1
        out.append(AssembledFrame(timestamp, frame, arrival))
