"""Transport-wide sequence numbers towards one viewer and what was sent under them.

One :class:`Sequencer`-like object per viewer transport, shared by its audio and video
DownTracks (and their native kernel slots): every RTP packet to the viewer takes the next
16-bit number (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2), and its send time and
wire size are kept in a ring of ``capacity`` entries, so the viewer's feedback can be joined
with them (:class:`TransportFeedbackAdapter`).

:class:`PySequencer` is the pure-Python one (the fallback and the clock-injected one the
simulations use); with the native kernel the C ``relaycast.native._fanout.Sequencer`` is used,
which the kernel stamps and records into without the GIL. Both have:

* ``stamp() -> int``: take the next sequence number (16-bit);
* ``sent(seq, size, at_us=-1)``: record a packet sent under ``seq`` (``-1``: now, monotonic
  clock, microseconds);
* ``lookup(base, count) -> (base_ext, [(send_us, size) | None, ...])``: the entries of ``count``
  sequence numbers from the 16-bit ``base`` (unwrapped against the last stamped one), None for
  a number not sent or already overwritten;
* ``stamped``: how many numbers were taken.
"""

from __future__ import annotations

import time
from typing import Protocol

from relaycast.media.bwe.estimator import BandwidthEstimator, SentPacket
from relaycast.rtp.rtcp import RtcpTransportFeedback

CAPACITY = 1024  # ~3 s of a 3 Mbit/s stream: feedback comes every 50-250 ms
_TICK = 0.00025  # receive delta unit (§3.1.5)
_REF = 0.064  # reference time unit (§3.1)


class SequencerLike(Protocol):
    @property
    def stamped(self) -> int: ...

    def stamp(self) -> int: ...

    def sent(self, seq: int, size: int, at_us: int = -1, /) -> None: ...

    def lookup(self, base: int, count: int, /) -> tuple[int, list[tuple[int, int] | None]]: ...


class PySequencer:
    """The pure-Python sequencer (see the module docstring)."""

    __slots__ = ("_ext", "_first", "_sizes", "_times", "capacity", "stamped")

    def __init__(self, capacity: int = CAPACITY, first: int = 0) -> None:
        if capacity < 1 or capacity > 1 << 16:
            raise ValueError("capacity must be 1..65536")
        self.capacity = capacity
        self.stamped = 0
        self._ext = [-1] * capacity
        self._times = [0] * capacity
        self._sizes = [0] * capacity
        self._first = first & 0xFFFF

    def stamp(self) -> int:
        seq = (self._first + self.stamped) & 0xFFFF
        self.stamped += 1
        return seq

    def _extend(self, seq: int) -> int:
        last = self._first + self.stamped - 1
        diff = ((last - seq + 0x8000) & 0xFFFF) - 0x8000
        return last - diff

    def sent(self, seq: int, size: int, at_us: int = -1, /) -> None:
        if self.stamped == 0:
            return
        ext = self._extend(seq & 0xFFFF)
        if ext < self._first or ext >= self._first + self.stamped:
            return
        if at_us < 0:
            at_us = time.monotonic_ns() // 1000
        index = ext % self.capacity
        self._ext[index] = ext
        self._times[index] = at_us
        self._sizes[index] = size

    def lookup(self, base: int, count: int, /) -> tuple[int, list[tuple[int, int] | None]]:
        if count < 0 or count > 0xFFFF:
            raise ValueError("count must be 0..65535")
        if self.stamped == 0:
            return 0, [None] * count
        base_ext = self._extend(base & 0xFFFF)
        out: list[tuple[int, int] | None] = []
        capacity = self.capacity
        for ext in range(base_ext, base_ext + count):
            index = ext % capacity
            if ext >= 0 and self._ext[index] == ext:
                out.append((self._times[index], self._sizes[index]))
            else:
                out.append(None)
        return base_ext, out


def new_sequencer(use_native: bool | None = None) -> SequencerLike:
    """The C sequencer whenever the kernel is built (a kernel slot stamps only with it; the
    Python path uses either), else the Python one. The first number is random (RFC 3550
    §5.1 does so for RTP's)."""
    import secrets

    from relaycast import native

    first = secrets.randbits(16)
    if use_native is None:
        use_native = native.available()
    if use_native:
        return native.new_sequencer(CAPACITY, first)
    return PySequencer(CAPACITY, first)


class TransportFeedbackAdapter:
    """Joins a viewer's transport-wide feedback with our send history for the estimator."""

    __slots__ = ("_reported", "estimator", "history", "unknown")

    def __init__(self, history: SequencerLike, estimator: BandwidthEstimator) -> None:
        self.history = history
        self.estimator = estimator
        self._reported = -1  # highest extended sequence number already given to the estimator
        self.unknown = 0  # reported numbers we have no record of (too old, or never sent)

    def results(self, feedback: RtcpTransportFeedback) -> list[SentPacket]:
        statuses = feedback.packets
        base_ext, entries = self.history.lookup(feedback.base_sequence, len(statuses))
        arrival = feedback.reference_time * _REF
        out: list[SentPacket] = []
        reported = self._reported
        ext = base_ext - 1
        for (_, delta), entry in zip(statuses, entries, strict=True):
            ext += 1
            if delta is not None:
                arrival += delta * _TICK
            if entry is None:
                self.unknown += 1
                continue
            if ext <= reported:
                continue  # reported before (a feedback repeated, or overlapping)
            reported = ext
            out.append((entry[0] / 1e6, entry[1], arrival if delta is not None else None))
        self._reported = reported
        return out

    def on_feedback(self, feedback: RtcpTransportFeedback, now: float) -> None:
        packets = self.results(feedback)
        if packets:
            self.estimator.on_transport_feedback(packets, now)
