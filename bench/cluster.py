"""Three relaycast nodes in network namespaces: what the origin sends, and the delay of a hop.

    sudo python bench/cluster.py [--viewers 20] [--seconds 10]

A lab (``tests/integration/netns.py``): Redis, origin A, edges B and C, a publisher namespace
(an aiortc publisher: 320x240 VP8 test pattern + Opus, a few hundred kbit/s) and a load
namespace whose viewers are protocol-level WHEP clients (ICE, DTLS, SRTP, no decoding: the
cluster's own pull transport, :class:`relaycast.cluster.pull.NodeTransport`).

1. **Origin egress per edge, not per viewer.** A's RTP egress for the stream (its ``/metrics``
   stream counters) over ``--seconds`` with 1 viewer on B, then with ``--viewers`` on B and as
   many on C: A sends one copy per edge whatever the viewers behind it.
2. **Delay of one edge hop.** One viewer on A and one on B in the same namespace (one clock):
   each RTP payload is found in both arrival logs (relaycast forwards payloads untouched), the
   difference is the hop's extra delay; p50/p99 reported.

Prints a table and one JSON line (``cluster_bench=...``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

STREAM = "live"
SECRET = "bench-cluster-secret-0123456789"


# -- the viewers' program (run inside the load namespace) ---------------------------------------


def _payload_offset(rtp: bytes) -> int:
    offset = 12 + 4 * (rtp[0] & 0x0F)
    if rtp[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(rtp[offset + 2 : offset + 4], "big")
    return offset


async def run_viewers(base: str, ip: str, count: int, seconds: float, log: Path) -> None:
    import aiohttp

    from relaycast.cluster.pull import NodeTransport
    from relaycast.loadgen.client_transport import build_offer, parse_answer
    from relaycast.net.dtls import DtlsCertificate

    certificate = DtlsCertificate()
    packets = [0] * count
    arrivals: list[tuple[int, int]] = []

    def on_rtp(index: int) -> Any:
        def handle(plain: bytes, arrival_ns: int) -> None:
            packets[index] += 1
            if index == 0:
                arrivals.append((zlib.crc32(plain[_payload_offset(plain) :]), arrival_ns))

        return handle

    transports = []
    async with aiohttp.ClientSession() as http:
        for index in range(count):
            t = NodeTransport(certificate, ip, on_rtp=on_rtp(index))
            offer = build_offer(
                ufrag=t.local_ufrag, pwd=t.local_pwd, fingerprint=certificate.fingerprint,
                local=t.local, direction="recvonly", video_codec="vp8",
            )  # fmt: skip
            async with http.post(
                f"{base}/whep/{STREAM}", data=offer, headers={"Content-Type": "application/sdp"}
            ) as response:
                answer = await response.text()
                assert response.status == 201, (response.status, answer)
            t.start(parse_answer(answer))
            await t.wait_connected(10.0)
            transports.append(t)
        await asyncio.sleep(seconds)
    for t in transports:
        t.close()
    log.write_text(json.dumps({"packets": packets, "arrivals": arrivals}))


# -- the orchestration --------------------------------------------------------------------------


def stream_egress(metrics: str) -> tuple[int, int]:
    """(RTP packets, bytes) the server sent for the stream, from its /metrics text."""
    packets = bytes_ = 0
    for line in metrics.splitlines():
        if f'stream="{STREAM}"' not in line or line.startswith("#"):
            continue
        match = re.match(r"^relaycast_stream_egress_(packets|bytes)_total\{.*\} (\S+)$", line)
        if match:
            value = int(float(match.group(2)))
            if match.group(1) == "packets":
                packets += value
            else:
                bytes_ += value
    return packets, bytes_


def hop_delays(direct: list[list[int]], edge: list[list[int]]) -> list[float]:
    """Per payload seen exactly once by both viewers (silent audio frames repeat, so repeated
    payloads are left out): edge arrival - direct arrival, in ms."""

    def once(log: list[list[int]]) -> dict[int, int]:
        seen: dict[int, int] = {}
        repeated: set[int] = set()
        for crc, t in log:
            if crc in seen:
                repeated.add(crc)
            seen[crc] = t
        return {crc: t for crc, t in seen.items() if crc not in repeated}

    first, second = once(direct), once(edge)
    # leave out the joins' first seconds: a fast-start replay is a burst, not the hop's delay
    settled = min(first.values(), default=0) + 6_000_000_000
    first = {crc: t for crc, t in first.items() if t >= settled}
    return [(t - first[crc]) / 1e6 for crc, t in second.items() if crc in first]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=20, help="viewers on each edge")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("_viewers", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._viewers:  # ["viewers", base, ip, count, seconds, log]
        _, base, ip, count, seconds, log = args._viewers
        asyncio.run(run_viewers(base, ip, int(count), float(seconds), Path(log)))
        return 0

    from tests.integration.netns import Lab, python_env

    with tempfile.TemporaryDirectory(prefix="relaycast-cluster-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with Lab(tmp) as lab:
            redis, a, b, c = (lab.add(n) for n in ("redis", "a", "b", "c"))
            pub, load = lab.add("pub"), lab.add("load")
            redis.spawn(
                ["redis-server", "--port", "6379", "--bind", redis.ip, "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp)],
                log=tmp / "redis.log",
            )  # fmt: skip
            time.sleep(0.5)
            help_text = subprocess.run(
                [sys.executable, "-m", "relaycast", "serve", "--help"],
                capture_output=True, text=True, env=python_env(), cwd=ROOT,
            ).stdout  # fmt: skip
            extra = ["--workers", "1"] if "--workers" in help_text else []
            bases = {}
            for node in (a, b, c):
                bases[node.name] = node.relaycast(
                    "--stream-key", f"{STREAM}=k", "--cluster", f"redis://{redis.ip}:6379/0",
                    "--node-url", f"http://{node.ip}:8080", "--cluster-secret", SECRET,
                    "--log-level", "warning", *extra,
                )  # fmt: skip
            command = [sys.executable, "-m", "tests.integration.netns_peer", "publish"]
            command += ["--base", bases["a"], "--ip", pub.ip, "--key", "k", "--seconds", "600"]
            pub.spawn(command, log=tmp / "pub.out", env=python_env(), cwd=ROOT)
            time.sleep(4)

            def metrics(node: Any) -> tuple[int, int]:
                text = node.run(
                    sys.executable, "-c",
                    "import urllib.request,sys;"
                    f"sys.stdout.write(urllib.request.urlopen('{bases[node.name]}/metrics')"
                    ".read().decode())",
                )  # fmt: skip
                return stream_egress(text)

            def viewers(base: str, count: int, seconds: float, name: str) -> Any:
                log = tmp / f"{name}.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), "viewers", base, load.ip]
                cmd += [str(count), str(seconds), str(log)]
                return load.spawn(cmd, log=tmp / f"{name}.out", env=python_env(), cwd=ROOT), log

            def measure(groups: list[tuple[str, int, str]]) -> dict[str, Any]:
                """Start the viewer groups, wait for them to settle, measure A's and the
                edges' egress for ``--seconds``, return the rates and the viewers' logs."""
                hold = args.seconds + 8
                procs = [viewers(bases[n], k, hold, name) for n, k, name in groups]
                time.sleep(6)  # joins, fast start
                before = {n: metrics(node) for n, node in (("a", a), ("b", b), ("c", c))}
                time.sleep(args.seconds)
                after = {n: metrics(node) for n, node in (("a", a), ("b", b), ("c", c))}
                for proc, _ in procs:
                    proc.wait(60)
                rates = {
                    n: {
                        "pps": (after[n][0] - before[n][0]) / args.seconds,
                        "kbps": (after[n][1] - before[n][1]) * 8 / args.seconds / 1000,
                    }
                    for n in after
                }
                logs = {name: json.loads(log.read_text()) for (_, log), (_, _, name) in
                        zip(procs, groups, strict=True)}  # fmt: skip
                return {"rates": rates, "logs": logs}

            one = measure([("b", 1, "one")])
            many = measure(
                [("b", args.viewers, "edge-b"), ("c", args.viewers, "edge-c"), ("a", 1, "direct")]
            )
            hop = hop_delays(many["logs"]["direct"]["arrivals"], many["logs"]["edge-b"]["arrivals"])
            # A's egress with many: one copy to each edge plus the direct viewer's own copy
            per_copy = many["rates"]["a"]["pps"] / 3
            result = {
                "viewers_per_edge": args.viewers,
                "origin_pps_1_viewer": round(one["rates"]["a"]["pps"], 1),
                "origin_kbps_1_viewer": round(one["rates"]["a"]["kbps"], 1),
                "origin_pps_many": round(many["rates"]["a"]["pps"], 1),
                "origin_kbps_many": round(many["rates"]["a"]["kbps"], 1),
                "origin_pps_per_copy_many": round(per_copy, 1),
                "edge_b_pps_many": round(many["rates"]["b"]["pps"], 1),
                "edge_c_pps_many": round(many["rates"]["c"]["pps"], 1),
                "viewer_packets_min": min(
                    min(many["logs"][g]["packets"]) for g in ("edge-b", "edge-c")
                ),
                "hop_samples": len(hop),
                "hop_delay_p50_ms": round(percentile(hop, 0.5), 2) if hop else None,
                "hop_delay_p99_ms": round(percentile(hop, 0.99), 2) if hop else None,
            }
    print(
        f"origin A egress, 1 viewer on B:            {result['origin_pps_1_viewer']:8.1f} pkt/s "
        f"{result['origin_kbps_1_viewer']:8.1f} kbit/s\n"
        f"origin A egress, {args.viewers} on B + {args.viewers} on C + 1 on A: "
        f"{result['origin_pps_many']:8.1f} pkt/s {result['origin_kbps_many']:8.1f} kbit/s "
        f"({result['origin_pps_per_copy_many']:.1f} per copy, 3 copies)\n"
        f"edge B egress: {result['edge_b_pps_many']:.1f} pkt/s, "
        f"edge C: {result['edge_c_pps_many']:.1f} pkt/s\n"
        f"one edge hop, extra delay: p50 {result['hop_delay_p50_ms']} ms, "
        f"p99 {result['hop_delay_p99_ms']} ms ({result['hop_samples']} packets)"
    )
    print("cluster_bench=" + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
