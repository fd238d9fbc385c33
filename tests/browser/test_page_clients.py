"""The pages' WHIP/WHEP clients in headless Chromium against a real server: the Link
ice-server parsing and the page config (the modules themselves, through page.evaluate), the
session runner's reconnect with the last 201's servers, the viewer page of a private stream
with a token from ``relaycast token`` (and without one, and with a bad one: a clear message,
no retry loop), and the one-click publish URL with the key in the fragment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TOKEN_SECRET = "page-clients-test-secret-0123456789abcdef"
TURN_SECRET = "turn-rest-secret"
KEYS = {"priv": "key-priv", "oneclick": "key-oneclick", "open": "key-open"}
MODULES = "/static/js"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(module_server_factory: Any) -> Any:
    return module_server_factory.start(
        "--private-stream",
        "priv",
        "--token-secret",
        TOKEN_SECRET,
        "--ice-server",
        "stun:127.0.0.1:3478",
        "--ice-server",
        "turn:127.0.0.1:3478?transport=udp",
        "--turn-secret",
        TURN_SECRET,
        keys=KEYS,
    )


async def new_page(browser: Browser, url: str) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(30_000)
    await page.goto(url)
    return page


def viewer_token(server: Any, stream: str) -> str:
    """A token as a streamer makes one: ``relaycast token NAME`` (first line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYCAST_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    out = subprocess.run(
        [sys.executable, "-m", "relaycast", "token", stream, "--token-secret", TOKEN_SECRET],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith(f"/watch/{stream}?token={lines[0]}"), out.stdout
    return lines[0]


async def test_link_header_ice_servers_and_page_config(browser: Browser, server: Any) -> None:
    """parseIceServerLinks (RFC 8288 Link values as fetch joins them, RFC 9725 §4.6 params)
    and readPageConfig (the relaycast-config tag; absent or broken: no servers)."""
    page = await new_page(browser, server.http + "/")
    try:
        got = await page.evaluate(
            f"""async () => {{
              const http = await import("{MODULES}/http-util.js");
              const cfg = await import("{MODULES}/config.js");
              const header = [
                '<stun:stun.example.org:3478>; rel="ice-server"',
                '<turn:turn.example.org:3478?transport=udp>; rel="ice-server";'
                  + ' username="1767225600:viewer"; credential="a+b/c==";'
                  + ' credential-type="password"',
                '<https://example.org/x>; rel="urn:ietf:params:whep:ext:core:layer"',
                '<turns:t.example.org:5349>;rel=ice-server;username=u;'
                  + 'credential="with, comma \\\\"q\\\\""',
                '<stun:odd.example.org>; rel="ice-server other"',
                '<http://not-ice.example.org>; rel="ice-server"',
              ].join(", ");
              const parsed = http.parseIceServerLinks(header);
              const doc = (html) => new DOMParser().parseFromString(html, "text/html");
              const tag = '<script id="relaycast-config" type="application/json">';
              return {{
                parsed,
                none: http.parseIceServerLinks(null),
                retryAfter: [http.parseRetryAfter("3"), http.parseRetryAfter(null)],
                absent: cfg.readPageConfig(doc("<p>no config</p>")),
                broken: cfg.readPageConfig(doc(tag + '{{oops</script>')),
                good: cfg.readPageConfig(doc(tag + JSON.stringify({{
                  iceServers: [{{urls: "turn:x", username: "u", credential: "c"}}, {{urls: 5}}],
                  https: true}}) + '</script>')),
              }};
            }}"""
        )
    finally:
        await page.context.close()
    assert got["parsed"] == [
        {"urls": "stun:stun.example.org:3478"},
        {
            "urls": "turn:turn.example.org:3478?transport=udp",
            "username": "1767225600:viewer",
            "credential": "a+b/c==",
        },
        {"urls": "turns:t.example.org:5349", "username": "u", "credential": 'with, comma "q"'},
        {"urls": "stun:odd.example.org"},
    ]
    assert got["none"] == []
    assert got["retryAfter"] == [3000, None]
    assert got["absent"]["iceServers"] == [] and got["broken"]["iceServers"] == []
    assert got["good"] == {
        "iceServers": [{"urls": "turn:x", "username": "u", "credential": "c"}],
        "https": True,
    }


async def test_session_runner_reconnects_with_the_last_answer_servers(
    browser: Browser, server: Any
) -> None:
    """The runner opens the first session with the page's servers and every later one with
    those of the last 201's Link headers; a final refusal (403) stops it without retries."""
    page = await new_page(browser, server.http + "/")
    try:
        got = await page.evaluate(
            f"""async () => {{
              const {{ SessionRunner, backoffDelay }} = await import("{MODULES}/session-runner.js");
              const {{ HttpError }} = await import("{MODULES}/http-util.js");
              const seen = [];
              const pcs = [];
              let n = 0;
              const linked = [{{urls: "turn:fresh", username: "2:x", credential: "c2"}}];
              const runner = new SessionRunner({{
                iceServers: [{{urls: "turn:config", username: "1:x", credential: "c1"}}],
                baseDelayMs: 10,
                createClient: (iceServers) => {{
                  seen.push(iceServers.map((s) => s.urls));
                  const client = {{
                    linkedIceServers: [],
                    stop: async () => {{}},
                    connect: async () => {{
                      n += 1;
                      if (n === 3) throw new HttpError("refused", {{status: 403}});
                      client.linkedIceServers = linked;
                      const pc = new EventTarget();
                      pc.connectionState = "connecting";
                      pcs.push(pc);
                      return pc;
                    }},
                  }};
                  return client;
                }},
              }});
              let failed = null;
              runner.options.onFailed = (err) => {{ failed = err.status; }};
              await runner.start();
              pcs[0].connectionState = "failed";
              pcs[0].dispatchEvent(new Event("connectionstatechange"));
              await new Promise((r) => setTimeout(r, 300));
              pcs[1].connectionState = "failed";
              pcs[1].dispatchEvent(new Event("connectionstatechange"));
              await new Promise((r) => setTimeout(r, 300));
              const afterFailure = [n, failed, runner.running];
              await new Promise((r) => setTimeout(r, 300));
              return {{
                seen, afterFailure, n,
                backoff: [backoffDelay(0), backoffDelay(3), backoffDelay(10),
                          backoffDelay(0, {{retryAfterMs: 5000}})],
              }};
            }}"""
        )
    finally:
        await page.context.close()
    # 1: the page's config; 2, 3 (after "failed"): the 201's Link servers; 3 is refused (403)
    assert got["seen"] == [["turn:config"], ["turn:fresh"], ["turn:fresh"]]
    assert got["afterFailure"] == [3, 403, False], got
    assert got["n"] == 3, "the runner retried after a 403"
    assert got["backoff"] == [500, 4000, 10000, 5000]


async def test_watch_page_takes_config_and_link_ice_servers(browser: Browser, server: Any) -> None:
    """The viewer page's first connection has the config tag's servers (TURN credentials of
    the coturn REST scheme); the next session will use the 201's Link servers."""
    page = await new_page(browser, server.http + "/watch/open")
    try:
        await page.wait_for_function(
            "() => window.relaycast && window.relaycast.pc", timeout=20_000
        )
        got = await page.evaluate(
            """() => ({
              tag: JSON.parse(document.getElementById("relaycast-config").textContent),
              first: relaycast.pc.getConfiguration().iceServers,
              next: relaycast.iceServers,
            })"""
        )
    finally:
        await page.context.close()
    print(f"\n[ice servers] {got}")
    turn = [s for s in got["tag"]["iceServers"] if "turn:" in str(s["urls"])]
    assert turn and ":" in turn[0]["username"] and turn[0]["credential"]
    first_urls = [
        u for s in got["first"] for u in (s["urls"] if isinstance(s["urls"], list) else [s["urls"]])
    ]
    assert "turn:127.0.0.1:3478?transport=udp" in first_urls
    assert "stun:127.0.0.1:3478" in first_urls
    linked = {s["urls"]: s for s in got["next"]}
    fresh = linked["turn:127.0.0.1:3478?transport=udp"]
    assert ":" in fresh["username"] and fresh["credential"], fresh
    assert "stun:127.0.0.1:3478" in linked


async def publish(browser: Browser, server: Any, stream: str) -> Page:
    page = await new_page(
        browser,
        f"{server.http}/publish/{stream}#key={KEYS[stream]}&source=test&preset=360p&codec=vp8"
        "&autostart=1",
    )
    handle = await page.wait_for_function(
        "() => window.relaycast && ['live', 'error'].includes(relaycast.state) && relaycast.state"
    )
    assert await handle.json_value() == "live", await page.evaluate("() => relaycast.error")
    return page


async def whep_posts(page: Page) -> int:
    return int(
        await page.evaluate(
            "() => performance.getEntriesByType('resource')"
            ".filter((e) => e.name.includes('/whep/')).length"
        )
    )


async def test_one_click_url_goes_live_and_drops_the_key(browser: Browser, server: Any) -> None:
    """/publish/NAME#key=…&autostart=1 goes live without a click; the key leaves the address
    bar at once and is remembered for the stream once it has worked."""
    page = await publish(browser, server, "oneclick")
    try:
        assert "#" not in page.url and KEYS["oneclick"] not in page.url, page.url
        remembered = await page.evaluate(
            "() => localStorage.getItem('relaycast.publishKey.oneclick')"
        )
        assert remembered == KEYS["oneclick"]
    finally:
        await page.context.close()


async def test_private_stream_watch_page_with_and_without_token(
    browser: Browser, server: Any
) -> None:
    """A token from `relaycast token priv` in ?token= plays; no token: 401 and a message
    saying the stream is private; a bad token: 403, "not valid", and no retry loop."""
    publisher = await publish(browser, server, "priv")
    pages: list[Page] = []
    try:
        token = viewer_token(server, "priv")
        viewer = await new_page(browser, f"{server.http}/watch/priv?token={token}")
        pages.append(viewer)
        await viewer.wait_for_function(
            "() => window.relaycast && relaycast.state === 'live' && relaycast.framesDecoded >= 5",
            timeout=30_000,
        )

        anonymous = await new_page(browser, f"{server.http}/watch/priv")
        pages.append(anonymous)
        await anonymous.wait_for_function(
            "() => window.relaycast && relaycast.state === 'error'", timeout=20_000
        )
        text = await anonymous.text_content("#status") or ""
        assert "private" in text and "token" in text, text

        bad = await new_page(browser, f"{server.http}/watch/priv?token={token[:-4]}AAAA")
        pages.append(bad)
        await bad.wait_for_function(
            "() => window.relaycast && relaycast.state === 'error'", timeout=20_000
        )
        text = await bad.text_content("#status") or ""
        assert "not valid" in text, text
        await asyncio.sleep(3.0)
        assert await bad.evaluate("() => relaycast.state") == "error"
        assert await whep_posts(bad) == 1, "the page retried a 403"
        assert await whep_posts(anonymous) == 1, "the page retried a 401"
    finally:
        for page in pages:
            await page.context.close()
        await publisher.context.close()
