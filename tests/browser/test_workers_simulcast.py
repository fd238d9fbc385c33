"""Simulcast with ``--workers 2``: Chromium publishes three VP8 layers (f, h, q) by WHIP from
the page; aiortc viewers land on both workers and pin different layers through the WHEP layer
extension (its requests reaching either worker: the steering proxies them to the session's
owner). Every viewer decodes pictures of its layer's size only, including those on the worker
that does not hold the publisher (fed by the relay, one source per layer); a viewer in
automatic mode there gets the top layer (no bandwidth estimate from aiortc)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from playwright.async_api import Browser
from tests.browser.test_simulcast_layers import KEY, PUBLISH_JS, SENT_JS, SIZES, Viewer

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


def owner(location: str) -> int:
    return int(location.rsplit("/", 1)[1].split(".", 1)[0])


async def _json(base: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{base}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def pin(base: str, viewer: Viewer, rid: str | None) -> None:
    """Pin (None: automatic) on a new connection, which either worker may take; a worker
    that has just got its first viewer of the stream learns the layers from the relay
    within milliseconds (422 until then)."""
    body = {} if rid is None else {"mediaId": "0", "encodingId": rid}
    deadline = time.monotonic() + 3
    while True:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base}{viewer.location}/layer", json=body) as response,
        ):
            if response.status == 204:
                return
            text = await response.text()
            assert response.status == 422 and time.monotonic() < deadline, text
        await asyncio.sleep(0.05)


async def status(base: str, viewer: Viewer) -> Any:
    return await _json(base, f"{viewer.location}/layer")


async def offer_viewer(base: str) -> tuple[Viewer, str]:
    """A WHEP viewer POSTed on a new connection (either worker); not connected yet."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/whep/live",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        ) as response,
    ):
        answer = await response.text()
        assert response.status == 201, answer
        return Viewer(pc, response.headers["Location"]), answer


async def connect(viewer: Viewer, answer: str) -> None:
    @viewer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.ensure_future(viewer.consume(track)))

    await viewer.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def test_simulcast_viewers_on_both_workers_pinned_and_auto(
    browser: Browser, server_factory: Any
) -> None:
    server = server_factory.start("--workers", "2")
    base = server.http
    context = await browser.new_context()
    viewers: list[tuple[Viewer, str | None]] = []
    extra: list[Viewer] = []
    try:
        page = await context.new_page()
        await page.goto(f"{base}/")
        published = await page.evaluate(PUBLISH_JS, KEY)
        assert published["status"] == 201, published["answer"]
        assert "a=simulcast:recv f;h;q" in published["answer"]

        deadline = time.monotonic() + 30
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = await _json(base, "/api/streams/live")
            layers = info.get("layers", [])
            if len(layers) == 3 and all(x["active"] and x["width"] for x in layers):
                break
            await asyncio.sleep(0.25)
        assert [(x["rid"], x["width"]) for x in info["layers"]] == [
            ("q", 320),
            ("h", 640),
            ("f", 1280),
        ], (info, await page.evaluate(SENT_JS))
        holder = info["publisher_worker"]
        other = 1 - holder

        # what each worker's viewers are to do: None is automatic selection
        wanted: dict[int, list[str | None]] = {holder: ["h", "q"], other: ["q", "f", None]}
        for _ in range(20):
            if not any(wanted.values()):
                break
            viewer, answer = await offer_viewer(base)
            todo = wanted[owner(viewer.location)]
            if not todo:
                extra.append(viewer)  # this worker has its viewers: not needed
                continue
            rid = todo.pop(0)
            if rid is not None:
                await pin(base, viewer, rid)
            await connect(viewer, answer)
            viewers.append((viewer, rid))
        assert not any(wanted.values()), f"20 viewers did not reach both workers: {wanted}"
        for viewer in extra:
            async with aiohttp.ClientSession() as http:
                await http.delete(f"{base}{viewer.location}")
            await viewer.pc.close()

        for viewer, rid in viewers:
            size = SIZES[rid or "f"]  # automatic: the top layer (no estimate from aiortc)
            got = await viewer.frames_of(size, 30, timeout=30)
            state = await status(base, viewer)
            assert got >= 30, (viewer.location, rid, viewer.sizes, state)
            assert (state["mode"], state["current"]) == (
                ("auto", "f") if rid is None else ("pinned", rid)
            ), state
            if rid is not None:
                assert set(viewer.sizes) == {size}, (rid, viewer.sizes)  # only its layer

        # the API merges the workers: every viewer's layer, the layers from the publisher's
        stream = await _json(base, "/api/streams/live")
        assert sorted(v["layer"] for v in stream["viewer_layers"]) == sorted(
            rid or "f" for _, rid in viewers
        )
        assert {v["worker"] for v in stream["viewer_layers"]} == {0, 1}
        assert sum(stream["layer_viewers"].values()) == len(viewers)

        # the layer extension through the wrong worker: new connections land on either one
        before = sum(w["http_proxied"] for w in (await _json(base, "/api/server"))["workers"])
        for viewer, rid in viewers:
            for _ in range(4):
                assert (await status(base, viewer))["current"] == (rid or "f")
        workers = (await _json(base, "/api/server"))["workers"]
        assert sum(w["http_proxied"] for w in workers) > before, workers
        assert workers[other]["relayed_sources_in"] >= 3  # the layers (and no audio here)

        # a viewer on the other worker switched while playing (pinned through any worker)
        moving = next(v for v, rid in viewers if rid == "q" and owner(v.location) == other)
        await pin(base, moving, "h")
        assert await moving.frames_of(SIZES["h"], 30, timeout=20) >= 30, moving.sizes
        assert (await status(base, moving))["current"] == "h"
    finally:
        for viewer, _ in viewers:
            for task in viewer.tasks:
                task.cancel()
            await viewer.pc.close()
        await context.close()
