"""Recording a Chromium VP8 + Opus publish (the streamer page, fake camera and microphone) to
WebM, decoded to the last frame by PyAV."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser
from tests.browser.test_chromium import open_pages
from tests.integration.test_recording import decode_recording, get_recordings, recorded_files

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

SECONDS = 8.0


async def test_chromium_vp8_publish_is_recorded_to_webm(
    browser: Browser, server_factory: Any, tmp_path: Path
) -> None:
    record = tmp_path / "rec"
    server = server_factory.start("--record-dir", str(record))
    async with open_pages(browser, server.http) as pages:
        publisher = await pages.publisher(source="camera", preset="360p", codec="vp8")
        live = time.monotonic()
        await asyncio.sleep(SECONDS)
        await publisher.evaluate("() => window.relaycast.stop()")
        published = time.monotonic() - live
    status, listing = get_recordings(server.http, "test-key")
    assert status == 200 and [r["stream"] for r in listing] == ["live"], listing
    assert listing[0]["path"].endswith(".webm")
    assert listing[0]["codecs"] == {"video": "vp8", "audio": "opus"}
    assert server.stop() in (0, -15)
    files = recorded_files(record)
    assert len(files) == 1 and files[0].suffix == ".webm", files
    result = decode_recording(files[0])
    assert result["kinds"] == ["audio", "video"] and result["codecs"] == ["opus", "vp8"]
    assert result["errors"] == 0, result
    assert result["sizes"] and all(w > 0 and h > 0 for w, h in result["sizes"]), result
    assert result["video"] >= 10 * published, result  # Chromium's fake camera: 30 fps or less
    assert result["audio"] >= 0.9 * published * 50, result
    assert abs(result["duration"] - published) <= 0.1 * published, (result, published)
    assert result["skew"] < 0.25, result
