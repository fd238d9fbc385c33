"""Which of a viewer's NACKed packets to resend: the responder side of RFC 4585 §6.2.1.

A viewer's NACK costs it nothing to send and costs the server one packet per sequence number it
names (RFC 4588 RTX when negotiated). Unbounded, one 1,280-byte RTCP packet naming 5,120
sequence numbers made the server resend 6 MB. :class:`RetransmitBudget` bounds what one viewer
can take:

* **a cap per RTCP packet**: at most ``max_per_rtcp`` distinct sequence numbers of one compound
  packet are considered (duplicates across its NACKs count once);
* **once per round trip**: a sequence number resent less than one RTT ago (the viewer's RTT from
  its receiver reports, RFC 3550 §6.4.1; ``default_rtt`` until measured) is not resent again;
* **a byte budget tied to the stream's bitrate**: a token bucket refilled at ``ratio`` x the
  source's bitrate (at least ``floor_bps``), holding at most ``burst`` seconds of that.

Pure and synchronous: the clock is injected as ``now`` (seconds, monotonic).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RetransmitBudget"]

_RING = 1024  # remembered resend times, indexed by sequence number (the cache depth)


class RetransmitBudget:
    """Per-viewer limits on retransmissions; counts what it refused."""

    __slots__ = (
        "_last",
        "_resent",
        "_tokens",
        "burst",
        "default_rtt",
        "floor_bps",
        "max_per_rtcp",
        "ratio",
        "refused",
    )

    def __init__(
        self,
        *,
        ratio: float = 0.5,
        burst: float = 1.0,
        floor_bps: float = 400_000.0,
        max_per_rtcp: int = 128,
        default_rtt: float = 0.05,
    ) -> None:
        self.ratio = ratio
        self.burst = burst
        self.floor_bps = floor_bps
        self.max_per_rtcp = max_per_rtcp
        self.default_rtt = default_rtt
        self._tokens: float | None = None  # bytes; None until first use (starts full)
        self._last = 0.0
        self._resent: list[tuple[int, float]] = [(-1, 0.0)] * _RING
        self.refused = 0

    def candidates(self, requested: Iterable[int], now: float, rtt: float | None) -> list[int]:
        """The sequence numbers of one RTCP packet worth resending, in request order."""
        interval = max(rtt if rtt is not None else self.default_rtt, 0.01)
        resent = self._resent
        chosen: list[int] = []
        seen: set[int] = set()
        refused = 0
        for seq in requested:
            if seq in seen:
                refused += 1
                continue
            seen.add(seq)
            if len(chosen) >= self.max_per_rtcp:
                refused += 1
                continue
            last_seq, last_time = resent[seq % _RING]
            if last_seq == seq and now - last_time < interval:
                refused += 1
                continue
            chosen.append(seq)
        self.refused += refused
        return chosen

    def spend(self, seq: int, size: int, now: float, bitrate_bps: float) -> bool:
        """Take ``size`` bytes for resending ``seq``; False (refused) when over budget."""
        rate = max(bitrate_bps, self.floor_bps) * self.ratio / 8.0  # bytes per second
        capacity = rate * self.burst
        tokens = self._tokens
        if tokens is None:
            tokens = capacity
        else:
            tokens = min(capacity, tokens + rate * max(now - self._last, 0.0))
        self._last = now
        if tokens < size:
            self._tokens = tokens
            self.refused += 1
            return False
        self._tokens = tokens - size
        self._resent[seq % _RING] = (seq, now)
        return True
