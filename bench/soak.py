"""Soak: thousands of viewer join/leave cycles against a server with a live publisher.

Each cycle is what a real viewer does: WHEP POST, ICE + DTLS, receive a few SRTP packets (fast
start from the server's keyframe cache), DELETE. ``--concurrency`` cycles run at once. The
server's RSS is sampled every second; after the warm-up cycles it must come back to within
``--rss-slack`` bytes of its post-warm-up level, and afterwards no viewer session may be left
(``/api/server``, ``/api/streams``, ``/metrics``); once the publisher stops, no stream either.

    python bench/soak.py --cycles 10000 --concurrency 8            # starts its own server
    python bench/soak.py --target http://127.0.0.1:8080 --server-pid PID --key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hardening_common as hc
from relaycast.loadgen.client_transport import (
    ClientTransport,
    build_offer,
    parse_answer,
)
from relaycast.net.dtls import DtlsCertificate


async def _cycle(http: Any, base: str, cert: DtlsCertificate, packets: int) -> float:
    import aiohttp

    got = asyncio.Event()
    count = [0]

    def on_rtp(_plain: bytes, _t: int) -> None:
        count[0] += 1
        if count[0] >= packets:
            got.set()

    t0 = time.monotonic()
    t = ClientTransport(cert, on_rtp=on_rtp, rcvbuf=1 << 18)
    location = None
    try:
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=cert.fingerprint,
            local=t.local,
            direction="recvonly",
            video_codec="vp8",
        )
        async with http.post(
            f"{base}/whep/live", data=offer, headers={"Content-Type": "application/sdp"}
        ) as r:
            answer = await r.text()
            if r.status != 201:
                raise RuntimeError(f"WHEP POST {r.status}: {answer[:200]}")
            location = r.headers["Location"]
        t.start(parse_answer(answer))
        await t.wait_connected(10)
        await asyncio.wait_for(got.wait(), 10)
    finally:
        t.close()
        if location is not None:
            url = location if location.startswith("http") else base + location
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.delete(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    await r.read()
    return time.monotonic() - t0


async def _soak(
    server: hc.Server, cycles: int, concurrency: int, warmup: int, packets: int, quiet: bool
) -> dict[str, Any]:
    import aiohttp

    cert = DtlsCertificate()
    samples: list[tuple[float, int, int]] = []  # (s since start, cycles done, rss)
    done = [0]
    errors: list[str] = []
    durations: list[float] = []
    start = time.monotonic()
    rss_after_warmup: list[int] = []

    async def sampler() -> None:
        while True:
            samples.append((time.monotonic() - start, done[0], hc.rss(server.pid)))
            if not quiet and len(samples) % 10 == 0:
                s = samples[-1]
                print(f"  {s[0]:6.0f} s  {s[1]:6d} cycles  rss {s[2] / 2**20:7.1f} MiB", flush=True)
            await asyncio.sleep(1.0)

    started = [0]

    async def worker(http: Any) -> None:
        while started[0] < cycles:
            started[0] += 1
            try:
                durations.append(await _cycle(http, server.http, cert, packets))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            finally:
                done[0] += 1
                if done[0] == warmup:
                    rss_after_warmup.append(hc.rss(server.pid))

    sample_task = asyncio.get_running_loop().create_task(sampler())
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as http:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    await asyncio.sleep(3.0)  # closing sessions, the server's 1 s tick
    sample_task.cancel()
    end_rss = hc.rss(server.pid)
    base = rss_after_warmup[0] if rss_after_warmup else samples[0][2]
    return {
        "cycles": done[0],
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "seconds": round(elapsed, 1),
        "cycles_per_s": round(done[0] / elapsed, 1),
        "cycle_ms_p50": round(sorted(durations)[len(durations) // 2] * 1000, 1)
        if durations
        else None,
        "rss_start_bytes": samples[0][2] if samples else None,
        "rss_after_warmup_bytes": base,
        "rss_max_bytes": max(s[2] for s in samples) if samples else None,
        "rss_end_bytes": end_rss,
        "rss_growth_after_warmup_bytes": end_rss - base,
        "rss_curve": [(round(t, 1), n, r) for t, n, r in samples[:: max(1, len(samples) // 20)]],
    }


def leftovers(server: hc.Server) -> dict[str, Any]:
    streams = hc.get_json(server.http + "/api/streams")
    totals = hc.get_json(server.http + "/api/server")
    m = hc.metrics(server.http)
    return {
        "viewers": totals.get("viewers"),
        "streams": [
            {k: s.get(k) for k in ("name", "live", "viewers", "viewers_connecting")}
            for s in streams
        ],
        "sessions_metric": m.get("relaycast_sessions"),
        "streams_metric": m.get("relaycast_streams"),
    }


def run_soak(
    server: hc.Server,
    *,
    cycles: int,
    concurrency: int = 8,
    warmup: int | None = None,
    packets: int = 5,
    rss_slack: int = 5 * 2**20,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the soak against ``server`` (publisher started and stopped here); the result says
    ``ok`` when every bound held."""
    warmup = warmup if warmup is not None else max(50, cycles // 10)
    publisher = hc.Publisher(server.http, server.key)
    try:
        time.sleep(1.5)  # a keyframe in the server's cache
        result = asyncio.run(_soak(server, cycles, concurrency, warmup, packets, quiet))
        result["after_cycles"] = leftovers(server)
    finally:
        publisher.close()
    time.sleep(2.0)
    result["after_publisher_left"] = leftovers(server)
    a, b = result["after_cycles"], result["after_publisher_left"]
    problems = []
    if result["errors"] > cycles * 0.01:
        problems.append(f"{result['errors']} of {cycles} cycles failed")
    if result["rss_growth_after_warmup_bytes"] > rss_slack:
        problems.append(
            f"RSS grew {result['rss_growth_after_warmup_bytes'] / 2**20:.1f} MiB after warm-up"
        )
    if a["viewers"] or any(s["viewers"] or s["viewers_connecting"] for s in a["streams"]):
        problems.append(f"viewer sessions left after the cycles: {a}")
    if a["sessions_metric"] not in (None, 1.0):
        problems.append(f"relaycast_sessions is {a['sessions_metric']} with only the publisher")
    if b["streams"] or b["sessions_metric"] not in (None, 0.0):
        problems.append(f"left after the publisher stopped: {b}")
    result["problems"] = problems
    result["ok"] = not problems
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--warmup", type=int, default=None, help="default: 10%% of the cycles")
    p.add_argument("--rss-slack-mb", type=float, default=5.0)
    p.add_argument("--target", help="a running server's URL (default: start one)")
    p.add_argument("--server-pid", type=int)
    p.add_argument("--udp-port", type=int, default=0)
    p.add_argument("--key", default="")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    if args.target:
        server = hc.Server.running(args.target, args.udp_port, args.server_pid, args.key)
    else:
        server = hc.Server()
    try:
        result = run_soak(
            server,
            cycles=args.cycles,
            concurrency=args.concurrency,
            warmup=args.warmup,
            rss_slack=int(args.rss_slack_mb * 2**20),
        )
    finally:
        if not args.target:
            server.stop()
    print(json.dumps(result, indent=1))
    print(
        f"soak: {result['cycles']} cycles in {result['seconds']} s ({result['cycles_per_s']}/s), "
        f"{result['errors']} failed; RSS {result['rss_start_bytes'] / 2**20:.1f} MiB at start, "
        f"{result['rss_after_warmup_bytes'] / 2**20:.1f} after warm-up, "
        f"max {result['rss_max_bytes'] / 2**20:.1f}, end {result['rss_end_bytes'] / 2**20:.1f} "
        f"({result['rss_growth_after_warmup_bytes'] / 2**20:+.1f} MiB)"
        + ("" if result["ok"] else "\nFAILED: " + "; ".join(result["problems"]))
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
