"""Simulcast layers: what each layer is, and which one a viewer gets.

A simulcast publisher's video encodings (RFC 8853; named by RTP stream id, RFC 8852) each feed
their own :class:`~relaycast.media.forwarder.Forwarder` (``Forwarder.layer(rid)`` of the
stream's video Forwarder), so every layer has its own packet cache, GOP cache and native
kernel group. A viewer's video DownTrack is in one of them; :class:`LayerSelector` decides
which (pure, clock injected), and ``DownTrack.switch_to`` carries the decision out at a
keyframe of the target layer.

The rules (docs/design.md, "Simulcast"):

* layers are ordered by picture size (from their keyframes), then bitrate;
* *auto*: the highest layer whose bitrate fits the viewer's estimate. Down at once when the
  estimate falls below 0.8 x the current layer's bitrate, after 1 s when it stays just below
  it; up only when the estimate has been above 1.15 x the higher layer's bitrate for 3 s (a
  higher layer, not necessarily the same one all along), and, with the estimator's probing, a
  probe showed the link carries it, or 8 s more passed without a probe result. No layer fits:
  the lowest one for 2 s, then the video pauses (audio goes on) until the lowest one fits the
  way a step up does, and resumes with it;
* *pinned*: the layer the viewer asked for (WHEP layer extension), while it is sent;
* *top*: the highest layer sent, whatever the estimate: a cluster node pulling the stream
  (cluster/http.py), which serves viewers of every bandwidth from it;
* no estimate at all (no feedback yet): the top layer, as without simulcast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaycast.rtp.resolution import FrameSize

if TYPE_CHECKING:
    from relaycast.media.forwarder import Forwarder
    from relaycast.media.stream import Stream

UP_FACTOR = 1.15  # the estimate must exceed the higher layer's bitrate by this much ...
UP_HOLD = 3.0  # ... for this long (s) before we step up
#: with a prober, a step up waits for a probe's confirmation this much longer at most (s): a
#: viewer whose probes cannot complete (too little media on its current layer to make a
#: probe of, say) must not stay low for ever; a wrong step is undone at once by the next
#: estimate (down has no hold)
PROBE_PATIENCE = 8.0
#: an estimate below the current layer's bitrate but above this share of it switches down
#: only once it has stayed there ``DOWN_HOLD`` seconds; further below, at once
DOWN_AT_ONCE = 0.8
DOWN_HOLD = 1.0
#: the estimate must stay below the lowest layer's bitrate this long (s) before the video
#: pauses (on the lowest layer meanwhile): a dip of the estimate, or a keyframe's worth on the
#: layer's rate, is not worth a frozen picture
PAUSE_HOLD = 2.0
ACTIVE_WITHIN = 2.0  # a layer that sent nothing for this long is not offered (s)


@dataclass(frozen=True)
class LayerInfo:
    """One layer as the API and the WHEP layer extension show it."""

    rid: str
    width: int
    height: int
    fps: float
    bitrate_bps: int
    active: bool

    def as_json(self) -> dict[str, object]:
        return {
            "rid": self.rid,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 1),
            "bitrate_bps": self.bitrate_bps,
            "active": self.active,
        }


def layer_infos(video: Forwarder, now: float) -> list[LayerInfo]:
    """The layers of a stream's video Forwarder, lowest first (picture size, then bitrate)."""
    infos: list[LayerInfo] = []
    for rid, forwarder in video.layers.items():
        source = forwarder.source
        size = forwarder.frame_size()
        width, height = (size.width, size.height) if size is not None else (0, 0)
        if source is None:
            infos.append(LayerInfo(rid, width, height, 0.0, 0, False))
            continue
        active = now - source.last_arrival < ACTIVE_WITHIN
        infos.append(LayerInfo(rid, width, height, source.frame_rate, int(source.bitrate), active))
    infos.sort(key=lambda i: (i.width * i.height, i.bitrate_bps))
    return infos


def _rate(bps: float) -> str:
    if bps >= 1_000_000:
        return f"{bps / 1_000_000:.1f} Mbit/s"
    return f"{bps / 1000:.0f} kbit/s"


@dataclass(frozen=True)
class Decision:
    """``target`` is the rid to forward (None: pause the video); ``reason`` says why."""

    target: str | None
    reason: str


class LayerSelector:
    """One viewer's layer choice, with hysteresis. Pure: the caller passes time and inputs."""

    def __init__(self) -> None:
        self.mode = "auto"  # or "pinned", or "top"
        self.pinned: str | None = None
        self._up: tuple[str, float] | None = None  # (higher rid whose condition holds, since)
        #: the video is paused because no layer fits (resuming then waits like stepping up)
        self.paused = False
        self._below: float | None = None  # since when not even the lowest layer fits
        self._down: float | None = None  # since when the estimate is just below the layer

    def pin(self, rid: str | None) -> None:
        """Pin a layer (WHEP layer extension); None returns to automatic selection."""
        self.pinned = rid
        self.mode = "auto" if rid is None else "pinned"
        self._up = None

    def follow_top(self) -> None:
        """Always the highest layer sent, whatever the estimate (a cluster node's pull)."""
        self.pinned = None
        self.mode = "top"
        self._up = None
        self.paused = False

    def decide(
        self,
        layers: list[LayerInfo],
        current: str | None,
        estimate: int | None,
        now: float,
        probe_ok: Callable[[int], bool] | None = None,
    ) -> Decision:
        """The layer to forward. ``layers`` lowest first (:func:`layer_infos`), ``current`` the
        layer forwarded or being switched to (None: paused or none yet), ``estimate`` the
        viewer's bandwidth estimate (None: unknown), ``probe_ok(bps)`` whether a probe showed
        the link carries ``bps`` (None: no prober, the hold time alone decides)."""
        active = [layer for layer in layers if layer.active]
        if not active:
            return Decision(current, "no layer is being sent")
        rids = [layer.rid for layer in active]
        if self.mode == "top":
            return Decision(rids[-1], "a cluster node pulls the top layer")
        if self.mode == "pinned" and self.pinned is not None:
            if self.pinned in rids:
                return Decision(self.pinned, "pinned by viewer")
            auto = self._auto(active, current, estimate, now, probe_ok)
            return Decision(auto.target, f"pinned layer {self.pinned} is not sent; {auto.reason}")
        return self._auto(active, current, estimate, now, probe_ok)

    def _auto(
        self,
        active: list[LayerInfo],
        current: str | None,
        estimate: int | None,
        now: float,
        probe_ok: Callable[[int], bool] | None,
    ) -> Decision:
        if estimate is None:
            self._up = None
            self.paused = False
            return Decision(active[-1].rid, "no bandwidth estimate yet: top layer")
        est = _rate(estimate)
        fitting = [layer for layer in active if layer.bitrate_bps <= estimate]
        rids = [layer.rid for layer in active]
        at = rids.index(current) if current in rids else None
        if at is None and not self.paused:
            # the first choice, or the current layer is no longer sent: no hysteresis
            self._up = None
            return self._best(fitting, est)
        if at is not None and active[at].bitrate_bps > estimate:
            self._up = None
            layer = active[at]
            if estimate >= DOWN_AT_ONCE * layer.bitrate_bps:
                # just below: down if it lasts (the estimate dips after a probe's queue, the
                # layer's rate swings with the picture)
                if self._down is None:
                    self._down = now
                if now - self._down < DOWN_HOLD:
                    return Decision(current, f"estimate {est} just below {layer.rid}'s rate")
            self._down = None
            if not fitting:
                # not even the lowest layer fits: that one, and the video pauses if it lasts
                if self._below is None:
                    self._below = now
                left = PAUSE_HOLD - (now - self._below)
                if left > 0:
                    return Decision(
                        active[0].rid,
                        f"estimate {est} below lowest layer: video pauses in {left:.0f} s",
                    )
            self._below = None
            return self._best(fitting, est)
        self._below = None
        self._down = None
        higher = [
            layer
            for layer in active[(at + 1 if at is not None else 0) :]
            if estimate > UP_FACTOR * layer.bitrate_bps
        ]
        here = (
            f"fits {est} estimate"
            if at is not None
            else f"estimate {est} below lowest layer: video paused"
        )
        if not higher:
            self._up = None
            return Decision(current if at is not None else None, here)
        # up to the best layer that fits; out of a pause, to the lowest one (what the link
        # carries is unknown while so little goes to the viewer)
        candidate = higher[-1] if at is not None else higher[0]
        if self._up is None:
            # held since some higher layer first fitted: which one may change from second to
            # second (the top layer's bitrate and the estimate both move), the hold does not
            self._up = (candidate.rid, now)
        held = now - self._up[1]
        if held < UP_HOLD:
            return Decision(
                current if at is not None else None,
                f"{here}; {candidate.rid} fits, up in {UP_HOLD - held:.0f} s",
            )
        if (
            probe_ok is not None
            and held < UP_HOLD + PROBE_PATIENCE
            and not probe_ok(candidate.bitrate_bps)
        ):
            return Decision(
                current if at is not None else None, f"{here}; probing for {candidate.rid}"
            )
        self._up = None
        self.paused = False
        return Decision(candidate.rid, f"fits {est} estimate")

    def _best(self, fitting: list[LayerInfo], est: str) -> Decision:
        if not fitting:
            self.paused = True
            return Decision(None, f"estimate {est} below lowest layer: video paused")
        self.paused = False
        return Decision(fitting[-1].rid, f"fits {est} estimate")


class ViewerEstimate:
    """A viewer's bandwidth estimate when no estimator is attached (``subscriber.bwe``): the
    viewer's REMB (fresh within 5 s) and a loss-based rate from its receiver reports, in the
    manner of GCC's loss controller (draft-ietf-rmcat-gcc-02 §6): above 10 % loss the rate we
    sent times (1 - loss / 2); under 2 % it grows 8 % a report. None until either is known."""

    REMB_TTL = 5.0

    def __init__(self) -> None:
        self._remb: tuple[int, float] | None = None
        self._loss_based: float | None = None

    def on_remb(self, bps: int, now: float) -> None:
        self._remb = (bps, now)

    def on_receiver_report(self, fraction_lost: float, sent_bps: float, now: float) -> None:
        if fraction_lost > 0.10:
            base = min(self._loss_based or sent_bps, sent_bps) if sent_bps > 0 else 0.0
            self._loss_based = base * (1 - 0.5 * fraction_lost)
        elif fraction_lost < 0.02 and self._loss_based is not None:
            self._loss_based *= 1.08
            if sent_bps > 0 and self._loss_based > 4 * sent_bps:
                self._loss_based = None  # far above what we send: no constraint

    def estimate_bps(self, now: float) -> int | None:
        values: list[float] = []
        if self._remb is not None and now - self._remb[1] < self.REMB_TTL:
            values.append(self._remb[0])
        if self._loss_based is not None:
            values.append(self._loss_based)
        return int(min(values)) if values else None


def video_frame_size(video: Forwarder) -> FrameSize | None:
    """The stream's picture size: the single encoding's cached keyframe, else the largest
    layer's."""
    size = video.frame_size()
    if size is not None or not video.layers:
        return size
    sizes = [s for s in (f.frame_size() for f in video.layers.values()) if s is not None]
    return max(sizes, key=lambda s: s.width * s.height) if sizes else None


def viewer_id(session_id: str) -> str:
    """A viewer's name in the public API: not its session id, which is the capability to
    change or end its session."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


def layer_snapshot(stream: Stream, now: float) -> dict[str, Any]:
    """The stream's layers, each viewer's layer and the viewers per layer (the API's
    ``layers``, ``viewer_layers`` and ``layer_viewers``)."""
    video = stream.forwarders["video"]
    infos = layer_infos(video, now)
    viewers: list[dict[str, Any]] = []
    counts: dict[str, int] = {info.rid: 0 for info in infos}
    for subscriber in stream.subscribers:
        downtrack = subscriber.video
        if downtrack is None or not infos:
            continue
        layer = downtrack.layer
        if layer is not None:
            counts[layer] = counts.get(layer, 0) + 1
        viewers.append(
            {
                "id": viewer_id(subscriber.id),
                "layer": layer,
                "target": downtrack.target_layer,
                "mode": subscriber.layers.mode,
                "estimate_bps": subscriber.estimate_bps(now),
                "reason": downtrack.layer_reason,
            }
        )
    return {
        "layers": [info.as_json() for info in infos],
        "viewer_layers": viewers,
        "layer_viewers": counts,
    }
