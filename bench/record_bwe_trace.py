"""Record a real viewer's estimator inputs behind a token bucket (issue 9's "recorded trace").

A lab of network namespaces (``tests/integration/netns.py``): the server, a Chromium publisher
sending one VP8 encoding (a busy 1280x720 canvas, ``maxBitrate`` 2.5 Mbit/s by default) by WHIP,
and a Chromium viewer (the plain third-party WHEP page of ``tests/browser/lab_chromium.py``)
behind ``tc tbf`` on its port of the bridge at ``--rate`` kbit/s (200 ms of queue). One encoding
above the limit fills the viewer's link: the estimator sees a full bottleneck. After
``--seconds`` the limit is halved for ``--halved-for`` seconds. The server runs with
``RELAYCAST_BWE_TRACE`` (``relaycast/media/bwe/trace.py``); the viewer session's trace is
trimmed to the viewer's session, put in the compact form and written to ``--out`` after a
header line saying how it was recorded (and the bytes the tbf passed in each phase).

    sudo /work/venv/bin/python bench/record_bwe_trace.py \\
        --out tests/unit/bwe_traces/chromium_tbf_1500_750.jsonl

Needs root, iproute2 (``ip``, ``tc``), /usr/bin/chromium and Playwright. The namespaces, the
tbf and every process go away when it ends (the lab's ``close``), also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from playwright.async_api import async_playwright  # noqa: E402
from tests.browser.lab_chromium import launch, player, publish, upload_bps, watch  # noqa: E402
from tests.integration.netns import Lab  # noqa: E402

from relaycast.media.bwe.trace import ENV, compact, read  # noqa: E402


async def record(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], Path]:
    trace_dir = tmp / "trace"
    with Lab(tmp) as lab:
        srv, pub, view = lab.add("srv"), lab.add("pub"), lab.add("view")
        lab.limit(view, args.rate)
        # the server with the estimator recorder on
        base = srv.relaycast("--stream-key", "live=test-key", env={ENV: str(trace_dir)})
        async with async_playwright() as pw:
            browsers = [await launch(pw, pub, base), await launch(pw, view, base)]
            try:
                encodings = [{"maxBitrate": args.bitrate * 1000, "maxFramerate": 30}]
                publisher = await publish(browsers[0], base, "live", "test-key", encodings)
                # the encoder ramps up first: the viewer joins a stream above its limit
                deadline = time.monotonic() + 30
                upload = 0.0
                while time.monotonic() < deadline:
                    upload = await upload_bps(publisher, 1.0)
                    if upload > 0.8 * args.bitrate * 1000:
                        break
                print(f"publisher upload {upload / 1000:.0f} kbit/s", flush=True)
                page = await player(browsers[1], view)
                watcher = await watch(page, f"{base}/whep/live", "view")
                joined = time.monotonic()
                sent0 = lab.shaped(view)
                await asyncio.sleep(args.seconds)
                sent1 = lab.shaped(view)
                lab.limit(view, args.rate // 2)
                halved = time.monotonic()
                sent1b = lab.shaped(view)
                await asyncio.sleep(args.halved_for)
                sent2 = lab.shaped(view)
                end = time.monotonic()
                stats = await page.evaluate("(i) => window.video(i)", watcher.index)
                version = browsers[1].version
            finally:
                for browser in browsers:
                    await browser.close()
    files = sorted(trace_dir.glob("bwe-*.jsonl"))
    if len(files) != 1:
        raise RuntimeError(f"expected one viewer trace, found {files}")
    meta = {
        "joined": joined,
        "halved": halved,
        "end": end,
        "chromium": version,
        "upload_bps": round(upload),
        "tbf_passed_bps": [
            round((sent1[0] - sent0[0]) * 8 / (halved - joined)),
            round((sent2[0] - sent1b[0]) * 8 / (end - halved)),
        ],
        "tbf_dropped": [sent1[1] - sent0[1], sent2[1] - sent1b[1]],
        "viewer": {k: stats.get(k) for k in ("frames", "lost", "nacks", "plis", "received")},
    }
    return meta, files[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rate", type=int, default=1500, help="tbf rate, kbit/s")
    parser.add_argument("--bitrate", type=int, default=2500, help="publisher's, kbit/s")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--halved-for", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bwe-trace-") as name:
        meta, path = asyncio.run(record(args, Path(name)))
        lines = list(read(path))
    first = next(float(line["t"]) for line in lines if "t" in line)
    # from the session's start to the end of the halved phase
    kept = [line for line in lines if float(line.get("t", first)) <= meta["end"]]
    header = {
        "in": "header",
        "recorded": datetime.date.today().isoformat(),
        "how": "bench/record_bwe_trace.py: a Chromium viewer (plain WHEP page) in a network "
        "namespace behind tc tbf (200 ms queue) on its bridge port, watching a Chromium "
        f"publisher's single VP8 encoding (maxBitrate {args.bitrate} kbit/s)",
        "chromium": meta["chromium"],
        "tbf_kbit": [args.rate, args.rate // 2],
        # trace times (s from the first input) of the join, the halving and the end
        "joined_at": round(meta["joined"] - first, 3),
        "halved_at": round(meta["halved"] - first, 3),
        "end_at": round(meta["end"] - first, 3),
        "publisher_upload_bps": meta["upload_bps"],
        "tbf_passed_bps": meta["tbf_passed_bps"],
        "tbf_dropped": meta["tbf_dropped"],
        "viewer_stats": meta["viewer"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as out:
        for line in [header, *compact(kept)]:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
    print(json.dumps(header, indent=1))
    print(f"{args.out}: {len(kept)} lines, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
