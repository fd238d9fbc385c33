"""aiortc publishes through relaycast; aiortc viewers receive and decode frames."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tests.integration import peers

pytestmark = pytest.mark.integration


async def test_aiortc_publisher_to_two_aiortc_viewers(relaycast_server) -> None:
    base = relaycast_server.http
    publisher = await peers.publish(base, "live", "test-key")
    viewers = [await peers.view(base, "live") for _ in range(2)]
    try:
        for viewer in viewers:
            assert await viewer.wait_frames("video", 30, timeout=30) >= 30
            assert await viewer.wait_frames("audio", 50, timeout=10) >= 50
            assert viewer.sizes[0] == (320, 240)
        async with aiohttp.ClientSession() as http:
            info = await (await http.get(f"{base}/api/streams/live")).json()
        assert info["live"] is True
        assert info["viewers"] == 2
        assert info["video_codec"] == "VP8"
    finally:
        for viewer in viewers:
            await viewer.close(base)
        await publisher.pc.close()


async def test_viewer_before_publisher_starts_playing(relaycast_server) -> None:
    base = relaycast_server.http
    viewer = await peers.view(base, "live")
    await asyncio.sleep(1.0)
    assert viewer.frames["video"] == 0
    publisher = await peers.publish(base, "live", "test-key")
    try:
        assert await viewer.wait_frames("video", 20, timeout=30) >= 20
    finally:
        await viewer.close(base)
        await publisher.pc.close()


async def test_publisher_reconnect_keeps_viewer_playing(relaycast_server) -> None:
    base = relaycast_server.http
    first = await peers.publish(base, "live", "test-key")
    viewer = await peers.view(base, "live")
    try:
        assert await viewer.wait_frames("video", 20, timeout=30) >= 20
        async with aiohttp.ClientSession() as http:
            await http.delete(
                f"{base}{first.location}", headers={"Authorization": "Bearer test-key"}
            )
        await first.pc.close()
        before = viewer.frames["video"]
        second = await peers.publish(base, "live", "test-key")
        try:
            assert await viewer.wait_frames("video", before + 30, timeout=30) >= before + 30
        finally:
            await second.pc.close()
    finally:
        await viewer.close(base)
