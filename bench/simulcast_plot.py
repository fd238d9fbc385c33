"""Plot one viewer's bandwidth estimate and layer over time under a changing limit.

Reads the series ``tests/browser/test_simulcast_bandwidth.py`` records (``simulcast-series.json``
in the test's directory, or wherever ``RELAYCAST_SIMULCAST_SERIES`` pointed) and draws, over the
test's time: the ``tc tbf`` limit toward the viewer, the server's estimate for it (the layer
extension's ``estimate_bps``), the bitrate of the layer it was forwarded, and what its Chromium
received (``getStats`` bytes). Needs the bench extra (matplotlib).

    RELAYCAST_SIMULCAST_SERIES=/tmp/series.json pytest tests/browser/test_simulcast_bandwidth.py
    python bench/simulcast_plot.py /tmp/series.json docs/img/simulcast-estimate.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def received_kbps(samples: list[dict[str, Any]], span: float = 2.0) -> list[tuple[float, float]]:
    """The viewer's receive rate (kbit/s) over the last ``span`` seconds, at each sample."""
    out: list[tuple[float, float]] = []
    for i, s in enumerate(samples):
        j = i
        while j > 0 and s["t"] - samples[j - 1]["t"] <= span:
            j -= 1
        if j < i and s["t"] > samples[j]["t"]:
            rate = (s["bytes"] - samples[j]["bytes"]) * 8 / (s["t"] - samples[j]["t"]) / 1000
            out.append((s["t"], rate))
    return out


def plot(series: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = series["samples"]
    start = samples[0]["t"]
    end = samples[-1]["t"]
    layers: dict[str, float] = {rid: bps / 1000 for rid, bps in series["layers"].items()}
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)

    # the limit: a step line; None (unlimited) drawn at the top of the axis
    top = max(3000.0, max(layers.values()) * 1.6)
    limits = series["limits"]
    xs: list[float] = []
    ys: list[float] = []
    for i, (t, kbit) in enumerate(limits):
        t_end = limits[i + 1][0] if i + 1 < len(limits) else end
        value = float(kbit) if kbit is not None else top
        xs += [max(t, start) - start, t_end - start]
        ys += [value, value]
    ax.plot(xs, ys, color="black", linewidth=1.2, linestyle="--", label="tc tbf limit")

    est = [(s["t"] - start, s["estimate_bps"] / 1000) for s in samples if s["estimate_bps"]]
    ax.plot([t for t, _ in est], [min(v, top) for _, v in est], color="tab:blue",
            linewidth=1.6, label="server's estimate")  # fmt: skip
    layer = [(s["t"] - start, layers.get(s["layer"] or "", 0.0)) for s in samples]
    ax.step([t for t, _ in layer], [v for _, v in layer], where="post", color="tab:orange",
            linewidth=2.2, label="forwarded layer's bitrate")  # fmt: skip
    got = received_kbps(samples)
    ax.plot([t - start for t, _ in got], [v for _, v in got], color="tab:green", linewidth=1,
            alpha=0.8, label="received (getStats, 2 s)")  # fmt: skip
    for rid, kbps in sorted(layers.items(), key=lambda x: x[1]):
        ax.axhline(kbps, color="tab:orange", linewidth=0.5, alpha=0.5)
        ax.text(end - start, kbps, f" {rid}", va="center", color="tab:orange")
    events = series.get("events", {})
    for i, (t, _) in enumerate(limits[1:], 1):
        ax.axvline(t - start, color="grey", linewidth=0.6, alpha=0.6)
        key = {1: "down_s", 2: "up_s", 3: "top_s"}.get(i)
        if key and events.get(key) is not None:
            ax.text(t - start + 0.3, top * 0.93, f"{events[key]:.1f} s", fontsize=8)
    ax.set_xlim(0, end - start)
    ax.set_ylim(0, top * 1.02)
    ax.set_xlabel("seconds since the viewer's WHEP POST")
    ax.set_ylabel("kbit/s")
    ax.set_title("One Chromium viewer (third-party WHEP player): estimate and layer under tc tbf")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", type=Path, help="simulcast-series.json from the test")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args()
    plot(json.loads(args.series.read_text()), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
