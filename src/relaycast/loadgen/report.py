"""Human output of a benchmark: a text table per step and PNG plots (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS: list[tuple[str, str, str]] = [
    ("viewers", "viewers", "{:d}"),
    ("delivered_ratio_min", "deliv min %", "pct"),
    ("delivered_ratio_mean", "deliv mean %", "pct"),
    ("delay_ms_p50", "delay p50 ms", "{:.1f}"),
    ("delay_ms_p99", "delay p99 ms", "{:.1f}"),
    ("delay_ms_max", "delay max ms", "{:.0f}"),
    ("first_packet_ms_p50", "1st pkt ms", "{:.0f}"),
    ("first_keyframe_ms_p50", "1st key p50", "{:.0f}"),
    ("first_keyframe_ms_max", "1st key max", "{:.0f}"),
    ("server_cpu_percent", "srv CPU %", "{:.0f}"),
    ("server_rss_bytes", "srv RSS MB", "mb"),
    ("server_bytes_per_viewer", "KB/viewer", "kb"),
    ("egress_mbps", "egress Mbps", "{:.0f}"),
    ("publisher_send_mbps", "pub Mbps", "{:.2f}"),
    ("client_socket_drops", "client drops", "{:d}"),
    ("load_cpu_percent", "load CPU %", "{:.0f}"),
    ("load_core_percent", "load core %", "{:.0f}"),
    ("load_headroom", "headroom x", "{:.1f}"),
    ("server_to_load_cost", "srv/load", "{:.1f}"),
    ("load_loop_lag_ms_max", "load lag ms", "{:.0f}"),
]


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if spec == "pct":
        return f"{value * 100:.2f}"
    if spec == "mb":
        return f"{value / 1e6:.0f}"
    if spec == "kb":
        return f"{value / 1e3:.0f}"
    if spec == "{:d}":
        return str(int(value))
    return spec.format(value)


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table, one row per step (one row without ``--ramp``)."""
    rows = result.get("steps") or [result]
    header = [title for _, title, _ in COLUMNS]
    body = [[_fmt(r.get(key), spec) for key, _, spec in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    extra = [
        f"target: {result.get('target')}  codec: {result.get('codec')}  "
        f"video payload: {result.get('video_payload_mbps', 0):.2f} Mbps  "
        f"delay: {result.get('delay_mode')}",
        f"SRTP auth failures: {result.get('srtp_auth_failures')}  "
        f"untouched payloads: {100 * result.get('untouched_payload_ratio', 0):.2f} %  "
        f"viewers without keyframe: {result.get('viewers_without_keyframe')}",
        f"load: {result.get('load_cores')} core(s), receive path "
        f"{result.get('load_receive_path')}; headroom x = 100 / load core %, srv/load = server "
        "CPU / load CPU for the same packets",
    ]
    if "max_viewers" in result:
        extra.append(
            f"max viewers (every viewer >= 99.9 % delivered, p99 delay < 50 ms): "
            f"{result['max_viewers']}"
        )
    line = probe_line(result)
    if line is not None:
        extra.append(line)
    return "\n".join(lines + extra)


def probe_line(result: dict[str, Any]) -> str | None:
    """The limit probe's line (``relaycast bench --ramp``), or why it was skipped; None when it
    was not run (``--no-probe``, a --target, no ramp)."""
    us = result.get("limit_probe_us_per_packet_per_viewer")
    if us is None:
        skipped = result.get("limit_probe_skipped")
        return f"limit probe skipped: {skipped}" if skipped else None
    details = result.get("limit_probe") or {}
    where = "on the server's core" if details.get("cpus") else "(not pinned)"
    pps = details.get("packets_per_s", result.get("publisher_packets_per_s"))
    implied = result.get("probe_implied_viewers_per_core")
    ratio = result.get("max_viewers_vs_probe")
    return (
        f"limit probe: {us:.2f} µs per packet per viewer {where} -> "
        + ("- viewers per core" if implied is None else f"{implied:,.0f} viewers per core")
        + ("" if pps is None else f" at {pps:,.0f} packets/s")
        + "; max_viewers / probe = "
        + ("-" if ratio is None else f"{ratio:.2f}")
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The same table in Markdown (for docs/benchmarks.md)."""
    rows = result.get("steps") or [result]
    header = [title for _, title, _ in COLUMNS]
    out = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(k), s) for k, _, s in COLUMNS) + " |")
    return "\n".join(out)


def plot(results: list[dict[str, Any]], out_dir: str | Path, prefix: str = "bench") -> list[Path]:
    """PNG plots of viewers vs server CPU, delivered ratio (min) and p99 delay, one line per
    result (e.g. relaycast and the aiortc baseline). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = [
        ("server_cpu_percent", "server CPU % (one core)", 1.0, None),
        ("delivered_ratio_min", "delivered packets, worst viewer (%)", 100.0, 99.9),
        ("delay_ms_p99", "forwarding delay p99 (ms)", 1.0, 50.0),
    ]
    written = []
    for key, label, scale, limit in panels:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for r in results:
            steps = r.get("steps") or [r]
            xs = [s["viewers"] for s in steps if s.get(key) is not None]
            ys = [s[key] * scale for s in steps if s.get(key) is not None]
            ax.plot(xs, ys, marker="o", label=str(r.get("label") or r.get("target")))
        if limit is not None:
            ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("viewers")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"{prefix}-{key.replace('_', '-')}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
