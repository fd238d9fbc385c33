"""Server-driven buffering: each viewer's playout delay from its measured loss and jitter.

The playout-delay header extension (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay,
3 bytes: 12-bit minimum and 12-bit maximum delay in 10 ms units) asks the receiver's jitter
buffer to hold video at least ``min`` and at most ``max``. Browsers honour it for video (audio
follows through A/V sync), so every WHEP player gets what our viewer page does for itself.

The policy is the viewer page's own (web/js/watch.js, ``applyAdaptiveBuffering``'s automatic
mode), evaluated once a second from what the server measures (LiveKit's playoutdelay.go is the
read-only anchor for doing it server-side):

=========  =========  =====================================
level      minimum    entered when loss >= or jitter >=
=========  =========  =====================================
clean         0 ms    —
light       200 ms    1 %   or  20 ms
moderate    500 ms    4 %   or  50 ms
heavy      1000 ms    10 %  or 100 ms
=========  =========  =====================================

* loss: the worse of the viewer's receiver-report fraction lost (its audio and video) and the
  transport-wide feedback's loss over the last interval;
* jitter: the receiver report's interarrival jitter of the audio (of the video without audio);
* up: as soon as two consecutive evaluations call for a higher level, straight to it; not while
  the viewer's path is congested (the estimator's delay signal saw a queue building within the
  last 3 s: a layer above the link, a probe cluster, a fast-start burst): buffering does not
  help there, the layer selection does, and every raise costs the viewer a stall while its
  jitter buffer fills (Chromium counts each raise of 200 ms or more as a freeze); nor in a
  viewer's first 4 s (``congestion.JOIN_GRACE``), whose losses are the fast-start burst's;
* down: one level at a time, after 10 consecutive evaluations with loss and jitter below half
  of the current level's entry thresholds.

The maximum is ``MAX_MS`` (10 s, the browsers' own default), so that a larger
``jitterBufferTarget`` the page sets itself (its manual setting) still takes effect: Chromium
uses the larger of the two minimums. ``(0, 0)`` would mean "render at once, no smoothing" and
is never sent.

Pure and clock-injected.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LEVELS", "Level", "PlayoutDelayController", "encode"]

MAX_MS = 10_000
UNIT_MS = 10
UP_AFTER = 2  # evaluations
DOWN_AFTER = 10
INTERVAL = 1.0  # seconds between evaluations


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    min_ms: int
    loss: float  # fraction
    jitter_ms: float


LEVELS = (
    Level("clean", 0, 0.0, 0.0),
    Level("light", 200, 0.01, 20.0),
    Level("moderate", 500, 0.04, 50.0),
    Level("heavy", 1000, 0.10, 100.0),
)


def encode(min_ms: int, max_ms: int) -> bytes:
    """The extension's 3 bytes: min and max in 10 ms units, 12 bits each (clamped)."""
    low = min(max(min_ms // UNIT_MS, 0), 0xFFF)
    high = min(max(max_ms // UNIT_MS, low), 0xFFF)
    return bytes(((low >> 4) & 0xFF, ((low & 0xF) << 4) | (high >> 8), high & 0xFF))


def decode(value: bytes) -> tuple[int, int]:
    """(min ms, max ms) from the extension's 3 bytes."""
    if len(value) != 3:
        raise ValueError("the playout-delay extension is 3 bytes")
    low = (value[0] << 4) | (value[1] >> 4)
    high = ((value[1] & 0xF) << 8) | value[2]
    return low * UNIT_MS, high * UNIT_MS


def level_for(loss: float, jitter_ms: float) -> int:
    index = 0
    for i, level in enumerate(LEVELS):
        if i and (loss >= level.loss or jitter_ms >= level.jitter_ms):
            index = i
    return index


class PlayoutDelayController:
    """One viewer's level; ``evaluate`` once a second returns the (min, max) to send."""

    __slots__ = ("_down", "_last", "_up", "changes", "index", "jitter_ms", "loss")

    def __init__(self) -> None:
        self.index = 0
        self.loss = 0.0
        self.jitter_ms = 0.0
        self.changes = 0
        self._up = 0
        self._down = 0
        self._last: float | None = None

    @property
    def level(self) -> Level:
        return LEVELS[self.index]

    @property
    def delay(self) -> tuple[int, int]:
        return self.level.min_ms, MAX_MS

    def evaluate(
        self, loss: float, jitter_ms: float, now: float, congested: bool = False
    ) -> tuple[int, int] | None:
        """The measurements of the last second; the new (min, max) when the level changed,
        else None. Calls closer than ``INTERVAL`` apart count once. ``congested``: the
        estimator saw a queue building just now, so the loss and jitter are congestion (the
        layer selection's business): they do not raise the level."""
        if self._last is not None and now - self._last < INTERVAL * 0.9:
            return None
        self._last = now
        self.loss, self.jitter_ms = loss, jitter_ms
        wanted = level_for(loss, jitter_ms)
        current = self.index
        if congested:
            wanted = min(wanted, current)
        if wanted > current:
            self._down = 0
            self._up += 1
            if self._up >= UP_AFTER:
                return self._move(wanted)  # straight to the level called for
            return None
        self._up = 0
        level = LEVELS[current]
        if current and loss < level.loss / 2 and jitter_ms < level.jitter_ms / 2:
            self._down += 1
            if self._down >= DOWN_AFTER:
                return self._move(current - 1)
        else:
            self._down = 0
        return None

    def _move(self, index: int) -> tuple[int, int]:
        self.index = index
        self.changes += 1
        self._up = self._down = 0
        return self.delay
