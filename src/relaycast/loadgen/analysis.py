"""Joins the publisher's send log with the viewers' arrival logs and computes per-step metrics.

relaycast forwards payloads untouched, so an arrival is matched to a transmission by
(crc32(payload), length), taking the latest transmission of that payload at or before the arrival
(the clip loops, so a payload repeats once per loop, seconds apart). Forwarding delay is arrival
minus send time, both on CLOCK_REALTIME (the arrival is the kernel's SO_TIMESTAMPNS stamp). A
viewer's delivered ratio in a window is the number of distinct transmissions of that window it
received divided by the number sent.

A server that re-encodes (the aiortc baseline) changes payloads; then delivery is counted in
video frames (marker-bit packets) against the frames the publisher sent, and the delay is only
*relative*: each frame's (arrival - RTP time) minus the smallest such value seen by that viewer,
i.e. the queueing on top of the unknown fixed decode/encode delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@dataclass
class Matched:
    """Arrivals with the index of the matched transmission (-1 when unmatched)."""

    viewer: npt.NDArray[np.int32]
    t_ns: I64
    length: npt.NDArray[np.uint16]
    send_index: I64
    matched_fraction: float


def match(send: dict[str, Any], arrivals: dict[str, Any]) -> Matched:
    """Match every arrival to a transmission (see the module docstring)."""
    s_key = (send["length"].astype(np.int64) << 32) | send["crc"].astype(np.int64)
    a_key = (arrivals["length"].astype(np.int64) << 32) | arrivals["crc"].astype(np.int64)
    n = len(a_key)
    if len(s_key) == 0 or n == 0:
        return Matched(
            arrivals["viewer"], arrivals["t_ns"], arrivals["length"], np.full(n, -1, np.int64), 0.0
        )
    uniq, inv = np.unique(s_key, return_inverse=True)
    base = int(min(send["t_ns"].min(), arrivals["t_ns"].min())) - 1000
    s_us = (send["t_ns"] - base) // 1000
    s_comb = (inv.astype(np.int64) << 40) | s_us
    order = np.argsort(s_comb, kind="stable")
    s_sorted = s_comb[order]
    pos = np.searchsorted(uniq, a_key)
    pos_c = np.minimum(pos, len(uniq) - 1)
    valid = uniq[pos_c] == a_key
    a_comb = (pos_c.astype(np.int64) << 40) | ((arrivals["t_ns"] - base) // 1000)
    idx = np.searchsorted(s_sorted, a_comb, side="right") - 1
    idx_c = np.maximum(idx, 0)
    valid &= (idx >= 0) & ((s_sorted[idx_c] >> 40) == pos_c)
    send_index = np.where(valid, order[idx_c], -1).astype(np.int64)
    return Matched(
        arrivals["viewer"],
        arrivals["t_ns"],
        arrivals["length"],
        send_index,
        float(valid.mean()),
    )


def _pct(values: npt.NDArray[Any], q: float) -> float | None:
    return None if len(values) == 0 else float(np.percentile(values, q))


def step_metrics(
    *,
    send: dict[str, Any],
    matched: Matched,
    frames: dict[str, Any],
    viewers: dict[int, dict[str, Any]],
    present: list[int],
    joined: list[int],
    window: tuple[int, int],
    fps: int,
) -> dict[str, Any]:
    """Metrics of one measurement window for the viewers in ``present`` (those that joined at
    this step are ``joined``)."""
    w0, w1 = window
    span = (w1 - w0) / 1e9
    ok = [
        i
        for i in present
        if viewers[i].get("error") is None
        and viewers[i].get("first_key_ns", 0)
        and viewers[i]["first_key_ns"] < w0
    ]
    out: dict[str, Any] = {
        "viewers": len(present),
        "viewers_measured": len(ok),
        "viewers_failed": sum(1 for i in present if viewers[i].get("error")),
        "window_s": round(span, 3),
    }
    s_t = send["t_ns"]
    in_win = (s_t >= w0) & (s_t < w1)
    sent = int(in_win.sum())
    out["publisher_send_mbps"] = float(
        (send["length"][in_win].astype(np.int64) + 12 + 16).sum() * 8 / span / 1e6
    )
    out["publisher_packets_per_s"] = sent / span
    untouched = matched.matched_fraction >= 0.5
    out["delay_mode"] = "absolute" if untouched else "relative"
    ok_arr = np.array(ok, dtype=np.int32)
    ratios: npt.NDArray[np.float64]
    if untouched:
        m = matched.send_index >= 0
        si = np.where(m, matched.send_index, 0)
        sel = m & in_win[si] & np.isin(matched.viewer, ok_arr)
        pairs = np.unique(matched.viewer[sel].astype(np.int64) * (1 << 32) + si[sel])
        per_viewer = np.bincount((pairs >> 32).astype(np.int64), minlength=max(ok, default=0) + 1)
        ratios = per_viewer[ok_arr] / sent if sent and len(ok) else np.zeros(0, dtype=np.float64)
        delays = (matched.t_ns[sel] - s_t[si[sel]]) / 1e6
    else:
        expected = fps * span
        fv, ft = frames["frame_viewer"], frames["frame_t"]
        fwin = (ft >= w0) & (ft < w1)
        counts = np.bincount(fv[fwin].astype(np.int64), minlength=max(ok, default=0) + 1)
        ratios = np.minimum(counts[ok_arr] / expected, 1.0) if len(ok) else np.zeros(0)
        delays = _relative_frame_delays(frames, ok_arr, window)
    out["delivered_ratio_min"] = float(ratios.min()) if len(ratios) else None
    out["delivered_ratio_mean"] = float(ratios.mean()) if len(ratios) else None
    out["viewers_below_999"] = int((ratios < 0.999).sum()) if len(ratios) else 0
    out["delivered_ratios"] = [round(float(r), 5) for r in ratios]  # one per measured viewer
    out["delay_ms_p50"] = _pct(delays, 50)
    out["delay_ms_p99"] = _pct(delays, 99)
    out["delay_ms_max"] = float(delays.max()) if len(delays) else None
    # joins of this step
    fp = [
        viewers[i]["first_packet_ns"] - viewers[i]["post_ns"]
        for i in joined
        if viewers[i].get("first_packet_ns")
    ]
    fk = [
        viewers[i]["first_key_ns"] - viewers[i]["post_ns"]
        for i in joined
        if viewers[i].get("first_key_ns")
    ]
    out["joined"] = len(joined)
    out["first_packet_ms_p50"] = _pct(np.array(fp) / 1e6, 50)
    out["first_packet_ms_max"] = max(fp) / 1e6 if fp else None
    out["first_keyframe_ms_p50"] = _pct(np.array(fk) / 1e6, 50)
    out["first_keyframe_ms_p95"] = _pct(np.array(fk) / 1e6, 95)
    out["first_keyframe_ms_max"] = max(fk) / 1e6 if fk else None
    out["joins_without_keyframe"] = len(joined) - len(fk)
    # egress seen by the viewers: RTP payload + 12-byte header + 16-byte SRTP tag per packet
    a_win = (matched.t_ns >= w0) & (matched.t_ns < w1) & np.isin(matched.viewer, present)
    out["egress_mbps"] = float((matched.length[a_win].astype(np.int64) + 28).sum() * 8 / span / 1e6)
    out["auth_failures"] = sum(viewers[i].get("auth_failures", 0) for i in present)
    return out


def _relative_frame_delays(
    frames: dict[str, Any], ok: npt.NDArray[np.int32], window: tuple[int, int]
) -> npt.NDArray[np.float64]:
    fv, ft, fts = frames["frame_viewer"], frames["frame_t"], frames["frame_ts"]
    out: list[npt.NDArray[np.float64]] = []
    for v in ok:
        sel = fv == v
        t = ft[sel]
        ts = fts[sel].astype(np.int64)
        if len(t) < 2:
            continue
        ts_unwrapped = np.concatenate(
            [[0], np.cumsum(((np.diff(ts) + (1 << 31)) % (1 << 32)) - (1 << 31))]
        )
        d = (t - t[0]) / 1e6 - ts_unwrapped / 90.0
        rel = d - d.min()
        w = (t >= window[0]) & (t < window[1])
        out.append(rel[w])
    return np.concatenate(out) if out else np.zeros(0)


def max_viewers(steps: list[dict[str, Any]], min_ratio: float = 0.999, p99_ms: float = 50.0) -> int:
    """Largest step where every viewer got >= ``min_ratio`` and p99 delay < ``p99_ms``."""
    best = 0
    for s in steps:
        r, d = s.get("delivered_ratio_min"), s.get("delay_ms_p99")
        if (
            r is not None
            and d is not None
            and r >= min_ratio
            and d < p99_ms
            and s.get("viewers_failed", 0) == 0
            and s["viewers_measured"] == s["viewers"]
        ):
            best = max(best, int(s["viewers"]))
    return best
