"""Debian's Chromium as the tests launch it (Playwright, headless, fake camera and microphone)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

#: for a browser in a network namespace of its own (tests/integration/netns.py)
ARGS = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # pages in background contexts must keep running their timers and decoders at full rate
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]

#: for a browser talking to a server on the same host (loopback candidates allowed)
LOOPBACK_ARGS = [*ARGS, "--allow-loopback-in-peer-connection"]
