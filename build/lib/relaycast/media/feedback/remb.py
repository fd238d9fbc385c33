"""Receiver Estimated Maximum Bitrate, the fallback for publishers without transport-cc
(draft-alvestrand-rmcat-remb-03).

Deliberately simple: the server does not run a delay-based estimator, it only has
to keep a publisher that negotiated REMB (and not transport-cc) from being stuck
at its start rate. The policy, evaluated in `build()`:

* `measured` is the receive rate over the last second (RTP packet sizes, bits/s).
* loss < 2 % (last value given to `on_loss`): the estimate grows by 8 % per second
  of elapsed time, and is at least 1.5 x the measured rate:
  ``estimate = max(estimate * 1.08 ** dt, measured * 1.5)``.
* loss > 10 %: the estimate drops to 85 % of the measured rate when that is lower:
  ``estimate = min(estimate, measured * 0.85)``, once per loss report.
* otherwise (2-10 %): hold.
* always clamped to [min_bitrate, max_bitrate]; it starts at `start_bitrate`
  (1.5 Mbps by default).

A REMB is emitted at most once per second, or at once when the estimate has
dropped by more than 10 % since the last REMB sent. From 1.5 Mbps on a clean link
an app-limited sender reaches 10 Mbps within ~25 s by the 8 %/s growth alone; a
sender that fills its budget gets there faster through the 1.5 x measured term.

Pure and synchronous: the clock is injected as `now` (seconds, monotonic).
"""

from __future__ import annotations

from collections import deque

from relaycast.rtp.rtcp import RtcpRemb

__all__ = ["RembEstimator"]

RATE_WINDOW = 1.0  # seconds over which the receive rate is measured
SEND_INTERVAL = 1.0  # seconds between periodic REMBs
GROWTH_PER_SECOND = 1.08
MEASURED_HEADROOM = 1.5
BACKOFF = 0.85
LOW_LOSS = 0.02
HIGH_LOSS = 0.10
DROP_TRIGGER = 0.90  # send at once when estimate < 90 % of the last one sent


class RembEstimator:
    """Receive-rate-based bandwidth estimate for one publisher, reported as REMB."""

    __slots__ = (
        "_estimate",
        "_first_packet",
        "_last_sent_time",
        "_last_sent_value",
        "_last_update",
        "_loss",
        "_loss_fresh",
        "_window",
        "_window_bytes",
        "max_bitrate",
        "min_bitrate",
        "sender_ssrc",
        "sent",
    )

    def __init__(
        self,
        sender_ssrc: int,
        *,
        min_bitrate: int = 300_000,
        max_bitrate: int = 10_000_000,
        start_bitrate: int = 1_500_000,
    ) -> None:
        if not 0 < min_bitrate <= max_bitrate:
            raise ValueError(
                f"need 0 < min_bitrate <= max_bitrate, got {min_bitrate}, {max_bitrate}"
            )
        self.sender_ssrc = sender_ssrc
        self.min_bitrate = min_bitrate
        self.max_bitrate = max_bitrate
        self.sent = 0
        self._estimate = float(min(max_bitrate, max(min_bitrate, start_bitrate)))
        self._window: deque[tuple[float, int]] = deque()
        self._window_bytes = 0
        self._first_packet: float | None = None
        self._loss = 0.0
        self._loss_fresh = False
        self._last_update: float | None = None
        self._last_sent_time: float | None = None
        self._last_sent_value = 0.0

    @property
    def estimate(self) -> int:
        """Current estimate in bits per second."""
        return int(self._estimate)

    @property
    def loss(self) -> float:
        return self._loss

    def on_packet(self, size: int, now: float) -> None:
        """Counts one received RTP packet of `size` bytes."""
        self._window.append((now, size))
        self._window_bytes += size
        if self._first_packet is None:
            self._first_packet = now
        self._expire(now)

    def on_loss(self, fraction: float) -> None:
        """Latest loss fraction (0..1), e.g. from the receiver report's fraction lost / 256."""
        self._loss = min(1.0, max(0.0, fraction))
        self._loss_fresh = True

    def _expire(self, now: float) -> None:
        window = self._window
        horizon = now - RATE_WINDOW
        while window and window[0][0] <= horizon:
            self._window_bytes -= window.popleft()[1]

    def measured_rate(self, now: float) -> float:
        """Receive rate in bits/s over the last second (shorter span at the start)."""
        self._expire(now)
        if self._first_packet is None:
            return 0.0
        span = min(RATE_WINDOW, max(now - self._first_packet, 0.25))
        return self._window_bytes * 8 / span

    def _update(self, now: float) -> None:
        last = self._last_update
        self._last_update = now
        dt = 0.0 if last is None else min(max(now - last, 0.0), 5.0)
        measured = self.measured_rate(now)
        estimate = self._estimate
        if self._loss < LOW_LOSS:
            estimate = max(estimate * GROWTH_PER_SECOND**dt, measured * MEASURED_HEADROOM)
        elif self._loss > HIGH_LOSS and self._loss_fresh:
            # Once per loss report, so a stale report does not ratchet it down.
            estimate = min(estimate, measured * BACKOFF)
        self._loss_fresh = False
        self._estimate = min(float(self.max_bitrate), max(float(self.min_bitrate), estimate))

    def build(self, now: float, ssrcs: list[int]) -> RtcpRemb | None:
        """Updates the estimate and returns a REMB for `ssrcs` when one is due."""
        self._update(now)
        estimate = self._estimate
        last_time = self._last_sent_time
        if (
            last_time is not None
            and now - last_time < SEND_INTERVAL
            and estimate >= self._last_sent_value * DROP_TRIGGER
        ):
            return None
        self._last_sent_time = now
        self._last_sent_value = estimate
        self.sent += 1
        return RtcpRemb(self.sender_ssrc, int(estimate), list(ssrcs))

    def __repr__(self) -> str:
        return f"RembEstimator(estimate={int(self._estimate)}, loss={self._loss:.3f})"
