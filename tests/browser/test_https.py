"""Chromium over HTTPS: the one-click publish URL from the banner goes live, and a viewer with
a token watches a private stream, every page and request on https:// with a certificate from a
test CA.

Chromium does not know the test CA: it is told to accept exactly the served certificate's key
(``--ignore-certificate-errors-spki-list``), so a page only loads when the server presents that
certificate.  Camera access needs a secure context, which the pages only get over HTTPS here
(the server is reached as https://localhost).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.polling import wait_until
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration.tls_support import Leaf, TestCA, start_https

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TOKEN_SECRET = "browser-https-test-token-secret-0123456789"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def leaf(ca: TestCA) -> Leaf:
    return ca.issue(dns=("localhost",), ips=("127.0.0.1",))


@pytest.fixture(scope="module")
def tls_server(
    module_server_factory: ServerFactory,
    ca: TestCA,
    leaf: Leaf,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RelaycastServer]:
    """HTTPS, a generated publish key (so the banner prints the one-click URL), 'live' private."""
    folder: Path = tmp_path_factory.mktemp("tls")
    leaf.write(folder / "cert.pem", folder / "key.pem")
    trust = ca.client_context()
    yield start_https(
        module_server_factory,
        "--tls-cert", str(folder / "cert.pem"), "--tls-key", str(folder / "key.pem"),
        "--private-stream", "live", "--token-secret", TOKEN_SECRET,
        context=trust, keys={},
    )  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_browser(leaf: Leaf) -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    args = [*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={leaf.spki_sha256_b64()}"]
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser: Browser) -> Page:
    context = await browser.new_context()  # certificate errors are NOT ignored by Playwright
    page = await context.new_page()
    page.set_default_timeout(30_000)
    return page


def localhost(url: str) -> str:
    return url.replace("https://127.0.0.1:", "https://localhost:")


async def test_one_click_publish_and_private_viewer_over_https(
    tls_browser: Browser, tls_server: RelaycastServer
) -> None:
    match = re.search(r"^go live in one click: (\S+)$", tls_server.stdout(), re.M)
    assert match is not None, tls_server.stdout()
    one_click = match.group(1)
    assert one_click.startswith("https://127.0.0.1:") and "/publish/live#key=" in one_click
    key = one_click.split("#key=", 1)[1]

    publisher = await new_page(tls_browser)
    viewer = await new_page(tls_browser)
    try:
        # the one-click URL, as printed, with the test pattern chosen in the query
        path, fragment = localhost(one_click).split("#", 1)
        await publisher.goto(f"{path}?source=test&preset=360p#{fragment}")
        assert await publisher.evaluate("() => window.isSecureContext") is True
        assert await publisher.evaluate("() => location.protocol") == "https:"
        assert key not in publisher.url  # the page took the key out of the address bar
        await publisher.click("#go")  # the one click
        handle = await publisher.wait_for_function(
            "() => window.relaycast && ['live', 'error'].includes(window.relaycast.state)"
            " && window.relaycast.state"
        )
        error = await publisher.evaluate("() => window.relaycast.error")
        assert await handle.json_value() == "live", error

        token = jwt.encode(
            {"sub": "live", "exp": int(time.time()) + 600}, TOKEN_SECRET, algorithm="HS256"
        )
        watch = localhost(f"{tls_server.http}/watch/live?token={token}")
        await viewer.goto(watch)
        await wait_until(
            viewer,
            """async () => {
              const pc = window.relaycast && window.relaycast.pc;
              if (!pc) return false;
              let frames = 0;
              (await pc.getStats()).forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded || 0;
              });
              return frames > 15;
            }""",
            timeout=30,
        )
        resources: list[Any] = await viewer.evaluate(
            "() => performance.getEntriesByType('resource').map((e) => e.name)"
        )
        assert resources and all(r.startswith("https://localhost:") for r in resources), resources
    finally:
        await publisher.context.close()
        await viewer.context.close()


async def test_watch_page_without_a_token_is_refused(
    tls_browser: Browser, tls_server: RelaycastServer
) -> None:
    viewer = await new_page(tls_browser)
    try:
        responses: list[int] = []
        viewer.on("response", lambda r: responses.append(r.status) if "/whep/" in r.url else None)
        await viewer.goto(localhost(f"{tls_server.http}/watch/live"))
        await viewer.wait_for_function("() => document.body.innerText.includes('private')")
        assert 401 in responses
    finally:
        await viewer.context.close()
