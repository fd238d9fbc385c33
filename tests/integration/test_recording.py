"""Recording without transcoding, against a real server over real UDP: FFmpeg's WHIP muxer
publishes H.264 + Opus (fragmented MP4), the synthetic publisher reconnects (the WebM file
continues), and the files are decoded to the last frame by PyAV. The Chromium VP8 recording is
in tests/browser/test_recording_chromium.py."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from tests.integration.test_ffmpeg import finish, start_publisher, write_p256_certificate

from relaycast.loadgen.media_clip import load_clip
from relaycast.loadgen.publisher import SyntheticPublisher

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def decode_recording(path: Path) -> dict[str, Any]:
    """Decode every frame; per kind: frames, first and last presentation time (s), sizes."""
    out: dict[str, Any] = {"video": 0, "audio": 0, "sizes": set(), "errors": 0}
    span: dict[str, list[float]] = {}
    with av.open(str(path)) as container:
        out["kinds"] = sorted(s.type for s in container.streams)
        out["codecs"] = sorted(s.codec_context.name for s in container.streams)
        for packet in container.demux():
            kind = packet.stream.type
            if packet.pts is not None and packet.time_base is not None:
                t = float(packet.pts * packet.time_base)
                dur = float((packet.duration or 0) * packet.time_base)
                first, last = span.setdefault(kind, [t, t + dur])
                span[kind] = [min(first, t), max(last, t + dur)]
            try:
                frames = packet.decode()
            except av.FFmpegError:
                out["errors"] += 1
                continue
            for frame in frames:
                out[kind] += 1
                if isinstance(frame, av.VideoFrame):
                    out["sizes"].add((frame.width, frame.height))
    out["span"] = span
    starts = [s[0] for s in span.values()]
    ends = [s[1] for s in span.values()]
    out["duration"] = max(ends) - min(starts) if span else 0.0
    # audio/video sync: the two streams begin and end together (the publishers stop both)
    if len(span) == 2:
        out["skew"] = max(abs(starts[0] - starts[1]), abs(ends[0] - ends[1]))
    return out


def get_recordings(base: str, key: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{base}/api/recordings", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def recorded_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in (".webm", ".mp4"))


async def test_ffmpeg_h264_publish_is_recorded_to_fragmented_mp4(
    server_factory: Any, tmp_path: Path
) -> None:
    record = tmp_path / "rec"
    server = server_factory.start("--record-dir", str(record))
    seconds = 9.0
    publisher = await start_publisher(server.http, seconds, write_p256_certificate(tmp_path))
    code, output = await finish(publisher, timeout=40)
    assert code == 0, output[-2000:]
    # listed while the server still runs (the file is fragmented MP4: playable already)
    status, listing = get_recordings(server.http, "test-key")
    assert status == 200, listing
    assert [r["stream"] for r in listing] == ["live"], listing
    entry = listing[0]
    assert entry["path"].startswith("live/") and entry["path"].endswith("Z.mp4"), entry
    assert entry["codecs"] == {"video": "h264", "audio": "opus"}
    assert entry["size"] > 100_000
    assert get_recordings(server.http, None)[0] == 401
    assert get_recordings(server.http, "wrong")[0] == 403
    # a key of another stream sees none of live's files
    assert get_recordings(server.http, "other-key") == (200, [])
    assert server.stop() in (0, -15)  # finishes the file and its sidecar
    files = recorded_files(record)
    assert len(files) == 1 and files[0].suffix == ".mp4", files
    result = decode_recording(files[0])
    assert result["kinds"] == ["audio", "video"]
    assert result["codecs"] == ["h264", "opus"]
    assert result["errors"] == 0
    assert result["sizes"] == {(640, 360)}
    assert result["video"] >= 0.9 * seconds * 30, result
    assert result["audio"] >= 0.9 * seconds * 50, result
    assert abs(result["duration"] - seconds) <= 0.1 * seconds, result
    assert result["skew"] < 0.25, result
    meta = json.loads(files[0].with_name(files[0].name + ".json").read_text())
    assert meta["complete"] is True and abs(meta["duration"] - seconds) <= 0.1 * seconds, meta


async def run_publisher(base: str, clip: Any, seconds: float) -> tuple[float, float]:
    """One synthetic WHIP publisher for *seconds*; returns its (start, end) wall-clock times."""
    async with aiohttp.ClientSession() as http:
        publisher = SyntheticPublisher(clip, base, "live", "test-key")
        await publisher.connect(http)
        task = asyncio.create_task(publisher.run())
        started = time.time()
        await asyncio.sleep(seconds)
        publisher.stop()
        await task
        ended = time.time()
        await publisher.close(http)
    return started, ended


async def test_recording_continues_across_a_publisher_reconnect(
    server_factory: Any, tmp_path: Path
) -> None:
    clip = load_clip("vp8", 400_000, width=320, height=240, keyframe_interval=1.0, duration=2.0)
    config = tmp_path / "relaycast.toml"
    config.write_text("[streams.other]\nrecord = false\n")
    record = tmp_path / "rec"
    server = server_factory.start("--record-dir", str(record), "--config", str(config))
    first = await run_publisher(server.http, clip, 3.0)
    await asyncio.sleep(1.0)  # the streamer's network drops; it comes back within the grace
    second = await run_publisher(server.http, clip, 3.0)
    # a stream with record = false leaves nothing
    async with aiohttp.ClientSession() as http:
        other = SyntheticPublisher(clip, server.http, "other", "other-key")
        await other.connect(http)
        task = asyncio.create_task(other.run())
        await asyncio.sleep(1.0)
        other.stop()
        await task
        await other.close(http)
    assert server.stop() in (0, -15)
    files = recorded_files(record)
    assert len(files) == 1 and files[0].parent.name == "live", files
    result = decode_recording(files[0])
    assert result["kinds"] == ["audio", "video"] and result["codecs"] == ["opus", "vp8"]
    assert result["errors"] == 0 and result["sizes"] == {(320, 240)}
    # both publishers' media, the pause in between kept as time
    wall = second[1] - first[0]
    assert abs(result["duration"] - wall) <= 0.1 * wall, (result, wall)
    assert result["skew"] < 0.25, result
    assert result["video"] >= 0.85 * 6.0 * 30, result
    assert result["audio"] >= 0.85 * 6.0 * 50, result
    video_span = result["span"]["video"]
    assert video_span[1] - video_span[0] > 6.0
