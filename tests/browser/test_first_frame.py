"""Time to first frame of the viewer page, side by side with a minimal third-party WHEP page.

One streamer (the streamer page, 360p VP8 test pattern) is live; then, in a fresh browser
context each time (cold cache, as a first visit), the viewer page ``/watch/{stream}`` and a
plain RTCPeerConnection WHEP page (a fixture of this test, served from another origin, so it
also pays the CORS preflight a real third-party player pays) are loaded in turn. For each load
the first frame the <video> presents (``requestVideoFrameCallback``'s ``presentationTime``,
ms since the navigation started, i.e. relative to ``performance.timeOrigin``) is recorded,
with the milestones on the way (module scripts, WHEP POST, ICE+DTLS connected).

The medians are printed; the assertion is only a liveness bound (speed numbers go to the
docs, not to tight asserts on a shared machine)::

    python -m pytest tests/browser/test_first_frame.py -s -q

``RELAYCAST_FIRST_FRAME_LOADS`` sets the number of loads of each page (default 9).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

STREAM = "ff"
KEY = "key-ff"
LOADS = int(os.environ.get("RELAYCAST_FIRST_FRAME_LOADS", "9"))
LIVENESS_MS = 2000.0

# Before any script of the page: record every RTCPeerConnection (creation, connected) and
# the first presented frame of the first <video>, all in ms since the navigation started.
PROBE_JS = """(() => {
  const marks = (window.__ff = {pc: null, connected: null, frame: null, loadeddata: null});
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      if (marks.pc === null) marks.pc = performance.now();
      this.addEventListener("connectionstatechange", () => {
        if (this.connectionState === "connected" && marks.connected === null) {
          marks.connected = performance.now();
        }
      });
    }
  };
  const hook = (video) => {
    video.requestVideoFrameCallback((now, meta) => {
      marks.frame = meta.presentationTime ?? now;
    });
    video.addEventListener("loadeddata", () => {
      if (marks.loadeddata === null) marks.loadeddata = performance.now();
    });
  };
  const scan = () => {
    const video = document.querySelector("video");
    if (video) hook(video);
    return Boolean(video);
  };
  if (!scan()) {
    const observer = new MutationObserver(() => { if (scan()) observer.disconnect(); });
    observer.observe(document, {childList: true, subtree: true});
  }
})();"""

MILESTONES_JS = """() => {
  const r = performance.getEntriesByType("resource");
  const nav = performance.getEntriesByType("navigation")[0];
  const whep = r.find((e) => e.name.includes("/whep/") && e.initiatorType === "fetch");
  const scripts = r.filter((e) => e.name.endsWith(".js"));
  return {
    html: nav ? nav.responseEnd : null,
    scripts: scripts.length ? Math.max(...scripts.map((e) => e.responseEnd)) : null,
    post: whep ? whep.startTime : null,
    answer: whep ? whep.responseEnd : null,
    ...window.__ff,
  };
}"""

# The third-party player: what a developer writes from the WHEP draft, nothing more.
MINIMAL_WHEP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>minimal WHEP player</title></head>
<body>
<video id="video" autoplay muted playsinline></video>
<script>
(async () => {
  const whep = new URLSearchParams(location.search).get("whep");
  const pc = new RTCPeerConnection();
  const stream = new MediaStream();
  const video = document.getElementById("video");
  pc.ontrack = (ev) => { stream.addTrack(ev.track); video.srcObject = stream; };
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  await pc.setLocalDescription(await pc.createOffer());
  const resp = await fetch(whep, {method: "POST", headers: {"Content-Type": "application/sdp"},
                                  body: pc.localDescription.sdp});
  await pc.setRemoteDescription({type: "answer", sdp: await resp.text()});
})();
</script>
</body></html>
"""


class _MinimalPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = MINIMAL_WHEP_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def third_party_origin() -> Iterator[str]:
    """A web server of its own (another origin) serving the minimal WHEP page."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _MinimalPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server(module_server_factory: Any) -> Any:
    return module_server_factory.start(keys={STREAM: KEY})


async def load(browser: Browser, url: str) -> dict[str, Any]:
    """Open *url* in a fresh context; the milestones once the first frame is presented."""
    context = await browser.new_context()
    try:
        page: Page = await context.new_page()
        await page.add_init_script(PROBE_JS)
        await page.goto(url)
        await page.wait_for_function(
            "() => window.__ff && window.__ff.frame !== null", timeout=20_000
        )
        marks: dict[str, Any] = await page.evaluate(MILESTONES_JS)
        return marks
    finally:
        await context.close()


def describe(m: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        return "-" if m.get(key) is None else f"{m[key]:.0f}"

    return (
        f"html {ms('html')}, scripts {ms('scripts')}, pc {ms('pc')}, "
        f"POST {ms('post')}->{ms('answer')}, connected {ms('connected')}, "
        f"loadeddata {ms('loadeddata')}, first frame {ms('frame')} ms"
    )


async def test_first_frame_viewer_page_and_minimal_whep_page(
    browser: Browser, server: Any, third_party_origin: str
) -> None:
    context = await browser.new_context()
    try:
        publisher = await context.new_page()
        publisher.set_default_timeout(30_000)
        await publisher.goto(
            f"{server.http}/publish/{STREAM}?key={KEY}&source=test&preset=360p&codec=vp8"
            "&autostart=1"
        )
        await publisher.wait_for_function(
            "() => window.relaycast && window.relaycast.state === 'live'", timeout=30_000
        )
        await asyncio.sleep(2.0)  # a keyframe in the server's cache

        pages = {
            "viewer page": f"{server.http}/watch/{STREAM}",
            "minimal WHEP page": f"{third_party_origin}/?whep={server.http}/whep/{STREAM}",
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in pages}
        for url in pages.values():  # warm-up: Chromium's first renderers are slow
            await load(browser, url)
        for i in range(LOADS):
            for name, url in pages.items():
                marks = await load(browser, url)
                results[name].append(marks)
                print(f"\n[first frame] {name} #{i + 1}: {describe(marks)}", end="")
        print()
        medians = {
            name: statistics.median(float(m["frame"]) for m in runs)
            for name, runs in results.items()
        }
        for name, runs in results.items():
            frames = sorted(float(m["frame"]) for m in runs)
            print(
                f"[first frame] {name}: median {medians[name]:.0f} ms over {len(runs)} loads "
                f"(min {frames[0]:.0f}, max {frames[-1]:.0f})"
            )
        print(
            f"first_frame_ms viewer_page={medians['viewer page']:.0f} "
            f"minimal_whep_page={medians['minimal WHEP page']:.0f}"
        )
        assert medians["viewer page"] < LIVENESS_MS, f"viewer page first frame: {medians}"
    finally:
        await context.close()
