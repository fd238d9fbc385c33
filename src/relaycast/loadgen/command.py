"""``relaycast bench``: the load generator as a CLI subcommand."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any


def _cpus(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return tuple(out)


def _steps(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_bench_command(subparsers: Any) -> None:
    """Register ``relaycast bench`` on the CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="load-test a server with a synthetic publisher and N lightweight viewers",
        description="Publish a pre-encoded test stream over WHIP and attach N protocol-level "
        "WHEP viewers (real ICE, DTLS, SRTP; no decoding). Reports delivery, forwarding "
        "delay, join times, server CPU and memory. Without --target a relaycast server is "
        "started, pinned to the first CPU, with the load on the others.",
    )
    p.add_argument("--viewers", type=int, default=10, help="viewers (the ramp's maximum)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per step")
    p.add_argument("--bitrate", default="2.5M", help="video bitrate, e.g. 2.5M or 800k")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--ramp", action="store_true", help="add viewers step by step")
    p.add_argument("--ramp-steps", type=_steps, metavar="N,N,...", help="viewer counts to visit")
    p.add_argument(
        "--target",
        metavar="URL|aiortc-relay",
        help="a running server's base URL, or aiortc-relay for the aiortc baseline "
        "(default: start relaycast)",
    )
    p.add_argument("--stream", default="live", help="stream name (default live)")
    p.add_argument("--key", default="", help="publish key (needed with a --target URL)")
    p.add_argument("--server-pid", type=int, help="with a --target URL: PID to measure")
    p.add_argument("--server-cpus", type=_cpus, metavar="LIST", help="default: first CPU")
    p.add_argument("--load-cpus", type=_cpus, metavar="LIST", help="default: the other CPUs")
    p.add_argument("--workers", type=int, default=0, help="viewer processes (default: auto)")
    p.add_argument(
        "--server-workers",
        type=int,
        metavar="N",
        help="start relaycast with --workers N (give it N --server-cpus; the server's CPU is "
        "then that of all its processes, each listed)",
    )
    p.add_argument("--resolution", default="1280x720", help="video size (default 1280x720)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--keyframe-interval", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--join-rate", type=float, default=50.0, help="viewer joins per second")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="then run the same load against the aiortc MediaRelay baseline; the JSON gets "
        "'baseline' and 'ratio' (max viewers relaycast / baseline)",
    )
    p.add_argument(
        "--baseline-steps",
        type=_steps,
        metavar="N,N,...",
        default=[1, 2, 4, 8],
        help="viewer counts for the baseline's ramp (default 1,2,4,8)",
    )
    p.add_argument(
        "--no-probe",
        action="store_true",
        help="with --ramp (relaycast started by the bench): do not run the raw limit probe "
        "(relaycast/loadgen/limit_probe.c, needs gcc and libcrypto) on the server's core after "
        "the ramp",
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots (needs matplotlib)")
    p.add_argument("--keep", metavar="DIR", help="keep the raw logs (.npz, server output) in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from relaycast.loadgen.report import format_table, plot
    from relaycast.loadgen.runner import BenchOptions, parse_bitrate, run_bench

    try:
        width, height = (int(x) for x in args.resolution.lower().split("x", 1))
        bitrate = parse_bitrate(args.bitrate)
    except ValueError as exc:
        print(f"relaycast bench: error: {exc}", file=sys.stderr)
        return 2
    if args.target and args.target != "aiortc-relay" and not args.key:
        print(
            "relaycast bench: error: --key is needed to publish to a --target URL", file=sys.stderr
        )
        return 2
    opts = BenchOptions(
        viewers=args.viewers,
        duration=args.duration,
        bitrate=bitrate,
        codec=args.codec,
        ramp=args.ramp or bool(args.ramp_steps),
        ramp_steps=args.ramp_steps or [],
        target=args.target,
        stream=args.stream,
        key=args.key,
        workers=args.workers,
        server_cpus=args.server_cpus,
        load_cpus=args.load_cpus,
        width=width,
        height=height,
        fps=args.fps,
        keyframe_interval=args.keyframe_interval,
        join_rate=args.join_rate,
        server_pid=args.server_pid,
        keep_dir=args.keep,
        verbose=not args.quiet,
        server_args=["--workers", str(args.server_workers or 1)],
        probe=not args.no_probe,
    )
    try:
        result = run_bench(opts)
        print(format_table(result))
        results = [result]
        if args.baseline and opts.target != "aiortc-relay":
            base_opts = dataclasses.replace(
                opts,
                target="aiortc-relay",
                ramp=True,
                ramp_steps=args.baseline_steps,
                viewers=max(args.baseline_steps),
                key="",
                server_pid=None,
                workers=1,
            )
            baseline = run_bench(base_opts)
            print(format_table(baseline))
            result["baseline"] = baseline
            if opts.ramp:
                ours, theirs = result["max_viewers"], baseline["max_viewers"]
                result["ratio"] = ours / theirs if theirs else None
                print(f"max viewers: relaycast {ours}, aiortc baseline {theirs}")
            results.append(baseline)
    except RuntimeError as exc:
        print(f"relaycast bench: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    if args.plots:
        for path in plot(results, args.plots):
            print(f"wrote {path}")
    return 0
