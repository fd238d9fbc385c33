"""The delay-based half of the estimator (draft-ietf-rmcat-gcc-02 §5, as libwebrtc builds it).

* :class:`InterArrival` groups packets sent within ``GROUP_SPAN`` of each other (§5.2: a
  "group" is what one burst of the pacer puts on the wire) and yields, per completed group, the
  inter-group deltas of send and arrival time. Their difference is the *delay variation*.
* :class:`TrendlineFilter` replaces the draft's Kalman filter with libwebrtc's trendline: the
  accumulated delay variation is smoothed (exponential, 0.9) and the slope of a least-squares
  line through the last ``WINDOW`` (arrival time, smoothed delay) points is the queue trend.
* :class:`OveruseDetector` compares the scaled trend with an adaptive threshold (§5.4, eq. 5:
  ``gamma += dt * k * (|m| - gamma)``, k_u = 0.0087 above, k_d = 0.039 below) and signals
  ``OVERUSE`` (sustained for 10 ms and still rising), ``UNDERUSE`` or ``NORMAL``.
* :class:`AimdRateControl` (§5.5): Increase (8 %/s multiplicative far from the last congestion
  point, about one packet per response time near it), Decrease (to 0.9 x the acknowledged
  receive rate, at most once per round trip unless the receive rate fell below half), Hold.

Times are seconds (float) on the sender's clock for send times, the receiver's clock for arrival
times (only differences are used); rates are bits per second.
"""

from __future__ import annotations

import enum
import math
from collections import deque

GROUP_SPAN = 0.005  # packets sent within 5 ms form one group (§5.2)
BURST_ARRIVAL = 0.005  # arrivals closer than this with negative propagation delta: same burst
MAX_BURST = 0.1  # a burst group never spans more than this
WINDOW = 20  # trendline window, in groups
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
MAX_DELTAS = 60
K_UP = 0.0087
K_DOWN = 0.039
THRESHOLD_START = 12.5  # ms
THRESHOLD_MIN, THRESHOLD_MAX = 6.0, 600.0
OVERUSE_TIME = 0.010  # seconds the trend must stay above the threshold
BETA = 0.9  # draft §5.5: in [0.8, 0.95]; 0.9 keeps the sawtooth within 10 % of capacity
MIN_RATE = 30_000


class Usage(enum.Enum):
    NORMAL = "normal"
    UNDERUSE = "underuse"
    OVERUSE = "overuse"


class InterArrival:
    """Packet groups by send time; ``add`` returns ``(send_delta, arrival_delta, arrival)`` of
    the group that a new one completes, or None."""

    __slots__ = ("_cur", "_prev")

    def __init__(self) -> None:
        # [first send, last send, first arrival, last arrival]
        self._cur: list[float] | None = None
        self._prev: list[float] | None = None

    def add(self, send: float, arrival: float) -> tuple[float, float, float] | None:
        cur = self._cur
        if cur is None:
            self._cur = [send, send, arrival, arrival]
            return None
        if send < cur[0]:
            return None  # reordered into an older group: ignore (as libwebrtc does)
        if self._belongs(cur, send, arrival):
            cur[1] = max(cur[1], send)
            cur[3] = max(cur[3], arrival)
            return None
        prev = self._prev
        result = None
        if prev is not None:
            send_delta = cur[1] - prev[1]
            arrival_delta = cur[3] - prev[3]
            if arrival_delta >= 0 or send_delta > 0:
                result = (send_delta, arrival_delta, cur[3])
        self._prev = cur
        self._cur = [send, send, arrival, arrival]
        return result

    @staticmethod
    def _belongs(cur: list[float], send: float, arrival: float) -> bool:
        if send - cur[0] <= GROUP_SPAN:
            return True
        # a burst: arrived right after the group and sooner than it was sent (queue drained)
        arrival_delta = arrival - cur[3]
        propagation = arrival_delta - (send - cur[1])
        return propagation < 0 and arrival_delta <= BURST_ARRIVAL and arrival - cur[2] < MAX_BURST


class TrendlineFilter:
    """Slope of the smoothed accumulated delay variation over the last ``WINDOW`` groups (a
    least-squares line kept with running sums: O(1) per group)."""

    __slots__ = (
        "_accumulated",
        "_first_arrival",
        "_history",
        "_smoothed",
        "_sx",
        "_sxx",
        "_sxy",
        "_sy",
        "deltas",
        "trend",
    )

    def __init__(self) -> None:
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival: float | None = None
        self._history: deque[tuple[float, float]] = deque()
        self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.deltas = 0
        self.trend = 0.0

    def update(self, variation_ms: float, arrival: float) -> float:
        if self._first_arrival is None:
            self._first_arrival = arrival
        self.deltas = min(self.deltas + 1, MAX_DELTAS)
        self._accumulated += variation_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        x, y = (arrival - self._first_arrival) * 1000.0, self._smoothed
        history = self._history
        history.append((x, y))
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        if len(history) > WINDOW:
            ox, oy = history.popleft()
            self._sx -= ox
            self._sy -= oy
            self._sxx -= ox * ox
            self._sxy -= ox * oy
            if self.deltas == MAX_DELTAS and int(x) % 997 == 0:  # now and then: exact sums again
                self._sx = sum(p[0] for p in history)
                self._sy = sum(p[1] for p in history)
                self._sxx = sum(p[0] * p[0] for p in history)
                self._sxy = sum(p[0] * p[1] for p in history)
        if len(history) == WINDOW:
            n = WINDOW
            den = self._sxx - self._sx * self._sx / n
            if den > 1e-9:
                self.trend = (self._sxy - self._sx * self._sy / n) / den
        return self.trend

    @property
    def modified_trend(self) -> float:
        return self.deltas * self.trend * THRESHOLD_GAIN


class OveruseDetector:
    """Adaptive-threshold detector on the modified trend (§5.4)."""

    __slots__ = ("_counter", "_last_update", "_over_time", "_prev_trend", "threshold", "usage")

    def __init__(self) -> None:
        self.threshold = THRESHOLD_START
        self.usage = Usage.NORMAL
        self._over_time = -1.0
        self._counter = 0
        self._prev_trend = 0.0
        self._last_update: float | None = None

    def detect(self, trend: float, modified: float, send_delta: float, now: float) -> Usage:
        if modified > self.threshold:
            if self._over_time < 0:
                self._over_time = send_delta / 2
            else:
                self._over_time += send_delta
            self._counter += 1
            if self._over_time > OVERUSE_TIME and self._counter > 1 and trend >= self._prev_trend:
                self._over_time = 0.0
                self._counter = 0
                self.usage = Usage.OVERUSE
        elif modified < -self.threshold:
            self._over_time = -1.0
            self._counter = 0
            self.usage = Usage.UNDERUSE
        else:
            self._over_time = -1.0
            self._counter = 0
            self.usage = Usage.NORMAL
        self._prev_trend = trend
        self._update_threshold(modified, now)
        return self.usage

    def _update_threshold(self, modified: float, now: float) -> None:
        last = self._last_update
        self._last_update = now
        if last is None:
            return
        if abs(modified) > self.threshold + 15.0:
            return  # a spike (e.g. a route change) must not drag the threshold along
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        dt_ms = min((now - last) * 1000.0, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * dt_ms
        self.threshold = min(max(self.threshold, THRESHOLD_MIN), THRESHOLD_MAX)


class RateState(enum.Enum):
    HOLD = "hold"
    INCREASE = "increase"
    DECREASE = "decrease"


class AimdRateControl:
    """The rate the delay signal allows (§5.5)."""

    __slots__ = (
        "_capacity",
        "_capacity_var",
        "_last_change",
        "_last_decrease",
        "max_rate",
        "rate",
        "state",
    )

    def __init__(self, start: float, max_rate: float) -> None:
        self.rate = float(start)
        self.max_rate = float(max_rate)
        self.state = RateState.INCREASE
        self._last_change: float | None = None
        self._last_decrease: float | None = None
        self._capacity: float | None = None  # average acked rate at decreases (kbit/s)
        self._capacity_var = 0.4

    def set_rate(self, rate: float, now: float) -> None:
        self.rate = min(max(rate, MIN_RATE), self.max_rate)
        self._last_change = now

    def time_to_reduce(self, now: float, acked: float | None, rtt: float) -> bool:
        if self._last_decrease is None:
            return True
        interval = min(max(rtt, 0.01), 0.2)
        if now - self._last_decrease >= interval:
            return True
        return acked is not None and acked < 0.5 * self.rate

    def update(self, usage: Usage, acked: float | None, rtt: float, now: float) -> float:
        # state machine of §5.5 (figure 2)
        if usage is Usage.OVERUSE:
            self.state = RateState.DECREASE
        elif usage is Usage.UNDERUSE:
            self.state = RateState.HOLD
        elif self.state is RateState.HOLD:
            self.state = RateState.INCREASE
        last = self._last_change if self._last_change is not None else now
        dt = min(max(now - last, 0.0), 1.0)
        rate = self.rate
        if self.state is RateState.INCREASE:
            capacity = self._capacity
            if (
                acked is not None
                and capacity is not None
                and acked / 1000 > capacity + 3 * self._std()
            ):
                self._capacity = None  # the link got faster: search again
            if self._capacity is not None:
                rate += max(self._additive_rate(rtt) * dt, 0.0)
            else:
                rate += max(rate * (1.08**dt - 1.0), 1000.0 * dt)
            if acked is not None:
                limit = 1.5 * acked + 10_000  # an app-limited sender does not run away
                if rate > limit:
                    rate = max(self.rate, limit)  # ... nor is it pulled down by the clamp
        elif self.state is RateState.DECREASE:
            if acked is not None and self.time_to_reduce(now, acked, rtt):
                decreased = BETA * acked
                if decreased < rate:
                    rate = decreased
                self._observe_capacity(acked)
                self._last_decrease = now
            self.state = RateState.HOLD
        self.rate = min(max(rate, MIN_RATE), self.max_rate)
        self._last_change = now
        return self.rate

    def _std(self) -> float:
        assert self._capacity is not None
        return math.sqrt(self._capacity_var * self._capacity)

    def _observe_capacity(self, acked: float) -> None:
        kbps = acked / 1000
        if self._capacity is None:
            self._capacity = kbps
        else:
            self._capacity = 0.95 * self._capacity + 0.05 * kbps
        norm = max(self._capacity, 1.0)
        error = self._capacity - kbps
        self._capacity_var = min(
            max(0.95 * self._capacity_var + 0.05 * error * error / norm, 0.4), 2.5
        )

    def _additive_rate(self, rtt: float) -> float:
        """About one average packet per response time (rtt + 100 ms), at least 4 kbit/s/s."""
        bits_per_frame = self.rate / 30.0
        packets_per_frame = max(math.ceil(bits_per_frame / (1200 * 8)), 1)
        packet_bits = bits_per_frame / packets_per_frame
        return max(packet_bits / (rtt + 0.1), 4000.0)
