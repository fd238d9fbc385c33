"""Garbage flood: junk UDP at the media port, as fast as one process can send it, while viewers
watch a live stream; every viewer must still get >= 99.9 % of the packets.

The flood comes from ``--sockets`` source addresses (127.0.0.x, none validated) in a plain
Python loop (no sendmmsg): datagrams of every RFC 7983 range (STUN that names a real session's
ufrag but fails MESSAGE-INTEGRITY, STUN with unknown ufrags, DTLS records, SRTP/SRTCP-looking
packets, unassigned first bytes, empty and 1-byte datagrams, full-size random ones). Delivery is
measured by the load generator (``relaycast bench`` against the running server): every RTP
packet the publisher sent in the window is matched at every viewer. Prints the garbage rate
achieved, the server's drop counters and each viewer's delivery ratio.

    python bench/garbage_flood.py --viewers 50 --duration 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import socket
import struct
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hardening_common as hc
from relaycast.loadgen.runner import BenchOptions, run_bench


def garbage(ufrag: str, n: int = 512) -> list[bytes]:
    rng = random.Random(1)
    out: list[bytes] = []

    def stun(user: str) -> bytes:
        tid = rng.randbytes(12)
        value = user.encode()
        attrs = struct.pack("!HH", 0x0006, len(value)) + value + b"\0" * (-len(value) % 4)
        attrs += struct.pack("!HH", 0x0008, 20) + rng.randbytes(20)  # wrong MESSAGE-INTEGRITY
        return struct.pack("!HHI12s", 0x0001, len(attrs), 0x2112A442, tid) + attrs

    for i in range(n):
        kind = i % 8
        if kind == 0:
            out.append(stun(f"{ufrag}:x{i}"))  # a real session: costs an HMAC to refuse
        elif kind == 1:
            out.append(stun(f"nope{i}:x"))
        elif kind == 2:  # DTLS records
            body = rng.randbytes(rng.randint(0, 200))
            out.append(struct.pack("!BHH6sH", 22, 0xFEFD, 0, bytes(6), len(body)) + body)
        elif kind == 3:  # SRTP-looking
            out.append(bytes([0x80, 96]) + rng.randbytes(rng.randint(10, 1200)))
        elif kind == 4:  # SRTCP-looking
            out.append(bytes([0x81, 201]) + rng.randbytes(rng.randint(6, 100)))
        elif kind == 5:
            out.append(bytes([rng.choice([64, 100, 127, 192, 255])]) + rng.randbytes(50))
        elif kind == 6:
            out.append(b"" if i % 16 == 6 else b"\x00")
        else:
            out.append(rng.randbytes(1400))
    return out


def flood_process(target: tuple[str, int], ufrag: str, sockets: int, stop: Any, conn: Any) -> None:
    with contextlib.suppress(OSError):
        os.nice(5)  # share the load core with the viewers rather than starve them
    socks = []
    for i in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{10 + i}", 0))
        s.setblocking(False)
        socks.append(s)
    data = garbage(ufrag)
    sent = errors = 0
    t0 = time.monotonic()
    n = len(data)
    while not stop.is_set():
        for k in range(2048):
            try:
                socks[k % sockets].sendto(data[(sent + k) % n], target)
            except OSError:
                errors += 1
        sent += 2048
    elapsed = time.monotonic() - t0
    conn.send({"datagrams": sent, "errors": errors, "seconds": elapsed})


def run_flood(
    server: hc.Server,
    *,
    viewers: int = 50,
    duration: float = 10.0,
    bitrate: int = 1_000_000,
    sockets: int = 8,
    flood: bool = True,
    quiet: bool = False,
) -> dict[str, Any]:
    # a session whose ufrag the flood names (an attacker's own WHEP session)
    offer = _whep_offer()
    req = urllib.request.Request(
        server.http + "/whep/live",
        data=offer.encode(),
        headers={"Content-Type": "application/sdp"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        answer = r.read().decode()
        location = r.headers["Location"]
    ufrag = next(x.split(":", 1)[1] for x in answer.split("\r\n") if x.startswith("a=ice-ufrag:"))
    drops0 = hc.drop_counters(server.http)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=flood_process,
        args=(("127.0.0.1", server.udp_port), ufrag, sockets, stop, child),
        daemon=True,
    )
    if flood:
        proc.start()
    try:
        opts = BenchOptions(
            viewers=viewers,
            duration=duration,
            bitrate=bitrate,
            codec="vp8",
            target=server.http,
            key=server.key,
            server_pid=server.pid,
            width=640,
            height=360,
            keyframe_interval=1.0,
            join_rate=25.0,
            verbose=not quiet,
        )
        bench = run_bench(opts)
    finally:
        stop.set()
        info = parent.recv() if flood and parent.poll(30) else {"datagrams": 0, "seconds": 1.0}
        proc.join(5) if flood else None
        with contextlib.suppress(OSError):
            urllib.request.urlopen(
                urllib.request.Request(server.http + location, method="DELETE"), timeout=5
            )
    drops1 = hc.drop_counters(server.http)
    ratios = bench.get("delivered_ratios", [])
    result = {
        "viewers": viewers,
        "duration_s": duration,
        "garbage_datagrams": info["datagrams"],
        "garbage_per_s": round(info["datagrams"] / max(info["seconds"], 1e-9)),
        "garbage_send_errors": info.get("errors", 0),
        "server_drop_counters": {k: drops1[k] - drops0.get(k, 0) for k in drops1},
        "delivered_ratio_min": bench.get("delivered_ratio_min"),
        "delivered_ratio_mean": bench.get("delivered_ratio_mean"),
        "delivered_ratios": ratios,
        "viewers_below_999": bench.get("viewers_below_999"),
        "viewer_errors": bench.get("viewer_errors"),
        "server_cpu_percent": bench.get("server_cpu_percent"),
        "delay_ms_p99": bench.get("delay_ms_p99"),
        "server_socket_drops": bench.get("server_socket_drops"),
        "client_socket_drops": bench.get("client_socket_drops"),
    }
    result["ok"] = bool(
        ratios
        and len(ratios) == viewers
        and min(ratios) >= 0.999
        and not bench.get("viewer_errors")
    )
    return result


def _whep_offer() -> str:
    from relaycast.loadgen.client_transport import build_offer
    from relaycast.net.dtls import DtlsCertificate

    return build_offer(
        ufrag=secrets.token_hex(4),
        pwd=secrets.token_hex(12),
        fingerprint=DtlsCertificate().fingerprint,
        local=("127.0.0.1", 9),
        direction="recvonly",
        video_codec="vp8",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--viewers", type=int, default=50)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--bitrate", type=int, default=1_000_000)
    p.add_argument("--sockets", type=int, default=8)
    p.add_argument("--no-flood", action="store_true", help="the same run without garbage")
    p.add_argument("--json")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server = hc.Server(cpus={cpus[0]} if len(cpus) > 1 else None)
    try:
        result = run_flood(
            server,
            viewers=args.viewers,
            duration=args.duration,
            bitrate=args.bitrate,
            sockets=args.sockets,
            flood=not args.no_flood,
        )
    finally:
        server.stop()
    print(json.dumps(result, indent=1))
    ratios = result["delivered_ratios"]
    print(
        f"garbage flood: {result['garbage_per_s']:,} datagrams/s from {args.sockets} sockets; "
        f"server drop counters {result['server_drop_counters']}; {len(ratios)} viewers, "
        f"delivered min {min(ratios, default=0):.4f} mean "
        f"{sum(ratios) / max(1, len(ratios)):.4f}; per viewer: "
        + " ".join(f"{r:.4f}" for r in ratios)
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
