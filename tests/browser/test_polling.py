"""The waits the browser tests rely on can fail: an async predicate is refused by
``wait_for_function`` (Playwright would not await it), and ``wait_until`` awaits it."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser
from tests.browser.polling import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_async_predicates_are_awaited_or_refused(browser: Browser) -> None:
    page = await browser.new_page()
    try:
        with pytest.raises(AssertionError, match="wait_until"):
            await page.wait_for_function("async () => false", timeout=1000)
        with pytest.raises(TimeoutError, match="last value False"):
            await wait_until(page, "async () => false", timeout=0.5, interval=0.1)
        await page.evaluate("() => { window.n = 0; }")
        value = await wait_until(page, "async () => ++window.n >= 3 && window.n", timeout=5)
        assert value == 3
    finally:
        await page.close()
