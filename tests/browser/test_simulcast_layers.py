"""A real simulcast publisher: Chromium sends three VP8 layers (f, h, q) through WHIP done by
hand in the page (``addTransceiver`` with ``sendEncodings``), and aiortc viewers pinned to
different layers with the WHEP layer extension each decode pictures of their layer's size;
a viewer switched while playing keeps decoding, at the new size."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from playwright.async_api import Browser

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

KEY = "test-key"
SIZES = {"f": (1280, 720), "h": (640, 360), "q": (320, 180)}

# A 1280x720 canvas that moves, three encodings of it, WHIP by fetch from the server's origin.
PUBLISH_JS = """async (key) => {
  const canvas = document.createElement("canvas");
  canvas.width = 1280; canvas.height = 720;
  const ctx = canvas.getContext("2d");
  let n = 0;
  setInterval(() => {
    ctx.fillStyle = `hsl(${(n * 3) % 360}, 70%, 45%)`;
    ctx.fillRect(0, 0, 1280, 720);
    ctx.fillStyle = "#fff";
    ctx.fillRect((n * 16) % 1180, 200 + (n % 40) * 5, 100, 100);
    ctx.font = "80px sans-serif";
    ctx.fillText(String(n), 40, 100);
    n++;
  }, 33);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  const pc = new RTCPeerConnection();
  pc.addTransceiver(track, {direction: "sendonly", sendEncodings: [
    {rid: "f", maxBitrate: 1500000},
    {rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000},
    {rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000},
  ]});
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch("/whip/live", {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + key}});
  const answer = await response.text();
  if (response.status !== 201) return {status: response.status, answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  window.__pc = pc;
  return {status: response.status, answer};
}"""

SENT_JS = """async () => {
  const out = {};
  (await window.__pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out[s.rid] = [s.frameWidth || 0, s.frameHeight || 0, s.framesSent || 0];
    }
  });
  return out;
}"""


@dataclass
class Viewer:
    pc: RTCPeerConnection
    location: str
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    last: tuple[int, int] | None = None
    frames: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames += 1
                    self.last = (frame.width, frame.height)  # type: ignore[union-attr]
                    self.sizes[self.last] += 1
        except MediaStreamError:
            pass

    async def frames_of(self, size: tuple[int, int], count: int, timeout: float) -> int:
        start = self.sizes[size]
        deadline = time.monotonic() + timeout
        while self.sizes[size] - start < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.sizes[size] - start


async def view(http: aiohttp.ClientSession, base: str, rid: str) -> Viewer:
    """A WHEP viewer pinned to layer ``rid`` right after its POST (before it connects)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with http.post(
        f"{base}/whep/live",
        data=pc.localDescription.sdp,
        headers={"Content-Type": "application/sdp"},
    ) as response:
        answer = await response.text()
        assert response.status == 201, answer
        location = response.headers["Location"]
        assert any(
            "urn:ietf:params:whep:ext:core:layer" in link
            for link in response.headers.getall("Link")
        )
    viewer = Viewer(pc, location)
    await pin(http, base, viewer, rid)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.ensure_future(viewer.consume(track)))

    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return viewer


async def pin(http: aiohttp.ClientSession, base: str, viewer: Viewer, rid: str) -> None:
    async with http.post(
        f"{base}{viewer.location}/layer", json={"mediaId": "0", "encodingId": rid}
    ) as response:
        assert response.status == 204, await response.text()


async def layer_status(http: aiohttp.ClientSession, base: str, viewer: Viewer) -> Any:
    async with http.get(f"{base}{viewer.location}/layer") as response:
        assert response.status == 200
        return await response.json()


async def test_chromium_simulcast_to_viewers_pinned_to_each_layer(
    browser: Browser, relaycast_server: Any
) -> None:
    base = relaycast_server.http
    context = await browser.new_context()
    viewers: list[Viewer] = []
    try:
        page = await context.new_page()
        await page.goto(f"{base}/")
        published = await page.evaluate(PUBLISH_JS, KEY)
        assert published["status"] == 201, published["answer"]
        assert "a=simulcast:recv f;h;q" in published["answer"]

        async with aiohttp.ClientSession() as http:
            # the server sees three layers, each with its own picture size
            deadline = time.monotonic() + 30
            layers: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                async with http.get(f"{base}/api/streams/live") as response:
                    if response.status == 200:
                        layers = (await response.json())["layers"]
                if len(layers) == 3 and all(x["active"] and x["width"] for x in layers):
                    break
                await asyncio.sleep(0.25)
            sent = await page.evaluate(SENT_JS)
            assert [(x["rid"], x["width"], x["height"]) for x in layers] == [
                ("q", 320, 180),
                ("h", 640, 360),
                ("f", 1280, 720),
            ], (layers, sent)

            for rid in ("q", "h", "f"):
                viewers.append(await view(http, base, rid))
            for viewer, rid in zip(viewers, ("q", "h", "f"), strict=True):
                got = await viewer.frames_of(SIZES[rid], 30, timeout=30)
                assert got >= 30, (rid, viewer.sizes, await layer_status(http, base, viewer))
                status = await layer_status(http, base, viewer)
                assert (status["mode"], status["current"]) == ("pinned", rid)
                assert set(viewer.sizes) == {SIZES[rid]}, viewer.sizes  # only its layer

            async with http.get(f"{base}/api/streams/live") as response:
                info = await response.json()
            assert sorted(v["layer"] for v in info["viewer_layers"]) == ["f", "h", "q"]
            async with http.get(f"{base}/api/streams") as response:
                (listed,) = await response.json()
            assert listed["layer_viewers"] == {"q": 1, "h": 1, "f": 1}

            # switch the q viewer to f while it plays: it goes on decoding, at 1280x720
            low = viewers[0]
            before = low.frames
            await pin(http, base, low, "f")
            got = await low.frames_of(SIZES["f"], 30, timeout=20)
            assert got >= 30, (low.sizes, await layer_status(http, base, low))
            status = await layer_status(http, base, low)
            assert status["current"] == "f" and status["target"] == "f"
            # and back down to h, then to automatic (no estimate from aiortc: the top layer)
            await pin(http, base, low, "h")
            assert await low.frames_of(SIZES["h"], 30, timeout=20) >= 30, low.sizes
            assert low.frames - before >= 60
            async with http.post(f"{base}{low.location}/layer", json={}) as response:
                assert response.status == 204
            status = await layer_status(http, base, low)
            assert status["mode"] == "auto"
    finally:
        for viewer in viewers:
            for task in viewer.tasks:
                task.cancel()
            await viewer.pc.close()
        await context.close()
