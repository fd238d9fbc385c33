"""The streamer, viewer and home pages in headless Chromium (fake camera), against a real
server: presets applied and switched live, the connection-speed check, the design notes'
console snippet, adaptive buffering by hand and automatic under injected loss (nftables),
glass-to-glass delay read from the test pattern, recovery from a publisher reconnect, the
error states, and the live dashboard (which also refreshes the screenshots in docs/img when
RELAYCAST_SCREENSHOTS=1).

Numbers come from the pages' own RTCPeerConnections through getStats() (W3C webrtc-stats).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page
from tests.browser.polling import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT.parent / "shared" / "seed" / "design-notes.es.md"
SCREENSHOTS = ROOT / "docs" / "img"
STREAMS = ["preset", "snippet", "speed", "manual", "loss", "reconnect", "dash", "errors"]
KEYS = {name: f"key-{name}" for name in STREAMS}

# The outbound / inbound video of a page's connection (first RTP stream of the kind).
VIDEO_JS = """async (type) => {
  const pc = window.relaycast && window.relaycast.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type === type && (s.kind || s.mediaType) === "video" && !out) out = {
      width: s.frameWidth || 0, height: s.frameHeight || 0,
      bytes: (type === "outbound-rtp" ? s.bytesSent : s.bytesReceived) || 0,
      frames: (type === "outbound-rtp" ? s.framesSent : s.framesDecoded) || 0,
      timestamp: s.timestamp};
  });
  return out;
}"""


@pytest.fixture(scope="module")
def server(module_server_factory: Any) -> Any:
    """One server for the module; every test publishes on its own stream name."""
    return module_server_factory.start(keys=KEYS)


class Pages:
    """Publisher and viewer pages, each in its own browser context."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.browser = browser
        self.base = base
        self.contexts: list[BrowserContext] = []

    async def page(self, path: str, *, width: int = 1280, height: int = 800) -> Page:
        context = await self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        page = await context.new_page()
        page.set_default_timeout(30_000)
        await page.goto(self.base + path)
        return page

    async def publisher(
        self, stream: str, *, source: str = "test", preset: str = "360p", codec: str = "vp8"
    ) -> Page:
        page = await self.page(
            f"/publish/{stream}?key={KEYS[stream]}&source={source}&preset={preset}"
            f"&codec={codec}&autostart=1"
        )
        await wait_state(page, "live", ("error",))
        return page

    async def viewer(self, stream: str, **size: int) -> Page:
        page = await self.page(f"/watch/{stream}", **size)
        await wait_frames(page, 10)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@asynccontextmanager
async def open_pages(browser: Browser, base: str) -> AsyncIterator[Pages]:
    pages = Pages(browser, base)
    try:
        yield pages
    finally:
        await pages.close()


async def wait_state(
    page: Page, state: str, fail_on: tuple[str, ...] = (), timeout: float = 30.0
) -> None:
    wanted = json.dumps([state, *fail_on])
    handle = await page.wait_for_function(
        f"() => window.relaycast && {wanted}.includes(window.relaycast.state)"
        " && window.relaycast.state",
        timeout=timeout * 1000,
    )
    got = await handle.json_value()
    if got != state:
        detail = await page.evaluate(
            "() => [relaycast.error, document.getElementById('status').textContent]"
        )
        raise AssertionError(f"page ended in {got}, not {state}: {detail}")


async def wait_frames(page: Page, frames: int, timeout: float = 30.0) -> None:
    await page.wait_for_function(
        f"() => window.relaycast && window.relaycast.state === 'live'"
        f" && window.relaycast.framesDecoded >= {frames}",
        timeout=timeout * 1000,
    )


async def video_stats(page: Page, kind: str) -> dict[str, Any]:
    stats = await page.evaluate(VIDEO_JS, kind)
    assert stats is not None, "no peer connection on the page"
    return dict(stats)


def get_json(url: str, data: bytes | None = None) -> Any:
    headers = {"Content-Type": "application/octet-stream"} if data else {}
    request = urllib.request.Request(
        url, data=data, method="POST" if data else "GET", headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


# -- the streamer page -----------------------------------------------------------------------


async def test_preset_applied_then_switched_while_live(browser: Browser, server: Any) -> None:
    """360p from the camera: 640x360 sent, capped at 0.8 Mbit/s; switching to 480p while
    live changes the resolution getStats reports and the sender's cap, on the same
    connection."""
    async with open_pages(browser, server.http) as pages:
        pub = await pages.publisher("preset", source="camera", preset="360p")
        await wait_until(
            pub,
            "async () => { const pc = relaycast.pc; let h = 0; (await pc.getStats()).forEach("
            "s => { if (s.type === 'outbound-rtp' && s.kind === 'video') h = s.frameHeight; });"
            " return h === 360; }",
            timeout=20,
        )
        first = await video_stats(pub, "outbound-rtp")
        await asyncio.sleep(3.0)
        second = await video_stats(pub, "outbound-rtp")
        rate = (
            (second["bytes"] - first["bytes"]) * 8000 / (second["timestamp"] - first["timestamp"])
        )
        cap = await pub.evaluate(
            "() => relaycast.pc.getSenders().find(s => s.track && s.track.kind === 'video')"
            ".getParameters().encodings[0].maxBitrate"
        )
        print(f"\n[preset 360p] {second['width']}x{second['height']}, {rate / 1e3:.0f} kbit/s")
        assert (second["width"], second["height"]) == (640, 360)
        assert cap == 800_000
        assert 50_000 < rate < 800_000 * 1.3, f"360p sends {rate:.0f} bit/s"

        await pub.evaluate("() => { window.__pc = relaycast.pc; }")
        applied = await pub.evaluate("() => relaycast.setPreset('480p')")
        after = await video_stats(pub, "outbound-rtp")
        cap = await pub.evaluate(
            "() => relaycast.pc.getSenders().find(s => s.track && s.track.kind === 'video')"
            ".getParameters().encodings[0]"
        )
        status = await pub.text_content("#status")
        print(f"[preset 480p] applied {applied}; getStats {after['width']}x{after['height']}")
        assert applied["confirmed"], f"480p not seen in getStats within 10 s: {applied}"
        assert after["height"] == 480 and abs(after["width"] - 854) <= 2
        assert cap["maxBitrate"] == 1_200_000 and cap["maxFramerate"] == 30
        assert await pub.evaluate("() => window.__pc === relaycast.pc && relaycast.state"), (
            "switching preset reconnected"
        )
        assert await pub.evaluate("() => peerConnections.size") == 1
        assert status is not None and "480p" in status and "854x480" in status


def notes_snippet() -> str:
    """The first javascript block of the design notes, exactly as written."""
    text = NOTES.read_text(encoding="utf-8")
    match = re.search(r"```javascript\n(.*?)```", text, re.S)
    assert match and "peerConnections" in match.group(1)
    return match.group(1)


@pytest.mark.skipif(not NOTES.exists(), reason=f"{NOTES} (the seed's design notes) is absent")
async def test_console_snippet_from_the_notes_prints_real_numbers(
    browser: Browser, server: Any
) -> None:
    """The notes' snippet, pasted as is into the live streamer page's console, prints a
    resolution and a frame count (from the page's global peerConnections Map)."""
    async with open_pages(browser, server.http) as pages:
        pub = await pages.publisher("snippet")
        await asyncio.sleep(1.5)
        messages: list[str] = []

        def on_console(msg: ConsoleMessage) -> None:
            messages.append(msg.text)

        pub.on("console", on_console)
        await pub.evaluate(f"() => {{\n{notes_snippet()}\n}}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("Frames enviados" in m for m in messages):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        text = "\n".join(messages)
        print("\n[console snippet]\n" + text)
        resolution = re.search(r"Resolución: (\d+) x (\d+)", text)
        frames = re.search(r"Frames enviados: (\d+)", text)
        assert resolution, f"no resolution printed:\n{text}"
        assert (int(resolution.group(1)), int(resolution.group(2))) == (640, 360)
        assert frames and int(frames.group(1)) > 0, f"no frames printed:\n{text}"
        assert re.search(r"Packets enviados: [1-9]\d*", text), f"no audio printed:\n{text}"


async def test_speed_check_suggests_a_preset(browser: Browser, server: Any) -> None:
    """detectConnectionSpeed() (the notes' function, effectiveType fixed) and the upload
    measurement against POST /api/speedtest: a number, a preset and the reason, shown."""
    body = os.urandom(2 * 1024 * 1024)
    direct = get_json(server.http + "/api/speedtest", body)
    assert direct["bytes"] == len(body) and direct["mbps"] > 0
    clock = get_json(server.http + "/api/time")
    assert abs(clock["now_ms"] / 1000 - time.time()) < 5

    async with open_pages(browser, server.http) as pages:
        page = await pages.page("/publish/speed")
        result = await page.evaluate("() => checkConnectionSpeed()")
        print(f"\n[speed] {json.dumps(result)}")
        assert result["upload"]["mbps"] > 1, "loopback upload measured below 1 Mbit/s"
        assert result["upload"]["bytes"] >= 512 * 1024
        assert result["preset"] in ("360p", "480p", "720p", "1080p")
        assert "Mbit/s" in result["reason"]
        assert isinstance(result["networkInfoMbps"], (int, float))
        assert result["networkInfoMbps"] > 0
        fixed = await page.evaluate(
            "() => [detectConnectionSpeed({connection: {effectiveType: '3g'}}),"
            " detectConnectionSpeed({connection: {downlink: 7.5}}),"
            " detectConnectionSpeed({}), typeof detectConnectionSpeed()]"
        )
        assert fixed == [3, 7.5, 4, "number"]
        shown = await page.text_content("#speed-value")
        reason = await page.text_content("#speed-reason")
        assert shown is not None and "Mbit/s upload" in shown
        assert reason is not None and f"Suggested: {result['preset']}" in reason
        # nothing touched the preset: the suggestion is selected
        assert await page.input_value("#preset") == result["preset"]


async def test_errors_are_clear(browser: Browser, server: Any) -> None:
    """Missing key (401), wrong key (403), camera refused, and a stream already live
    elsewhere (409, retried) each end in a sentence a person can act on; a key that
    worked is remembered."""
    async with open_pages(browser, server.http) as pages:
        page = await pages.page("/publish/errors?source=test&preset=360p&autostart=1")
        await wait_state(page, "error")
        assert "needs its publish key" in (await page.text_content("#status") or "")

        page = await pages.page("/publish/errors?key=nope&source=test&preset=360p&autostart=1")
        await wait_state(page, "error")
        assert "key is not right" in (await page.text_content("#status") or "")
        assert await page.get_attribute("#key", "aria-invalid") == "true"

        context = await browser.new_context()
        pages.contexts.append(context)
        refused = await context.new_page()
        await refused.add_init_script(
            "navigator.mediaDevices.getUserMedia = () => Promise.reject("
            "new DOMException('Permission denied', 'NotAllowedError'));"
        )
        await refused.goto(
            f"{server.http}/publish/errors?key={KEYS['errors']}&source=camera&autostart=1"
        )
        await wait_state(refused, "error")
        assert "was refused" in (await refused.text_content("#status") or "")

        live = await pages.publisher("errors")
        # same context as the successful one: the key is remembered without ?key=
        await live.goto(f"{server.http}/publish/errors")
        assert await live.input_value("#key") == KEYS["errors"]
        await live.goto(
            f"{server.http}/publish/errors?key={KEYS['errors']}&source=test&preset=360p&autostart=1"
        )
        await wait_state(live, "live")
        second = await pages.page(
            f"/publish/errors?key={KEYS['errors']}&source=test&preset=360p&autostart=1"
        )
        await second.wait_for_function(
            "() => document.getElementById('status').textContent.includes('already live')",
            timeout=15_000,
        )
        assert await second.evaluate("() => relaycast.state") == "connecting"


# -- the viewer page -------------------------------------------------------------------------


async def test_manual_buffering_overlay_and_glass_to_glass(browser: Browser, server: Any) -> None:
    """applyAdaptiveBuffering(20, 1000) sets every receiver's jitterBufferTarget to 1000 ms
    and switches the automatic mode off; the overlay shows the numbers; the test pattern's
    timecode gives the glass-to-glass delay."""
    async with open_pages(browser, server.http) as pages:
        await pages.publisher("manual")
        viewer = await pages.viewer("manual")
        await viewer.wait_for_function(
            "() => relaycast.glassToGlass && relaycast.glassToGlass.reads >= 10", timeout=20_000
        )
        g2g = await viewer.evaluate("() => relaycast.glassToGlass")
        print(f"\n[glass-to-glass] loopback, 360p VP8: {g2g}")
        assert 0 < g2g["medianMs"] < 5000, f"glass-to-glass {g2g}"

        result = await viewer.evaluate("() => applyAdaptiveBuffering(20, 1000)")
        targets = await viewer.evaluate(
            "() => relaycast.pc.getReceivers().map(r => [r.track.kind, r.jitterBufferTarget])"
        )
        print(f"[manual buffer] {result}; receivers {targets}")
        assert [t for k, t in targets if k == "video"] == [1000]
        assert all(t == 1000 for _, t in targets) and len(targets) == 2
        assert result["targetMs"] == 1000 and "20 % loss" in result["reason"]
        assert await viewer.evaluate("() => relaycast.buffer.auto") is False
        assert not await viewer.is_checked("#auto-buffer")
        assert await viewer.text_content("#buffer-target") == "1.0 s"
        await asyncio.sleep(2.5)  # the automatic policy stays off
        assert await viewer.evaluate("() => relaycast.buffer.targetMs") == 1000

        overlay = {
            key: await viewer.text_content(f"#ov-{key}")
            for key in ("resolution", "fps", "bitrate", "buffer", "delay", "loss", "jitter")
        }
        print(f"[overlay] {overlay}")
        assert overlay["resolution"] == "640×360"
        assert overlay["buffer"] == "1000 ms (manual)"
        assert overlay["delay"] and "measured" in overlay["delay"]
        assert overlay["bitrate"] and "bit/s" in overlay["bitrate"]

        await viewer.click("#auto-buffer")
        assert await viewer.evaluate("() => relaycast.buffer.auto") is True


def nft_usable() -> str | None:
    """None if nftables can be used here, else why not."""
    if shutil.which("nft") is None:
        return "nft is not installed (apt-get install -y nftables)"
    if os.geteuid() != 0:
        return "injecting loss with nftables needs root"
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"nft cannot be used here: {probe.stderr.strip()}"
    return None


class UdpDrop:
    """An nftables table of our own dropping a share of the UDP packets from one port to
    another (this test's server and viewer only, nothing else); removed at teardown."""

    def __init__(self) -> None:
        self.table = f"rc_test_{os.getpid()}"

    def add(self, sport: int, dport: int, percent: int) -> None:
        rule = f"udp sport {sport} udp dport {dport} numgen random mod 100 < {percent} drop"
        for command in (
            f"add table inet {self.table}",
            f"add chain inet {self.table} out {{ type filter hook output priority 0 ; }}",
            f"add rule inet {self.table} out {rule}",
        ):
            subprocess.run(["nft", command], check=True, capture_output=True, text=True)

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)


@pytest.fixture
def drop_udp() -> Iterator[UdpDrop]:
    why = nft_usable()
    if why:
        pytest.skip(why)
    drop = UdpDrop()
    try:
        yield drop
    finally:
        drop.remove()


async def test_automatic_buffering_raises_target_under_loss(
    browser: Browser, server: Any, drop_udp: UdpDrop
) -> None:
    """Dropping 20 % of the server's packets to one viewer makes its automatic mode raise
    the buffer target; the target does not fall back at once when the loss stops."""
    async with open_pages(browser, server.http) as pages:
        await pages.publisher("loss")
        viewer = await pages.viewer("loss")
        await asyncio.sleep(3.0)
        before = await viewer.evaluate("() => relaycast.buffer")
        port = await viewer.evaluate(
            """async () => {
              const r = await relaycast.pc.getStats(); let pair = null; const cands = {};
              r.forEach(s => { if (s.type === 'local-candidate') cands[s.id] = s;
                if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded')
                  pair = s; });
              return pair ? cands[pair.localCandidateId].port : null; }"""
        )
        assert port, "viewer has no selected candidate pair"
        drop_udp.add(server.udp_port, int(port), 20)
        raised_at = time.monotonic()
        await viewer.wait_for_function(
            f"() => relaycast.buffer.targetMs > {before['targetMs']}"
            " && relaycast.buffer.targetMs >= 500",
            timeout=25_000,
        )
        raised = await viewer.evaluate("() => relaycast.buffer")
        shown = await viewer.text_content("#buffer-reason")
        receivers = await viewer.evaluate(
            "() => relaycast.pc.getReceivers().map(r => r.jitterBufferTarget)"
        )
        print(
            f"\n[auto buffer] before {before}; after {time.monotonic() - raised_at:.1f} s "
            f"of 20 % loss: {raised}; receivers {receivers}"
        )
        assert raised["auto"] is True
        assert all(t == raised["targetMs"] for t in receivers)
        assert raised["lossPercent"] >= 4
        assert shown is not None and "loss" in shown and "automatic" in shown
        drop_udp.remove()
        await asyncio.sleep(4.0)  # hysteresis: 10 clean seconds before stepping down
        # (it may still climb from moderate to heavy on the last lossy seconds; never down)
        assert await viewer.evaluate("() => relaycast.buffer.targetMs") >= raised["targetMs"]


async def test_viewer_recovers_from_publisher_reconnect(browser: Browser, server: Any) -> None:
    """The streamer stops and goes live again: the viewer page shows 'waiting' with its
    curtain, then plays the new session without a reload."""
    async with open_pages(browser, server.http) as pages:
        pub = await pages.publisher("reconnect")
        viewer = await pages.viewer("reconnect")
        await viewer.evaluate("() => { window.__same = true; }")
        await pub.evaluate("() => relaycast.stop()")
        await wait_state(viewer, "waiting", timeout=15)
        assert await viewer.is_visible("#curtain")
        assert "Waiting for the streamer" in (await viewer.text_content("#curtain-text") or "")
        before = await viewer.evaluate("() => relaycast.framesDecoded")
        await pub.evaluate("() => relaycast.goLive()")
        await wait_state(pub, "live", ("error",))
        await viewer.wait_for_function(
            f"() => relaycast.state === 'live' && relaycast.framesDecoded >= {before} + 30",
            timeout=30_000,
        )
        assert await viewer.evaluate("() => window.__same === true"), "the viewer page reloaded"
        assert not await viewer.is_visible("#curtain")


# -- the home page ---------------------------------------------------------------------------


async def test_dashboard_shows_streams_viewers_and_totals(browser: Browser, server: Any) -> None:
    """The dashboard lists the live stream with its viewer count, codec, resolution and
    bitrate, charts its history and the server totals, and follows a viewer leaving over
    server-sent events. Also takes the README screenshots."""
    async with open_pages(browser, server.http) as pages:
        pub = await pages.publisher("dash")
        viewers = [await pages.viewer("dash"), await pages.viewer("dash", width=390, height=844)]
        home = await pages.page("/")
        card = home.locator('article[data-stream="dash"]')
        await card.locator(".f-viewers", has_text=re.compile(r"^2")).wait_for(timeout=15_000)
        await card.locator(".f-resolution", has_text="640 × 360").wait_for(timeout=15_000)
        assert await card.locator(".f-codec").text_content() == "VP8 + opus"
        assert "bit/s" in (await card.locator(".f-ingress").text_content() or "")
        assert await card.locator("a", has_text="Watch").get_attribute("href") == "/watch/dash"
        await home.wait_for_function(
            "() => (relaycast.history.dash || []).length >= 3 && relaycast.server"
            " && relaycast.server.ingress_bps > 0 && relaycast.server.egress_bps > 0",
            timeout=15_000,
        )
        server_totals = await home.evaluate("() => relaycast.server")
        assert server_totals["memory_rss_bytes"] > 10_000_000
        assert server_totals["cpu_percent"] >= 0
        assert "Mbit/s" in (await home.text_content("#t-ingress") or "") or "kbit/s" in (
            await home.text_content("#t-ingress") or ""
        )
        history = get_json(server.http + "/api/streams/dash/history")
        assert history["samples"] and history["samples"][-1][3] == 2

        await pub.evaluate("() => checkConnectionSpeed()")  # shown in the screenshot
        await asyncio.sleep(3.0)  # some chart history for the screenshots
        await save_screenshots(pub, viewers, home)

        await viewers[0].close()
        await card.locator(".f-viewers", has_text=re.compile(r"^1")).wait_for(timeout=15_000)


async def save_screenshots(pub: Page, viewers: list[Page], home: Page) -> None:
    """docs/img/*.png when RELAYCAST_SCREENSHOTS=1; otherwise only checks they render."""
    target = SCREENSHOTS if os.environ.get("RELAYCAST_SCREENSHOTS") == "1" else None
    shots = {
        "publish.png": (pub, True),
        "watch.png": (viewers[0], False),
        "watch-phone.png": (viewers[1], True),
        "dashboard.png": (home, True),
    }
    for name, (page, full) in shots.items():
        png = await page.screenshot(full_page=full)
        assert len(png) > 10_000, f"{name} looks empty"
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(png)
