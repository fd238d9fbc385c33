"""The pages' side of simulcast, in headless Chromium against a real server.

- The streamer page at 720p publishes three layers (rids f, h, q at full, 1/2 and 1/4 size,
  bitrates 1x, 0.22x and 0.08x of the preset's) and its statistics panel shows each one; the
  Simulcast switch (remembered, ``?simulcast=0``) turns it off: one encoding. A server that
  refuses simulcast (422) gets the offer again with one encoding and the page says so.
- The viewer page's quality menu over the WHEP layer extension: against a stand-in of the
  extension (``page.route``, the contract of issue 9: GET/POST ``{session}/layer``), and
  against the real server: the menu lists the layers by height, pins one (the decoded
  picture shrinks to it) and returns to Auto. Without the extension (404): no menu.
- The dashboard shows the viewers per layer: from a stand-in feed, and from the real server's
  ``layer_viewers`` with one viewer pinned to the lowest layer.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route
from tests.browser.polling import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

STREAMS = ["sim", "simoff", "simrefused", "menu", "pin"]
KEYS = {name: f"key-{name}" for name in STREAMS}
LAYER_REL = "urn:ietf:params:whep:ext:core:layer"

# The outbound video of the streamer page, one entry per RTP stream (per rid with simulcast).
OUTBOUND_JS = """async () => {
  const out = [];
  (await relaycast.pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') out.push({
      rid: s.rid ?? null, width: s.frameWidth || 0, height: s.frameHeight || 0,
      frames: s.framesSent || 0, bytes: s.bytesSent || 0});
  });
  return out.sort((a, b) => b.height - a.height);
}"""

ENCODINGS_JS = """() => relaycast.pc.getSenders().find((s) => s.track && s.track.kind === 'video')
  .getParameters().encodings.map((e) => ({rid: e.rid ?? null, scale: e.scaleResolutionDownBy,
    maxBitrate: e.maxBitrate, active: e.active}))"""

INBOUND_HEIGHT_JS = """async () => { let h = 0; (await relaycast.pc.getStats()).forEach((s) => {
  if (s.type === 'inbound-rtp' && s.kind === 'video') h = s.frameHeight || 0; }); return h; }"""


@pytest.fixture(scope="module")
def server(module_server_factory: Any) -> Any:
    return module_server_factory.start(keys=KEYS)


class Pages:
    def __init__(self, browser: Browser, base: str) -> None:
        self.browser = browser
        self.base = base
        self.contexts: list[BrowserContext] = []

    async def context(self) -> BrowserContext:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.contexts.append(context)
        return context

    async def page(self, path: str, context: BrowserContext | None = None) -> Page:
        page = await (context or await self.context()).new_page()
        page.set_default_timeout(30_000)
        await page.goto(self.base + path)
        return page

    async def publisher(
        self, stream: str, *, preset: str = "720p", extra: str = "", wait: bool = True
    ) -> Page:
        page = await self.page(
            f"/publish/{stream}?key={KEYS[stream]}&source=test&preset={preset}&codec=vp8"
            f"&autostart=1{extra}"
        )
        if wait:
            await wait_live(page)
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


async def wait_live(page: Page, timeout: float = 30.0) -> None:
    handle = await page.wait_for_function(
        "() => window.relaycast && ['live', 'error'].includes(relaycast.state) && relaycast.state",
        timeout=timeout * 1000,
    )
    if await handle.json_value() != "live":
        detail = await page.evaluate("() => [relaycast.error, status.textContent]")
        raise AssertionError(f"the page did not go live: {detail}")


async def wait_frames(page: Page, frames: int = 10, timeout: float = 30.0) -> None:
    await page.wait_for_function(
        f"() => relaycast.state === 'live' && relaycast.framesDecoded >= {frames}",
        timeout=timeout * 1000,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


# -- the streamer page -----------------------------------------------------------------------


async def test_streamer_page_publishes_three_layers_at_720p(browser: Browser, server: Any) -> None:
    """720p VP8: the offer carries rids f, h, q; the sender has three encodings (scale 1, 2,
    4; 2.5 Mbit/s, 550 and 200 kbit/s); getStats shows an outbound-rtp per rid at 1280x720,
    640x360 and 320x180, each sending frames; the statistics panel has a row per layer; the
    server lists three layers."""
    async with open_pages(browser, server.http) as pages:
        pub = await pages.publisher("sim")
        sdp = await pub.evaluate("() => relaycast.pc.localDescription.sdp")
        assert "a=simulcast:send f;h;q" in sdp, "the offer has no simulcast"
        assert all(f"a=rid:{rid} send" in sdp for rid in "fhq")
        encodings = await pub.evaluate(ENCODINGS_JS)
        print(f"\n[simulcast] encodings {encodings}")
        assert [(e["rid"], e["scale"]) for e in encodings] == [("f", 1), ("h", 2), ("q", 4)]
        assert [e["maxBitrate"] for e in encodings] == [2_500_000, 550_000, 200_000]
        sc = await pub.evaluate("() => relaycast.simulcast")
        assert sc["layers"] == 3 and sc["rids"] == ["f", "h", "q"] and sc["note"] == "", sc

        # every layer sends frames (Chromium's estimate ramps up: the top layer comes last;
        # under CPU load the encoder may pause one again for a while: remember what was seen)
        # (each layer's largest size seen: under CPU load the encoder may scale one down)
        await wait_until(
            pub,
            "async () => { const seen = (window.__seen ??= {});"
            " (await relaycast.pc.getStats()).forEach((s) => {"
            " if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesSent > 0"
            " && s.frameHeight && (seen[s.rid]?.height ?? 0) < s.frameHeight)"
            " seen[s.rid] = {rid: s.rid, width: s.frameWidth,"
            " height: s.frameHeight, frames: s.framesSent}; });"
            " return ['f', 'h', 'q'].every((rid) => seen[rid]"
            " && seen[rid].height === {f: 720, h: 360, q: 180}[rid]); }",
            timeout=60,
        )
        outbound = sorted(
            (await pub.evaluate("() => Object.values(window.__seen)")),
            key=lambda o: -o["height"],
        )
        print(f"[simulcast] outbound-rtp {outbound}")
        assert [(o["rid"], o["width"], o["height"]) for o in outbound] == [
            ("f", 1280, 720),
            ("h", 640, 360),
            ("q", 320, 180),
        ]
        assert len(await pub.evaluate(OUTBOUND_JS)) == 3, "one outbound-rtp per rid"

        # the panel: one row per layer, with its size (all three sending at one moment: the
        # encoder may pause a layer for a while under load); the summary
        handle = await pub.wait_for_function(
            """() => {
              const rows = [...document.querySelectorAll('#layers-body tr')].map((tr) =>
                [tr.dataset.rid, tr.dataset.state, ...[...tr.cells].map((td) => td.textContent)]);
              const s = relaycast.stats;
              const ok = rows.length === 3 && rows.every((r) => r[1] !== 'dropped')
                && s && s.video && s.video.height === 720;
              return ok && {rows, stats: s};
            }""",
            timeout=30_000,
        )
        shown = await handle.json_value()
        rows, stats = shown["rows"], shown["stats"]
        print(f"[simulcast] panel {rows}")
        assert await pub.is_visible("#layers")
        assert [r[0] for r in rows] == ["f", "h", "q"]
        assert [r[3] for r in rows] == ["1280 × 720", "640 × 360", "320 × 180"]
        assert all(r[1] in ("ok", "limited") for r in rows)
        assert stats["video"]["width"] == 1280, "the panel's resolution is the top layer's"
        assert stats["video"]["bytes"] == sum(layer["bytes"] for layer in stats["layers"])
        assert re.fullmatch(r"[0-3] of 3 sending", await pub.text_content("#st-simulcast") or "")
        assert "3 layers" in (await pub.text_content("#simulcast-hint") or "")

        # below 720p while live: the two smaller layers off, the top one with the preset's
        # bitrate; back at 720p: all three on again (same connection)
        await pub.evaluate("() => relaycast.setPreset('480p')")
        encodings = await pub.evaluate(ENCODINGS_JS)
        assert [(e["rid"], e["active"]) for e in encodings] == [
            ("f", True),
            ("h", False),
            ("q", False),
        ]
        assert encodings[0]["maxBitrate"] == 1_200_000
        await pub.evaluate("() => relaycast.setPreset('720p')")
        encodings = await pub.evaluate(ENCODINGS_JS)
        assert [e["active"] for e in encodings] == [True, True, True]
        assert [e["maxBitrate"] for e in encodings] == [2_500_000, 550_000, 200_000]

        # the server's view of the stream (issue 9: "layers" in /api/streams/{stream})
        info = get_json(f"{server.http}/api/streams/sim")
        assert sorted(layer["rid"] for layer in info["layers"]) == ["f", "h", "q"], info


async def test_simulcast_switch_turns_it_off(browser: Browser, server: Any) -> None:
    """The switch is remembered per browser; with it off (or ?simulcast=0) 720p goes out as
    one encoding, without rids; ?simulcast=1 turns it back on for that page."""
    async with open_pages(browser, server.http) as pages:
        context = await pages.context()
        page = await pages.page("/publish/simoff", context)
        assert await page.is_checked("#simulcast"), "simulcast is on by default"
        assert "3 layers (1280×720, 640×360, 320×180)" in (
            await page.text_content("#simulcast-hint") or ""
        )
        await page.select_option("#preset", "480p")
        assert "one encoding below 720p" in (await page.text_content("#simulcast-hint") or "")
        await page.click("#simulcast")
        assert await page.evaluate("() => localStorage.getItem('relaycast.simulcast')") == "0"

        # a new page in the same browser: off, remembered; goes live with one encoding
        pub = await pages.page(
            f"/publish/simoff?key={KEYS['simoff']}&source=test&preset=720p&codec=vp8&autostart=1",
            context,
        )
        await wait_live(pub)
        assert not await pub.is_checked("#simulcast")
        encodings = await pub.evaluate(ENCODINGS_JS)
        sdp = await pub.evaluate("() => relaycast.pc.localDescription.sdp")
        print(f"\n[simulcast off] encodings {encodings}")
        assert len(encodings) == 1 and encodings[0]["rid"] is None
        assert encodings[0]["maxBitrate"] == 2_500_000
        assert "a=simulcast" not in sdp and "a=rid:" not in sdp
        await pub.wait_for_function(
            "() => relaycast.stats && relaycast.stats.video"
            " && relaycast.stats.video.height === 720",
            timeout=20_000,
        )
        assert await pub.evaluate("() => relaycast.stats.videoStreams") == 1
        assert await pub.is_hidden("#layers")
        assert await pub.text_content("#st-simulcast") == "one encoding"
        await pub.evaluate("() => relaycast.stop()")

        # the parameter wins over the remembered switch
        on = await pages.page("/publish/simoff?simulcast=1", context)
        assert await on.is_checked("#simulcast")
        off = await pages.page("/publish/simoff?simulcast=0")
        assert not await off.is_checked("#simulcast")


async def test_server_refusing_simulcast_gets_one_encoding(browser: Browser, server: Any) -> None:
    """A server that answers a simulcast offer with 422 (as relaycast did before issue 9, and
    other WHIP servers do) gets the offer again with one encoding; the page goes live and
    says why it sends one layer."""
    async with open_pages(browser, server.http) as pages:
        context = await pages.context()
        refused: list[str] = []

        async def whip(route: Route) -> None:
            body = route.request.post_data or ""
            if route.request.method == "POST" and "a=simulcast" in body:
                refused.append(body)
                await route.fulfill(
                    status=422,
                    content_type="application/problem+json",
                    body=json.dumps(
                        {
                            "title": "Unsupported offer",
                            "status": 422,
                            "detail": "simulcast is not supported; publish a single encoding",
                        }
                    ),
                )
            else:
                await route.continue_()

        await context.route(re.compile(r".*/whip/simrefused$"), whip)
        pub = await pages.page(
            f"/publish/simrefused?key={KEYS['simrefused']}&source=test&preset=720p&codec=vp8"
            "&autostart=1",
            context,
        )
        await wait_live(pub)
        sc = await pub.evaluate("() => relaycast.simulcast")
        print(f"\n[simulcast refused] {sc}")
        assert len(refused) == 1
        assert sc["wanted"] == 3 and sc["layers"] == 1 and "server" in sc["note"]
        assert len(await pub.evaluate(ENCODINGS_JS)) == 1
        assert "server takes one encoding" in (await pub.text_content("#simulcast-hint") or "")
        assert await pub.evaluate("() => relaycast.attempts") == 0, "a retry loop, not a fallback"


# -- the viewer page -------------------------------------------------------------------------


class FakeLayers:
    """A stand-in for the WHEP layer extension of issue 9 (GET/POST {session}/layer)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.gets = 0
        self.status: dict[str, Any] = {
            "mode": "auto",
            "current": "f",
            "target": "f",
            "reason": "fits 2.1 Mbit/s estimate",
            "estimate_bps": 2_100_000,
            "layers": [
                {"rid": "q", "width": 320, "height": 180, "fps": 30, "bitrate_bps": 190_000,
                 "active": True},
                {"rid": "f", "width": 1280, "height": 720, "fps": 30, "bitrate_bps": 2_400_000,
                 "active": True},
                {"rid": "h", "width": 640, "height": 360, "fps": 30, "bitrate_bps": 520_000,
                 "active": True},
            ],
        }  # fmt: skip

    async def handle(self, route: Route) -> None:
        request = route.request
        if request.method == "POST":
            body = json.loads(request.post_data or "{}")
            self.posts.append(body)
            if body:
                rid = body.get("encodingId")
                self.status.update(mode="pinned", target=rid, current=rid)
                self.status["reason"] = "pinned by viewer"
            else:
                self.status.update(mode="auto", target="f", current="f", reason="fits 2.1 Mbit/s")
            await route.fulfill(status=204)
            return
        self.gets += 1
        await route.fulfill(
            status=200, content_type="application/json", body=json.dumps(self.status)
        )


async def test_quality_menu_against_the_layer_contract(browser: Browser, server: Any) -> None:
    """With the extension (a stand-in answering GET/POST {session}/layer): the menu lists Auto
    and the layers by height, highest first; shows the layer received and why; a choice
    POSTs {"mediaId": <the video's mid>, "encodingId": rid}; Auto POSTs {}. Polled about
    once a second. A server answering 404 there: no menu, no more polling."""
    async with open_pages(browser, server.http) as pages:
        await pages.publisher("menu", preset="360p")
        fake = FakeLayers()
        context = await pages.context()
        await context.route(re.compile(r".*/whep/menu/[^/]+/layer$"), fake.handle)
        viewer = await pages.page("/watch/menu", context)
        await wait_frames(viewer)
        await viewer.wait_for_function("() => relaycast.layers.available", timeout=10_000)
        assert await viewer.is_visible("#quality") and await viewer.is_visible("#quality-card")
        options = await viewer.evaluate(
            "() => [...quality.options].map((o) => [o.value, o.textContent])"
        )
        print(f"\n[quality menu] {options}")
        assert options == [["auto", "Auto · 720p"], ["f", "720p"], ["h", "360p"], ["q", "180p"]]
        assert await viewer.text_content("#quality-current") == "720p"
        reason = await viewer.text_content("#quality-reason") or ""
        assert "fits 2.1 Mbit/s estimate" in reason and "estimate 2.1 Mbit/s" in reason
        assert await viewer.text_content("#ov-layer") == "720p (auto)"

        gets = fake.gets
        await asyncio.sleep(3.0)
        assert 2 <= fake.gets - gets <= 5, f"{fake.gets - gets} polls in 3 s"

        mid = await viewer.evaluate(
            "() => relaycast.pc.getTransceivers()"
            ".find((t) => t.receiver.track.kind === 'video').mid"
        )
        await viewer.select_option("#quality", "h")
        await viewer.wait_for_function(
            "() => document.getElementById('quality-current').textContent === '360p'",
            timeout=5_000,
        )
        assert fake.posts == [{"mediaId": mid, "encodingId": "h"}]
        assert await viewer.input_value("#quality") == "h"
        assert await viewer.text_content("#quality-mode") == "pinned to 360p"
        assert "pinned by viewer" in (await viewer.text_content("#quality-reason") or "")
        button = "#quality-buttons button[data-layer=h]"
        assert await viewer.get_attribute(button, "aria-pressed") == "true"

        await viewer.click("#quality-buttons button[data-layer=auto]")
        await viewer.wait_for_function("() => relaycast.layers.status.mode === 'auto'")
        assert fake.posts[-1] == {}
        assert await viewer.input_value("#quality") == "auto"

        # no extension: 404 on the layer resource -> no menu, polling stops
        bare = await pages.context()
        missing: list[str] = []

        async def not_found(route: Route) -> None:
            missing.append(route.request.method)
            await route.fulfill(status=404, content_type="application/problem+json", body="{}")

        await bare.route(re.compile(r".*/whep/menu/[^/]+/layer$"), not_found)
        plain = await pages.page("/watch/menu", bare)
        await wait_frames(plain)
        await asyncio.sleep(2.5)
        assert await plain.evaluate("() => relaycast.layers.available") is False
        assert await plain.is_hidden("#quality") and await plain.is_hidden("#quality-card")
        announced = await plain.evaluate("() => relaycast.layers.url")
        assert announced and announced.endswith("/layer")
        # a server that announces the extension keeps being asked (slowly); one that does not
        # is asked once
        assert 1 <= len(missing) <= 2, missing


async def test_quality_menu_pins_a_layer_and_dashboard_shows_viewers_per_layer(
    browser: Browser, server: Any
) -> None:
    """Against the real server: the WHEP 201 announces the layer resource; the viewer page's
    menu lists the three layers by height; pinning the lowest one makes the viewer decode
    320x180, Auto brings it back up; the dashboard shows one viewer per layer."""
    async with open_pages(browser, server.http) as pages:
        await pages.publisher("pin")
        low = await pages.page("/watch/pin")
        high = await pages.page("/watch/pin")
        for viewer in (low, high):
            await wait_frames(viewer)
            await viewer.wait_for_function(
                "() => relaycast.layers.available && relaycast.layers.status.layers.length === 3",
                timeout=30_000,
            )
        layers = await low.evaluate("() => relaycast.layers")
        print(f"\n[quality menu] {layers}")
        assert layers["announced"], f"the WHEP 201 has no Link rel={LAYER_REL}"
        assert layers["url"].endswith("/layer")
        options = await low.evaluate("() => [...quality.options].map((o) => o.textContent)")
        assert options[1:] == ["720p", "360p", "180p"], options

        await low.select_option("#quality", "q")
        await low.wait_for_function(
            "() => relaycast.layers.status.mode === 'pinned'"
            " && relaycast.layers.status.current === 'q'",
            timeout=15_000,
        )
        await wait_until(low, INBOUND_HEIGHT_JS.replace("return h;", "return h === 180;"),
                         timeout=15)  # fmt: skip
        assert await low.text_content("#quality-current") == "180p"
        assert await low.text_content("#quality-mode") == "pinned to 180p"

        # the dashboard: one viewer on 720p, one on 180p
        home = await pages.page("/")
        card = home.locator('article[data-stream="pin"]')
        await card.locator(".layer-item[data-rid=q]", has_text="180p (q): 1").wait_for(
            timeout=20_000
        )
        await card.locator(".layer-item[data-rid=f]", has_text="720p (f): 1").wait_for(
            timeout=20_000
        )
        shown = await home.evaluate("() => relaycast.layerViewers.pin")
        print(f"[dashboard] viewers per layer {shown}")
        assert await card.locator(".layer-bar span").count() == 2

        await low.select_option("#quality", "auto")
        await low.wait_for_function("() => relaycast.layers.status.mode === 'auto'", timeout=10_000)
        try:
            await wait_until(low, INBOUND_HEIGHT_JS.replace("return h;", "return h > 180;"),
                             timeout=30)  # fmt: skip
        except TimeoutError:
            status = await low.evaluate("() => relaycast.layers.status")
            raise AssertionError(f"still at 180p in Auto: {status}") from None


async def test_dashboard_renders_layer_distribution(browser: Browser, server: Any) -> None:
    """The dashboard's rendering of `layer_viewers` from a stand-in feed: a stacked bar and a
    legend by height (from /api/streams/{name}), paused viewers last; nothing without it."""
    streams = [
        {"name": "layered", "live": True, "viewers": 6, "ingress_bps": 3_000_000,
         "egress_bps": 9_000_000, "layer_viewers": {"q": 1, "f": 3, "h": 1, "none": 1}},
        {"name": "single", "live": True, "viewers": 2, "ingress_bps": 2_500_000,
         "egress_bps": 5_000_000},
    ]  # fmt: skip
    detail = {
        "name": "layered",
        "layers": [
            {"rid": "f", "width": 1920, "height": 1080, "fps": 30, "bitrate_bps": 4_400_000,
             "active": True},
            {"rid": "h", "width": 960, "height": 540, "fps": 30, "bitrate_bps": 990_000,
             "active": True},
            {"rid": "q", "width": 480, "height": 270, "fps": 30, "bitrate_bps": 360_000,
             "active": True},
        ],
    }  # fmt: skip
    async with open_pages(browser, server.http) as pages:
        context = await pages.context()

        async def events(route: Route) -> None:
            body = f"retry: 60000\nevent: streams\ndata: {json.dumps(streams)}\n\n"
            await route.fulfill(status=200, content_type="text/event-stream", body=body)

        async def stream_detail(route: Route) -> None:
            await route.fulfill(
                status=200, content_type="application/json", body=json.dumps(detail)
            )

        await context.route(re.compile(r".*/api/events$"), events)
        await context.route(re.compile(r".*/api/streams/layered$"), stream_detail)
        home = await pages.page("/", context)
        card = home.locator('article[data-stream="layered"]')
        await card.locator(".layer-item", has_text="1080p (f): 3").wait_for(timeout=15_000)
        legend = await card.locator(".layer-item").all_text_contents()
        print(f"\n[dashboard] legend {legend}")
        assert legend == ["1080p (f): 3", "540p (h): 1", "270p (q): 1", "video paused: 1"]
        widths = await card.locator(".layer-bar span").evaluate_all(
            "(spans) => spans.map((s) => s.style.width)"
        )
        assert [round(float(w.rstrip("%")), 1) for w in widths] == [50, 16.7, 16.7, 16.7]
        assert await home.locator('article[data-stream="single"] .layer-dist').is_hidden()
