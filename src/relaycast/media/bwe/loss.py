"""The loss-based half of the estimator (draft-ietf-rmcat-gcc-02 §6) and the acknowledged rate.

:class:`LossController`: the loss fraction of an interval (from transport-wide feedback, or the
viewer's receiver reports when there is none) moves the rate it allows:

* loss > 10 %: ``rate = estimate * (1 - 0.5 * loss)``, at most once per ``300 ms + rtt``, but
  not below ``floor`` (the estimator passes 0.85 x the rate the viewer received: repeated
  decreases while a sender cannot yet slow down would otherwise compound far below the link);
* loss < 2 %: the constraint relaxes by 8 % a second (it only matters while it is the lower of
  the two halves, so it never runs away on its own: the delay half or REMB bound the estimate);
* in between: hold.

:class:`AckedRate`: bytes the viewer received over the last ``ACKED_WINDOW`` seconds of its own
arrival clock: the throughput the AIMD controller decreases from and clamps its increase to.
"""

from __future__ import annotations

from collections import deque

HIGH_LOSS = 0.10
LOW_LOSS = 0.02
RELAX_PER_SECOND = 1.08
DECREASE_HOLD = 0.3  # + rtt between two loss decreases
ACKED_WINDOW = 0.25
ACKED_MIN_SPAN = 0.1


class LossController:
    __slots__ = ("_last", "_last_decrease", "loss", "max_rate", "rate")

    def __init__(self, max_rate: float) -> None:
        self.max_rate = float(max_rate)
        self.rate = float(max_rate)  # no constraint until loss is seen
        self.loss = 0.0
        self._last: float | None = None
        self._last_decrease: float | None = None

    def update(
        self, loss: float, estimate: float, rtt: float, now: float, floor: float = 0.0
    ) -> float:
        """One interval's loss fraction (0..1) with the current overall ``estimate``; a
        decrease stops at ``floor`` (what the viewer demonstrably received: a sender that
        cannot lower its rate at once, such as a layer waiting for the keyframe of a lower
        one, keeps losing packets for a while, and each decrease would compound)."""
        loss = min(max(loss, 0.0), 1.0)
        self.loss = loss
        dt = 0.0 if self._last is None else min(max(now - self._last, 0.0), 2.0)
        self._last = now
        if loss > HIGH_LOSS:
            last = self._last_decrease
            if last is None or now - last >= DECREASE_HOLD + rtt:
                decreased = min(self.rate, estimate) * (1.0 - 0.5 * loss)
                self.rate = min(max(decreased, floor), self.rate)
                self._last_decrease = now
        elif loss < LOW_LOSS:
            self.rate = min(self.rate * RELAX_PER_SECOND**dt, self.max_rate)
            if self.rate >= self.max_rate:
                self.rate = self.max_rate
        return self.rate


class AckedRate:
    """Receive rate (bits/s) over the last ``ACKED_WINDOW`` s of arrival time, None until a
    tenth of a second is covered."""

    __slots__ = ("_bytes", "_packets")

    def __init__(self) -> None:
        self._packets: deque[tuple[float, int]] = deque()
        self._bytes = 0

    def add(self, arrival: float, size: int) -> None:
        packets = self._packets
        if packets and arrival < packets[-1][0]:
            arrival = packets[-1][0]  # reordered: counts as arriving with the newest
        packets.append((arrival, size))
        self._bytes += size
        horizon = arrival - ACKED_WINDOW
        while packets and packets[0][0] < horizon:
            self._bytes -= packets.popleft()[1]

    def rate(self) -> float | None:
        packets = self._packets
        if len(packets) < 2:
            return None
        span = packets[-1][0] - packets[0][0]
        if span < ACKED_MIN_SPAN:
            return None
        # the first packet's bytes arrived before the span began
        return (self._bytes - packets[0][1]) * 8 / span

    def reset(self) -> None:
        self._packets.clear()
        self._bytes = 0
