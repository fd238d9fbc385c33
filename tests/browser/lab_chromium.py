"""Chromium in the namespaces of a :class:`tests.integration.netns.Lab`: a page-driven WHIP
publisher (a busy canvas, optionally three simulcast layers) and a minimal third-party WHEP
player (a plain ``RTCPeerConnection`` page that is not ours, served by the test from an origin
of its own, doing the WHEP POST and the layer extension itself), with ``getStats`` readers.

Every host of the lab is a Chromium process of its own (one per namespace, started through
:meth:`Node.wrapper`), so each viewer's packets cross its own veth and its own limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, Page, Playwright
from tests.chromium import ARGS, CHROMIUM
from tests.integration.netns import Node

#: the third-party player's own origin: a plain HTTP server on the viewer's loopback (a
#: public origin would need Chromium's local-network-access permission to reach the lab)
PLAYER_PORT = 8099

PLAYER_HTML = """<!doctype html>
<meta charset="utf-8"><title>a third-party WHEP player</title>
<body>
<script>
// No relaycast code here: a plain RTCPeerConnection, the WHEP POST and the layer extension.
const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";
window.players = [];
window.watch = async (endpoint) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const video = document.createElement("video");
  video.autoplay = true; video.muted = true; video.playsInline = true;
  video.width = 320; video.height = 180;
  document.body.append(video);
  pc.ontrack = (e) => {
    if (!video.srcObject) video.srcObject = new MediaStream();
    video.srcObject.addTrack(e.track);
  };
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(endpoint, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp"}});
  const answer = await response.text();
  if (response.status !== 201) return {status: response.status, answer};
  let layer = null;
  for (const part of (response.headers.get("Link") || "").split(",")) {
    const m = part.match(/<([^>]+)>\\s*;.*rel="([^"]+)"/);
    if (m && m[2] === LAYER_REL) layer = new URL(m[1], endpoint).href;
  }
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  const location = new URL(response.headers.get("Location"), endpoint).href;
  window.players.push({pc, location, layer});
  return {status: response.status, index: window.players.length - 1, location, layer};
};
window.video = async (index) => {
  const {pc} = window.players[index];
  const out = {connection: pc.connectionState, localPort: null};
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      Object.assign(out, {
        frames: s.framesDecoded || 0, freezes: s.freezeCount || 0,
        frozen: s.totalFreezesDuration || 0, bytes: s.bytesReceived || 0,
        headerBytes: s.headerBytesReceived || 0, width: s.frameWidth || 0,
        height: s.frameHeight || 0, lost: s.packetsLost || 0, nacks: s.nackCount || 0,
        received: s.packetsReceived || 0, plis: s.pliCount || 0,
        keyframes: s.keyFramesDecoded || 0,
        jbDelay: s.jitterBufferDelay || 0, jbEmitted: s.jitterBufferEmittedCount || 0,
      });
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      const local = pair && report.get(pair.localCandidateId);
      if (local) out.localPort = local.port;
    }
  });
  return out;
};
window.layer = async (index, body) => {
  const url = window.players[index].layer;
  if (body === undefined) return (await fetch(url)).json();
  const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json"}});
  return r.status;
};
</script>
</body>"""

# A moving 1280x720 canvas (a dozen random boxes a frame: enough for the encoder to reach its
# bitrate limits, little enough that it need not drop frames to stay within them), published by
# WHIP from the server's origin, with the encodings given (SIMULCAST: f/h/q).
PUBLISH_JS = """async ([endpoint, key, encodings, width, height]) => {
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  let n = 0;
  setInterval(() => {
    ctx.fillStyle = `hsl(${(n * 3) % 360}, 60%, 40%)`;
    ctx.fillRect(0, 0, width, height);
    for (let i = 0; i < 12; i++) {
      ctx.fillStyle = `hsl(${Math.random() * 360}, 80%, ${20 + Math.random() * 60}%)`;
      ctx.fillRect(Math.random() * width, Math.random() * height,
                   8 + Math.random() * width / 16, 8 + Math.random() * height / 16);
    }
    ctx.fillStyle = "#fff";
    ctx.font = `${height / 8}px sans-serif`;
    ctx.fillText(String(n), 40, height / 6);
    n++;
  }, 33);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  window.__pcs = window.__pcs || [];
  const pc = new RTCPeerConnection();
  pc.addTransceiver(track, {direction: "sendonly", sendEncodings: encodings});
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(endpoint, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + key}});
  const answer = await response.text();
  if (response.status !== 201) return {status: response.status, answer};
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  window.__pcs.push(pc);
  return {status: response.status, answer};
}"""

# The publisher's video upload: bytes sent over every encoding (and per rid: size, frames).
SENT_JS = """async () => {
  const out = {bytes: 0, rids: {}};
  for (const pc of window.__pcs) {
    (await pc.getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        out.bytes += (s.bytesSent || 0) + (s.headerBytesSent || 0)
          + (s.retransmittedBytesSent || 0);
        out.rids[s.rid || "-"] = {width: s.frameWidth || 0, height: s.frameHeight || 0,
          frames: s.framesSent || 0, limitation: s.qualityLimitationReason || ""};
      }
    });
  }
  return out;
}"""

SIMULCAST = [
    {"rid": "f", "maxBitrate": 1_500_000, "maxFramerate": 30},
    {"rid": "h", "scaleResolutionDownBy": 2, "maxBitrate": 450_000, "maxFramerate": 30},
    {"rid": "q", "scaleResolutionDownBy": 4, "maxBitrate": 130_000, "maxFramerate": 30},
]


async def launch(pw: Playwright, node: Node, base: str) -> Browser:
    """Headless Chromium inside ``node``'s namespace."""
    return await pw.chromium.launch(
        executable_path=str(node.wrapper(str(CHROMIUM))),
        headless=True,
        args=[*ARGS, f"--unsafely-treat-insecure-origin-as-secure={base}"],
    )


async def publish(
    browser: Browser,
    base: str,
    stream: str,
    key: str,
    encodings: list[dict[str, Any]],
    size: tuple[int, int] = (1280, 720),
) -> Page:
    """A page of the server's origin that publishes a busy canvas by WHIP."""
    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/")
    result = await page.evaluate(PUBLISH_JS, [f"/whip/{stream}", key, encodings, *size])
    assert result["status"] == 201, result["answer"]
    return page


async def upload_bps(page: Page, seconds: float) -> float:
    """The publisher's video upload over ``seconds`` (bit/s, RTP headers and RTX included)."""
    first = await page.evaluate(SENT_JS)
    start = time.monotonic()
    await asyncio.sleep(seconds)
    last = await page.evaluate(SENT_JS)
    return float((last["bytes"] - first["bytes"]) * 8 / (time.monotonic() - start))


def serve_player(node: Node) -> str:
    """Serve the player's page in ``node``'s namespace (its loopback); its URL."""
    root = node.lab.tmp / "player"
    root.mkdir(exist_ok=True)
    (root / "player.html").write_text(PLAYER_HTML)
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
    command += ["--directory", str(root), str(PLAYER_PORT)]
    node.spawn(command, log=node.lab.tmp / f"{node.name}-player.log")
    return f"http://127.0.0.1:{PLAYER_PORT}/player.html"


async def player(browser: Browser, node: Node) -> Page:
    """The third-party player's page (served in ``node``), on an origin of its own."""
    url = serve_player(node)
    page = await (await browser.new_context()).new_page()
    deadline = time.monotonic() + 10
    while True:
        try:
            await page.goto(url)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    return page


@dataclass
class Sample:
    t: float  # seconds since the watch began (test clock)
    layer: str | None
    target: str | None
    estimate_bps: int | None
    reason: str
    frames: int
    freezes: int
    frozen: float
    bytes: int
    width: int
    height: int
    lost: int = 0
    nacks: int = 0
    plis: int = 0
    keyframes: int = 0


@dataclass
class Watcher:
    """One player of a page: its WHEP session, sampled every ``every`` seconds."""

    page: Page
    index: int
    location: str
    layer_url: str
    name: str
    samples: list[Sample] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None

    async def sample(self) -> Sample:
        state = await self.page.evaluate("(i) => window.layer(i)", self.index)
        stats = await self.page.evaluate("(i) => window.video(i)", self.index)
        s = Sample(
            time.monotonic() - self.t0,
            state["current"],
            state["target"],
            state["estimate_bps"],
            state["reason"],
            stats.get("frames", 0),
            stats.get("freezes", 0),
            stats.get("frozen", 0.0),
            stats.get("bytes", 0) + stats.get("headerBytes", 0),
            stats.get("width", 0),
            stats.get("height", 0),
            stats.get("lost", 0),
            stats.get("nacks", 0),
            stats.get("plis", 0),
            stats.get("keyframes", 0),
        )
        self.samples.append(s)
        return s

    def start(self, every: float = 0.5) -> None:
        async def loop() -> None:
            while True:
                with contextlib.suppress(Exception):  # a page busy or closing: next one
                    await self.sample()
                await asyncio.sleep(every)

        self.task = asyncio.ensure_future(loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def at(self, t: float) -> Sample:
        """The last sample taken at or before ``t``."""
        before = [s for s in self.samples if s.t <= t]
        return before[-1] if before else self.samples[0]

    def window(self, start: float, end: float) -> dict[str, float]:
        """Decoding over [start, end]: fps, freezes, frozen seconds, receive rate (bit/s)."""
        a, b = self.at(start), self.at(end)
        span = max(b.t - a.t, 0.001)
        return {
            "seconds": round(span, 1),
            "fps": (b.frames - a.frames) / span,
            "freezes": b.freezes - a.freezes,
            "frozen": b.frozen - a.frozen,
            "bps": (b.bytes - a.bytes) * 8 / span,
        }

    async def pin(self, body: dict[str, str]) -> int:
        return int(await self.page.evaluate("([i, b]) => window.layer(i, b)", [self.index, body]))


async def watch(page: Page, endpoint: str, name: str) -> Watcher:
    result = await page.evaluate("(url) => window.watch(url)", endpoint)
    assert result["status"] == 201, result
    assert result["layer"], "the 201 carries no layer extension Link"
    return Watcher(page, result["index"], result["location"], result["layer"], name)


async def wait_until(predicate: Any, timeout: float, every: float = 0.25) -> float | None:
    """Seconds until ``predicate()`` held (None: not within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        await asyncio.sleep(every)
    return None
