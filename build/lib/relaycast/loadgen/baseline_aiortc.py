"""The baseline: what a Python developer would otherwise write. A small aiohttp server that takes
one WHIP publisher with aiortc and relays its tracks to WHEP viewers with aiortc's documented
``aiortc.contrib.media.MediaRelay``. aiortc decodes the published track once and re-encodes it
for every viewer (its senders have no pass-through of received RTP), which is exactly the cost
relaycast avoids.

Run: ``python -m relaycast.loadgen.baseline_aiortc --port 8090 --key SECRET``. Loopback only:
no STUN servers, host candidates pinned to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
from typing import Any

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class RelayState:
    def __init__(self, key: str) -> None:
        self.key = key
        self.relay = MediaRelay()
        self.tracks: dict[str, Any] = {}
        self.sessions: dict[str, RTCPeerConnection] = {}
        self.sinks: list[MediaBlackhole] = []


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # never a public STUN server


async def whip(request: web.Request) -> web.Response:
    state: RelayState = request.app["state"]
    if request.headers.get("Authorization") != f"Bearer {state.key}":
        return web.Response(status=401, text="wrong publish key")
    offer = await request.text()
    pc = _pc()
    sink = MediaBlackhole()  # keeps the relay draining the source while nobody watches

    @pc.on("track")
    def on_track(track: Any) -> None:
        state.tracks[track.kind] = track
        sink.addTrack(state.relay.subscribe(track, buffered=False))

    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await sink.start()
    state.sinks.append(sink)
    return _created(state, pc)


async def whep(request: web.Request) -> web.Response:
    state: RelayState = request.app["state"]
    if not state.tracks:
        return web.Response(status=404, text="nobody is publishing")
    offer = await request.text()
    pc = _pc()
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    for kind, track in state.tracks.items():
        pc.addTrack(state.relay.subscribe(track, buffered=False))
        del kind
    await pc.setLocalDescription(await pc.createAnswer())
    return _created(state, pc)


def _created(state: RelayState, pc: RTCPeerConnection) -> web.Response:
    sid = secrets.token_hex(8)
    state.sessions[sid] = pc
    return web.Response(
        status=201,
        text=pc.localDescription.sdp,
        content_type="application/sdp",
        headers={"Location": f"/resource/{sid}"},
    )


async def delete(request: web.Request) -> web.Response:
    state: RelayState = request.app["state"]
    pc = state.sessions.pop(request.match_info["sid"], None)
    if pc is None:
        return web.Response(status=404)
    await pc.close()
    return web.Response(status=200)


async def index(request: web.Request) -> web.Response:
    return web.Response(text="aiortc MediaRelay baseline\n")


def create_app(key: str) -> web.Application:
    app = web.Application()
    app["state"] = RelayState(key)
    app.router.add_get("/", index)
    app.router.add_post("/whip/{stream}", whip)
    app.router.add_post("/whep/{stream}", whep)
    app.router.add_delete("/resource/{sid}", delete)

    async def close_all(app: web.Application) -> None:
        st: RelayState = app["state"]
        for sink in st.sinks:
            with contextlib.suppress(Exception):
                await sink.stop()
        await asyncio.gather(*(pc.close() for pc in st.sessions.values()), return_exceptions=True)

    app.on_shutdown.append(close_all)
    return app


async def _main(port: int, key: str) -> None:
    runner = web.AppRunner(create_app(key))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"aiortc baseline on http://127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args.port, args.key))


if __name__ == "__main__":
    main()
