"""Clients whose UDP to the server is dropped publish and watch over ICE-TCP (RFC 6544).

aioice (aiortc) pairs only candidates of the same transport and gathers no TCP candidates,
so the clients without UDP are Chromium, started inside the client namespace
(``tests/integration/netns.py``), whose UDP to and from the server nftables drops. The
streamer page there publishes over TCP; an aiortc viewer in another namespace (UDP allowed)
decodes what arrived that way, and a watch page in the client namespace plays it over TCP.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright
from tests.chromium import ARGS, CHROMIUM
from tests.integration.netns import ROOT, lab_or_skip, python_env

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]


# The page's peer connection: frames decoded (viewer) or sent (streamer), and the selected
# candidate pair's transports.
PATH_JS = """async () => {
  const pc = window.relaycast && window.relaycast.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  const out = {connection: pc.connectionState, frames: 0, pair: null};
  report.forEach((s) => {
    if ((s.type === "inbound-rtp" || s.type === "outbound-rtp") && s.kind === "video") {
      out.frames += (s.type === "inbound-rtp" ? s.framesDecoded : s.framesSent) || 0;
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      const local = pair && report.get(pair.localCandidateId);
      const remote = pair && report.get(pair.remoteCandidateId);
      if (local && remote) {
        out.pair = {local: local.protocol, remote: remote.protocol, tcpType: remote.tcpType,
                    address: remote.address || remote.ip, port: remote.port};
      }
    }
  });
  return out;
}"""


async def wait_path(
    page: Page, what: str, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        last = await page.evaluate(PATH_JS)
        if last is not None and done(last):
            return last
        if time.monotonic() > deadline:
            state = await page.evaluate("() => JSON.stringify(window.relaycast ?? null)")
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last {last}; {state}")
        await asyncio.sleep(0.25)


async def page_ready(page: Page, timeout: float = 15.0) -> bool:
    """The page's modules ran (``window.relaycast`` exists) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await page.evaluate("() => Boolean(window.relaycast)"):
            return True
        await asyncio.sleep(0.25)
    return False


def over_tcp(sample: dict[str, Any], server_ip: str) -> bool:
    pair = sample["pair"]
    return bool(
        pair
        and pair["local"] == "tcp"
        and pair["remote"] == "tcp"
        and pair["tcpType"] == "passive"
        and (pair["address"], pair["port"]) == (server_ip, 8443)
    )


async def test_udp_blocked_clients_publish_and_watch_over_ice_tcp(tmp_path: Path) -> None:
    with lab_or_skip(tmp_path) as lab:
        server, other, client = (lab.add(n) for n in ("srv", "other", "client"))
        lab.block_udp(client, server)
        base = server.relaycast("--stream-key", "live=test-key", "--log-level", "debug")

        def logs() -> str:
            return "\n".join(
                f"--- {p.name} ---\n{p.read_text(errors='replace')[-6000:]}"
                for p in sorted(tmp_path.glob("*.log")) + sorted(tmp_path.glob("*.out"))
            )

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(client.wrapper(str(CHROMIUM))),
                headless=True,
                # getUserMedia needs a secure context; the lab's server speaks plain HTTP
                args=[*ARGS, f"--unsafely-treat-insecure-origin-as-secure={base}"],
            )
            try:
                streamer = await (await browser.new_context()).new_page()
                await streamer.goto(
                    f"{base}/publish/live?key=test-key&source=camera&preset=360p&codec=vp8"
                    "&autostart=1"
                )
                if not await page_ready(streamer):
                    # once in a CI run the page's modules never ran (window.relaycast stayed
                    # null for 30 s, nothing in the server log); a viewer would reload
                    print("the streamer page did not start: reloading it once")
                    await streamer.reload()
                sent = await wait_path(
                    streamer, "the streamer sends over TCP", lambda s: over_tcp(s, server.ip)
                    and s["frames"] > 30,
                )  # fmt: skip
                assert sent["connection"] == "connected"

                # an independent decoder (aiortc, UDP) plays what came in over TCP
                out = tmp_path / "aiortc-viewer.out"
                command = [sys.executable, "-m", "tests.integration.netns_peer", "view"]
                command += ["--base", base, "--ip", other.ip, "--frames", "30"]
                aiortc_viewer = other.spawn(command, log=out, env=python_env(), cwd=ROOT)

                viewer = await (await browser.new_context()).new_page()
                await viewer.goto(f"{base}/watch/live")
                watched = await wait_path(
                    viewer, "the viewer decodes over TCP",
                    lambda s: over_tcp(s, server.ip) and s["frames"] >= 30,
                )  # fmt: skip
                assert watched["connection"] == "connected"
                metrics = await viewer.evaluate(
                    f"() => fetch('{base}/metrics').then(r => r.text())"
                )
                # the aiortc viewer finishes while the streamer is still live
                deadline = time.monotonic() + 60
                while aiortc_viewer.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                if aiortc_viewer.poll() is None:
                    pytest.fail(f"the aiortc viewer did not finish:\n{logs()}")
            finally:
                await browser.close()

        results = [line for line in out.read_text().splitlines() if line.startswith("{")]
        assert aiortc_viewer.returncode == 0 and results, logs()
        frames = json.loads(results[-1])["frames"]
        assert frames["video"] >= 30, logs()

        # Chromium tried UDP too: the block was in force, and TCP is what carried the media
        assert lab.udp_dropped(client) > 0, logs()
        accepted = re.search(r"^relaycast_tcp_connections_total (\S+)$", metrics, re.M)
        assert accepted and float(accepted.group(1)) >= 2, metrics
        dropped = re.search(r"^relaycast_tcp_dropped_total (\S+)$", metrics, re.M)
        assert dropped and float(dropped.group(1)) == 0, metrics
