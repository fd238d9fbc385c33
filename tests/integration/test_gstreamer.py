"""GStreamer's WebRTC stack (webrtcbin: libnice ICE, its DTLS/SRTP and RTP) against relaycast.

* GStreamer publishes over WHIP (videotestsrc + audiotestsrc, VP8 or H.264 + Opus); aiortc
  viewers decode it and the stream's stats show GStreamer's codecs.
* GStreamer watches over WHEP (VP8, H.264 and Opus offered receive-only, decodebin) what an
  aiortc publisher sends in VP8 or H.264.

Debian 12's GStreamer 1.22 has no ``whipsink``/``whepsrc`` (gst-plugins-rs), so
``gst_whip.py`` drives webrtcbin from the system Python (PyGObject) and does the WHIP/WHEP HTTP
exchange itself; it runs as a subprocess because the test venv cannot import ``gi``. Like
peers.py does for aiortc, it pins ICE to 127.0.0.1, the only address the test server listens on.

Outside CI the tests skip when GStreamer is missing; with ``CI`` or ``RELAYCAST_CI`` set they
fail instead (scripts/test.sh installs the packages).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration import peers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The system interpreter with PyGObject (Debian's python3-gi), not the test venv's.
GST_PYTHON = "/usr/bin/python3"
GST_WHIP = Path(__file__).with_name("gst_whip.py")
#: What gst_whip.py uses: any one missing and it cannot publish or view.
ELEMENTS = [
    "webrtcbin",
    "nicesrc",
    "nicesink",
    "dtlssrtpenc",
    "dtlssrtpdec",
    "srtpenc",
    "srtpdec",
    "videotestsrc",
    "audiotestsrc",
    "videoconvert",
    "audioconvert",
    "audioresample",
    "decodebin",
    "fakesink",
    "vp8enc",
    "vp8dec",
    "x264enc",
    "opusenc",
    "opusdec",
    "rtpvp8pay",
    "rtpvp8depay",
    "rtph264pay",
    "rtph264depay",
    "rtpopuspay",
    "rtpopusdepay",
    "h264parse",
]
H264_DECODERS = ("avdec_h264", "openh264dec")

PROBE = r"""
import sys
import gi
for name, version in (("Gst", "1.0"), ("GstSdp", "1.0"), ("GstWebRTC", "1.0"), ("Nice", "0.1")):
    gi.require_version(name, version)
from gi.repository import Gst, GstSdp, GstWebRTC, Nice
Gst.init(None)
elements, decoders = sys.argv[1].split(), sys.argv[2].split()
missing = [e for e in elements if Gst.ElementFactory.find(e) is None]
if not any(Gst.ElementFactory.find(d) for d in decoders):
    missing.append(" or ".join(decoders))
print(Gst.version_string())
print(" ".join(missing))
"""


@cache
def gstreamer() -> tuple[str | None, str]:
    """(why GStreamer cannot be used here or None, its version string)."""
    try:
        done = subprocess.run(
            [GST_PYTHON, "-c", PROBE, " ".join(ELEMENTS), " ".join(H264_DECODERS)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{GST_PYTHON}: {exc}", ""
    if done.returncode != 0:
        return f"{GST_PYTHON} cannot load GStreamer through PyGObject: {done.stderr[-800:]}", ""
    version, _, missing = done.stdout.partition("\n")
    if missing.strip():
        return f"GStreamer elements missing: {missing.strip()}", version
    return None, version


@pytest.fixture(scope="module")
def gst_version() -> str:
    problem, version = gstreamer()
    if problem is not None:
        if os.environ.get("CI") or os.environ.get("RELAYCAST_CI"):
            pytest.fail(f"{problem} (scripts/test.sh installs GStreamer with apt)")
        pytest.skip(f"{problem} (scripts/test.sh installs GStreamer with apt)")
    return version


async def run_gst(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        GST_PYTHON,
        str(GST_WHIP),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(
    proc: asyncio.subprocess.Process, timeout: float
) -> tuple[int, dict[str, Any], str]:
    """Wait for a gst_whip.py run: (exit code, its final JSON line or {}, its stderr)."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    assert proc.returncode is not None
    lines = out.decode(errors="replace").strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return proc.returncode, result, err.decode(errors="replace")


async def stream_info(base: str, name: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/streams/{name}") as r:
        assert r.status == 200, await r.text()
        info: dict[str, Any] = await r.json()
        return info


async def wait_live(base: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/api/streams/{name}") as r:
            if r.status == 200:
                info = await r.json()
                if info["live"] and info["video_codec"] and info["audio_codec"]:
                    return info
        await asyncio.sleep(0.2)
    return info


def server_log(server: RelaycastServer) -> str:
    return "--- relaycast ---\n" + server.stderr()[-3000:]


@pytest.mark.parametrize(("video", "codec"), [("vp8", "VP8"), ("h264", "H264")])
async def test_gstreamer_whip_publisher_to_aiortc_viewers(
    server_factory: ServerFactory, gst_version: str, video: str, codec: str
) -> None:
    server = server_factory.start("--log-level", "debug")
    base = server.http
    early = await peers.view(base, "live")  # waiting before the streamer goes live
    publisher = await run_gst(
        "publish", f"{base}/whip/live", "--key", "test-key", "--video", video, "--seconds", "10"
    )
    late: peers.Viewer | None = None
    try:
        got = await early.wait_frames("video", 15, timeout=20)
        assert got >= 15, f"{gst_version}: {got} frames\n{server_log(server)}"
        late = await peers.view(base, "live")  # joins mid-stream
        for viewer in (early, late):
            got = await viewer.wait_frames("video", 60, timeout=20)
            assert got >= 60, f"{gst_version}: {got} frames\n{server_log(server)}"
            assert await viewer.wait_frames("audio", 50, timeout=10) >= 50
            assert viewer.sizes and all(size == (320, 240) for size in viewer.sizes)
        info = await stream_info(base, "live")
        assert info["live"] is True
        assert info["viewers"] == 2
        assert info["video_codec"] == codec
        assert info["audio_codec"].lower() == "opus"
        assert (info["width"], info["height"]) == (320, 240)

        code, result, log = await finish(publisher, timeout=30)
        assert code == 0 and result["connected"], f"{result}\n{log[-3000:]}"
        assert "dtls connected" in server.stderr()
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.communicate()
        for opened in (early, late):
            if opened is not None:
                await opened.close(base)


@pytest.mark.parametrize(("mime", "codec"), [("video/VP8", "VP8"), ("video/H264", "H264")])
async def test_aiortc_publisher_to_gstreamer_whep_viewer(
    server_factory: ServerFactory, gst_version: str, mime: str, codec: str
) -> None:
    server = server_factory.start("--log-level", "debug")
    base = server.http
    publisher = await peers.publish(base, "live", "test-key", video_codec=mime)
    try:
        info = await wait_live(base, "live", timeout=20)
        assert info.get("video_codec") == codec, f"{info}\n{server_log(server)}"
        viewer = await run_gst(
            "view",
            f"{base}/whep/live",
            "--video-frames",
            "60",
            "--audio-frames",
            "50",
            "--timeout",
            "30",
        )
        code, result, log = await finish(viewer, timeout=60)
        report = f"{gst_version}: {result}\n{log[-3000:]}\n{server_log(server)}"
        assert code == 0 and result["connected"], report
        assert result["frames"]["video"] >= 60, report
        assert result["frames"]["audio"] >= 50, report
        assert result["sizes"] and all(tuple(s) == (320, 240) for s in result["sizes"]), report
        assert sorted(result["codecs"]) == sorted([codec, "OPUS"]), report
    finally:
        await publisher.pc.close()
