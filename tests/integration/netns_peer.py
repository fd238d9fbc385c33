"""An aiortc WHIP publisher or WHEP viewer for the namespace tests, run as a program inside a
namespace (``ip netns exec NS python -m tests.integration.netns_peer ...``).

It gathers candidates on the namespace's address (``--ip``), takes its STUN/TURN servers and
their credentials from the server's ``Link: rel="ice-server"`` headers (RFC 9725 §4.6, an
OPTIONS request first, so that the offer already has the relay candidates), and can be held
to relayed candidates (``--relay``). It prints one JSON line when done:

* publisher: ``{"role": "publisher", "seconds": ...}`` after ``--seconds`` of streaming;
* viewer: ``{"role": "viewer", "frames": {"video": n, "audio": n}, "local": "<type>",
  "remote": [ip, port], "ice_servers": [...]}``, the candidate types of the nominated pair.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import Any

import aiohttp
import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from tests.integration import peers

_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[\w-]+\s*=\s*\"[^\"]*\")*)")
_PARAM = re.compile(r";\s*([\w-]+)\s*=\s*\"([^\"]*)\"")


def ice_servers_from_links(values: list[str]) -> list[RTCIceServer]:
    """RTCIceServers from ``Link`` header values (one or more links per value)."""
    servers: list[RTCIceServer] = []
    for value in values:
        for match in _LINK.finditer(value):
            params = dict(_PARAM.findall(match.group(2)))
            if params.get("rel") != "ice-server":
                continue
            servers.append(
                RTCIceServer(
                    urls=match.group(1),
                    username=params.get("username"),
                    credential=params.get("credential"),
                )
            )
    return servers


async def ice_servers(http: aiohttp.ClientSession, url: str) -> list[RTCIceServer]:
    async with http.options(url) as response:
        return ice_servers_from_links(response.headers.getall("Link", []))


def configuration(servers: list[RTCIceServer], relay: bool) -> RTCConfiguration:
    policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def nominated(pc: RTCPeerConnection) -> tuple[str, list[Any]] | None:
    """(local candidate type, remote address) of the nominated pair, if any."""
    for transceiver in pc.getTransceivers():
        ice = transceiver.receiver.transport.transport
        pairs = ice._connection._nominated
        if pairs:
            pair = pairs[min(pairs)]
            remote = pair.remote_candidate
            return pair.local_candidate.type, [remote.host, remote.port]
    return None


async def publish(args: argparse.Namespace) -> dict[str, Any]:
    url = f"{args.base}/whip/{args.stream}"
    async with aiohttp.ClientSession() as http:
        servers = await ice_servers(http, url)
        pc = RTCPeerConnection(configuration(servers, args.relay))
        pc.addTransceiver(peers.PatternTrack(), direction="sendonly")
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        peers.prefer_codec(pc, "video", "video/VP8")
        await pc.setLocalDescription(await pc.createOffer())
        response = await http.post(
            url,
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {args.key}"},
        )
        answer = await response.text()
        if response.status != 201:
            raise SystemExit(f"WHIP answered {response.status}: {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.sleep(args.seconds)
    pair = nominated(pc)
    await pc.close()
    return {"role": "publisher", "seconds": args.seconds, "pair": pair}


async def view(args: argparse.Namespace) -> dict[str, Any]:
    url = f"{args.base}/whep/{args.stream}"
    async with aiohttp.ClientSession() as http:
        servers = await ice_servers(http, url)
        pc = RTCPeerConnection(configuration(servers, args.relay))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        response = await http.post(url, data=offer, headers={"Content-Type": "application/sdp"})
        answer = await response.text()
        if response.status != 201:
            raise SystemExit(f"WHEP answered {response.status}: {answer}")
    viewer = peers.Viewer(pc, response.headers.get("Location", ""), answer)

    @pc.on("track")
    def on_track(track: Any) -> None:
        viewer.tasks.append(asyncio.ensure_future(peers._consume(viewer, track)))

    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await viewer.wait_frames("video", args.frames, args.seconds)
    await viewer.wait_frames("audio", args.frames, 5.0)
    pair = nominated(pc)
    for task in viewer.tasks:
        task.cancel()
    await pc.close()
    return {
        "role": "viewer",
        "frames": viewer.frames,
        "local": pair[0] if pair else None,
        "remote": pair[1] if pair else None,
        "ice_servers": [s.urls for s in servers],
        "offer_candidates": [line for line in offer.splitlines() if "candidate:" in line],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=("publish", "view"))
    parser.add_argument("--base", required=True, help="http://IP:PORT of the server")
    parser.add_argument("--ip", required=True, help="this namespace's address to gather on")
    parser.add_argument("--stream", default="live")
    parser.add_argument("--key", default="test-key")
    parser.add_argument("--relay", action="store_true", help="relayed candidates only")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args(argv)
    ip = args.ip
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [ip]  # type: ignore[assignment]
    run = publish if args.role == "publish" else view
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
