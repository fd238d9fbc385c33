"""Wrap-around arithmetic for RTP sequence numbers and timestamps (RFC 3550 Appendix A.1).

Sequence numbers are 16-bit and timestamps 32-bit counters that wrap; comparisons must be made
on the signed distance between two values, never on the raw numbers.
"""

from __future__ import annotations

__all__ = ["SeqUnwrapper", "seq_diff", "seq_newer", "ts_diff", "ts_newer"]


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in 16-bit sequence space, in ``-32768..32767``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes strictly after ``b`` (modulo 2**16)."""
    return seq_diff(a, b) > 0


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in 32-bit RTP timestamp space."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def ts_newer(a: int, b: int) -> bool:
    """True when RTP timestamp ``a`` comes strictly after ``b`` (modulo 2**32)."""
    return ts_diff(a, b) > 0


class SeqUnwrapper:
    """Extends 16-bit sequence numbers to unbounded integers (RFC 3550 Appendix A.1).

    Each value is placed at the extended position nearest to the highest one seen so far, so
    reordered packets (older than the highest) and wrap-arounds are both handled. The first value
    maps to itself; a packet older than the very first one, seen across a wrap, maps to a
    negative number.
    """

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    @property
    def highest(self) -> int | None:
        """The highest extended sequence number returned so far (None before the first)."""
        return self._highest

    def unwrap(self, seq16: int) -> int:
        """Return the extended sequence number of ``seq16``."""
        highest = self._highest
        if highest is None:
            self._highest = seq16 & 0xFFFF
            return self._highest
        ext = highest + (((seq16 - highest + 0x8000) & 0xFFFF) - 0x8000)
        if ext > highest:
            self._highest = ext
        return ext

    def reset(self) -> None:
        """Forget the history (e.g. when the source changes SSRC)."""
        self._highest = None
