"""Headless Chromium for the browser tests: one browser per module, one context per page.

Tests that use ``browser`` must run in the module's event loop:
``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright
from tests.chromium import CHROMIUM, LOOPBACK_ARGS

CHROMIUM_ARGS = LOOPBACK_ARGS


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for every test of the module (fake camera and microphone)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


_wait_for_function = Page.wait_for_function


async def _no_async_predicates(
    self: Page, expression: str, *args: object, **kwargs: object
) -> object:
    """Page.wait_for_function, refusing async predicates: Playwright does not await their
    promise, so such a wait ends at once and can never fail (use polling.wait_until)."""
    if expression.lstrip().startswith("async"):
        raise AssertionError("wait_for_function does not await an async predicate: use wait_until")
    return await _wait_for_function(self, expression, *args, **kwargs)  # type: ignore[arg-type]


Page.wait_for_function = _no_async_predicates  # type: ignore[method-assign]
