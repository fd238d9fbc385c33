"""Programs the cluster tests run inside a lab namespace (``python -m
tests.integration.test_cluster_peer ...``); no tests here.

* ``watch --base URL --ip IP --seconds S``: an aiortc WHEP viewer that decodes, printing one JSON
  line ``{"t", "video", "audio", "state"}`` every half second until S seconds have passed.
* ``http METHOD URL [--header NAME:VALUE]... [--sign SECRET --node URL] [--body TEXT]``: one
  request; prints ``{"status", "body", "headers"}``. ``--sign`` adds node headers signed with
  SECRET (as a node of a cluster with that secret would).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any

import aiohttp
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from tests.integration import peers

from relaycast.cluster.auth import node_headers
from relaycast.cluster.pull import build_pull_offer
from relaycast.net.dtls import DtlsCertificate


async def watch(args: argparse.Namespace) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{args.base}/whep/{args.stream}",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        answer = await response.text()
        if response.status != 201:
            print(json.dumps({"error": response.status, "body": answer}), flush=True)
            raise SystemExit(1)
    viewer = peers.Viewer(pc, response.headers.get("Location", ""), answer)

    @pc.on("track")
    def on_track(track: Any) -> None:
        viewer.tasks.append(asyncio.ensure_future(peers._consume(viewer, track)))

    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        line = {"t": time.time(), **viewer.frames, "state": pc.connectionState}
        print(json.dumps(line), flush=True)
        await asyncio.sleep(0.5)
    for task in viewer.tasks:
        task.cancel()
    await pc.close()


async def http_request(args: argparse.Namespace) -> None:
    headers = dict(h.split(":", 1) for h in args.header)
    body = (args.body or "").encode()
    if args.offer:
        cert = DtlsCertificate()
        body = build_pull_offer("ufrg", "p" * 24, cert.fingerprint, ("192.0.2.1", 9)).encode()
        headers["Content-Type"] = "application/sdp"
    if args.sign:
        path = urllib.parse.urlsplit(args.url).path
        headers.update(node_headers(args.sign, args.method, path, args.node, body))
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            args.method, args.url, data=body or None, headers=headers, allow_redirects=False
        ) as response,
    ):
        text = await response.text()
        out = {"status": response.status, "body": text, "headers": dict(response.headers)}
    print(json.dumps(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch")
    w.add_argument("--base", required=True)
    w.add_argument("--ip", required=True)
    w.add_argument("--stream", default="live")
    w.add_argument("--seconds", type=float, default=120.0)
    h = sub.add_parser("http")
    h.add_argument("method")
    h.add_argument("url")
    h.add_argument("--header", action="append", default=[])
    h.add_argument("--body")
    h.add_argument("--offer", action="store_true", help="send a valid WHEP offer as the body")
    h.add_argument("--sign", help="sign as a node with this cluster secret")
    h.add_argument("--node", default="http://203.0.113.9:8080")
    args = parser.parse_args(argv)
    if args.command == "watch":
        ip = args.ip
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [ip]  # type: ignore[assignment]
        asyncio.run(watch(args))
    else:
        asyncio.run(http_request(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
