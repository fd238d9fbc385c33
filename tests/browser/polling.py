"""Waiting on an asynchronous page condition (``getStats()`` and the like).

Playwright's ``wait_for_function`` does not await a predicate's promise: an ``async`` predicate
returns a Promise, which is truthy, so the wait ends at once whatever the condition. Such a
wait cannot fail; :func:`wait_until` polls ``page.evaluate`` (which does await) instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Page


async def wait_until(page: Page, expression: str, *, timeout: float, interval: float = 0.25) -> Any:
    """Evaluate ``expression`` (a function, possibly async) every ``interval`` seconds until it
    returns something truthy, and return that; TimeoutError after ``timeout`` seconds with the
    last value in the message."""
    deadline = time.monotonic() + timeout
    value: Any = None
    while True:
        value = await page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout} s (last value {value!r}): {expression}")
        await asyncio.sleep(interval)
