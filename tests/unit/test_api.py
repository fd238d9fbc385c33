"""The pages' API: speed test, server clock, server totals, per-stream history and the
video size read from the cached key frame (create_app with the media plane started)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from fractions import Fraction

import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relaycast.app import create_app
from relaycast.config import Config
from relaycast.http import api
from relaycast.http.metrics import RelaycastCollector
from relaycast.http.signalling import SERVER_KEY
from relaycast.media.stats import HistogramSnapshot, ServerSnapshot, StreamSnapshot
from relaycast.media.stream import Stream
from relaycast.rtp.packet import RtpPacket

Client = TestClient[web.Request, web.Application]
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    config = Config(host="127.0.0.1", port=0, udp_port=0, host_candidates=False)
    test_client: Client = TestClient(TestServer(create_app(config)))
    await test_client.start_server()
    yield test_client
    await test_client.close()


async def test_speedtest_measures_the_upload(client: Client) -> None:
    body = b"x" * (3 * 1024 * 1024)
    resp = await client.post("/api/speedtest", data=body, headers=OCTETS)
    assert resp.status == 200
    got = await resp.json()
    assert got["bytes"] == len(body)
    assert got["seconds"] > 0
    assert got["mbps"] == pytest.approx(len(body) * 8 / got["seconds"] / 1e6, rel=0.01)


async def test_speedtest_refuses_more_than_8_mib_and_nothing(client: Client) -> None:
    assert api.SPEEDTEST_MAX_BYTES == 8 * 1024 * 1024  # what the page's test sends at most
    resp = await client.post(
        "/api/speedtest", data=b"\0" * (api.SPEEDTEST_MAX_BYTES + 70_000), headers=OCTETS
    )
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    resp = await client.post("/api/speedtest", data=b"\0" * api.SPEEDTEST_MAX_BYTES, headers=OCTETS)
    assert resp.status == 200
    resp = await client.post("/api/speedtest", data=b"", headers=OCTETS)
    assert resp.status == 400
    assert "POST a few megabytes" in (await resp.json())["detail"]


async def test_time_is_the_server_clock(client: Client) -> None:
    before = time.time() * 1000
    resp = await client.get("/api/time")
    after = time.time() * 1000
    assert before <= (await resp.json())["now_ms"] <= after
    assert resp.headers["Cache-Control"] == "no-store"


async def test_server_totals_after_a_tick(client: Client) -> None:
    stats = client.app[api.STATS_KEY]
    stats.tick(time.monotonic())
    got = await (await client.get("/api/server")).json()
    assert got["memory_rss_bytes"] > 1_000_000
    assert got["cpu_percent"] >= 0
    assert got["cpu_count"] >= 1
    assert got["streams"] == 0 and got["viewers"] == 0
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    assert families["process_resident_memory_bytes"].samples[0].value > 1_000_000
    assert families["relaycast_streams"].samples[0].value == 0


def _vp8_keyframe(width: int, height: int) -> bytes:
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    frame.pts = 0
    packets = [bytes(p) for p in ctx.encode(frame)] + [bytes(p) for p in ctx.encode(None)]
    return packets[0]


class _FakeTrack:
    codec_name = "vp8"


class _FakePublisher:
    connected_at = 1.0

    def __init__(self) -> None:
        self.tracks = {1: _FakeTrack()}

    def codecs(self) -> dict[str, object]:
        return {}


async def test_history_and_resolution_from_the_cached_keyframe(client: Client) -> None:
    server = client.app[SERVER_KEY]
    stats = client.app[api.STATS_KEY]
    stream = Stream("cam")
    stream.publisher = _FakePublisher()  # type: ignore[assignment]
    forwarder = stream.forwarders["video"]
    forwarder.source = stream.publisher.tracks[1]  # type: ignore[union-attr,assignment]
    payload = b"\x10" + _vp8_keyframe(320, 240)
    forwarder.gop = [RtpPacket(payload_type=96, sequence_number=1, payload=payload)]
    server.streams["cam"] = stream
    now = time.monotonic()
    for i in range(3):
        stats.tick(now + i)

    info = await (await client.get("/api/streams/cam")).json()
    assert info["resolution"] == "320x240"
    assert (info["width"], info["height"]) == (320, 240)
    history = await (await client.get("/api/streams/cam/history")).json()
    assert history["fields"] == ["t", "ingress_bps", "egress_bps", "viewers"]
    assert len(history["samples"]) == 3
    assert (await client.get("/api/streams/nobody/history")).status == 404

    async with client.get("/api/events") as resp:
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"event: history\n")
        data = json.loads(first.split(b"data: ", 1)[1])
        assert len(data["cam"]) == 3
        kinds = set()
        for _ in range(3):
            kinds.add((await resp.content.readuntil(b"\n\n")).split(b"\n", 1)[0])
        assert kinds == {b"event: streams", b"event: server", b"event: samples"}
    del server.streams["cam"]


# -- caps -----------------------------------------------------------------------------------------


async def test_speedtest_wants_octet_stream(client: Client) -> None:
    """A text/plain (or form) POST is a CORS simple request any page could make its visitors
    send: refused with 415 before the body is read, and counted."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        resp = await client.post(
            "/api/speedtest",
            data=b"x" * 1024,
            headers=headers,
            skip_auto_headers=() if content_type else ("Content-Type",),
        )
        assert resp.status == 415, content_type
        assert resp.content_type == "application/problem+json"
        assert "application/octet-stream" in (await resp.json())["detail"]
    assert client.app[api.CAPS_KEY].speedtest.refused == {"content_type": 3}


async def _trickle(release: asyncio.Event) -> AsyncIterator[bytes]:
    yield b"x" * 1024
    await release.wait()
    yield b"y" * 1024


async def test_speedtest_one_at_a_time_per_client_and_two_in_all(client: Client) -> None:
    cap = client.app[api.CAPS_KEY].speedtest
    release = asyncio.Event()
    slow = asyncio.create_task(
        client.post("/api/speedtest", data=_trickle(release), headers=OCTETS)
    )
    while cap.open == 0:  # the handler holds its slot once the headers are in
        await asyncio.sleep(0.01)
    resp = await client.post("/api/speedtest", data=b"x" * 1024, headers=OCTETS)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.content_type == "application/problem+json"
    assert cap.refused == {"per_client": 1}

    cap.per_client = 5  # now the total cap: 2 at a time
    second = asyncio.create_task(
        client.post("/api/speedtest", data=_trickle(release), headers=OCTETS)
    )
    while cap.open < 2:
        await asyncio.sleep(0.01)
    resp = await client.post("/api/speedtest", data=b"x" * 1024, headers=OCTETS)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert cap.refused == {"per_client": 1, "server_busy": 1}

    release.set()
    for task in (slow, second):
        done = await task
        assert done.status == 200
        assert (await done.json())["bytes"] == 2048
    assert cap.open == 0 and cap.by_client == {}
    resp = await client.post("/api/speedtest", data=b"x" * 1024, headers=OCTETS)
    assert resp.status == 200

    text = await (await client.get("/metrics")).text()
    refused = {
        (s.labels["endpoint"], s.labels["reason"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "relaycast_api_refused"
        for s in f.samples
    }
    assert refused == {("speedtest", "per_client"): 1, ("speedtest", "server_busy"): 1}


async def test_speedtest_upload_has_a_deadline(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "SPEEDTEST_TIMEOUT", 0.3)
    release = asyncio.Event()
    resp = await client.post("/api/speedtest", data=_trickle(release), headers=OCTETS)
    assert resp.status == 408
    release.set()
    cap = client.app[api.CAPS_KEY].speedtest
    assert cap.open == 0 and cap.refused == {"timeout": 1}


async def test_events_capped_per_client_and_in_all(client: Client) -> None:
    cap = client.app[api.CAPS_KEY].events
    assert (cap.total, cap.per_client) == (100, 4)
    opened = [await client.get("/api/events") for _ in range(4)]
    for resp in opened:
        assert resp.status == 200
        assert (await resp.content.readuntil(b"\n\n")).startswith(b"event: history\n")
    refused = await client.get("/api/events")
    assert refused.status == 429
    assert refused.content_type == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    assert cap.open == 4

    cap.per_client, cap.total = 10, 5
    opened.append(await client.get("/api/events"))
    assert opened[-1].status == 200
    refused = await client.get("/api/events")
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert cap.refused == {"per_client": 1, "server_busy": 1}

    for resp in opened:  # closing frees the slots (the writer notices within a second)
        resp.close()
    deadline = time.monotonic() + 5
    while cap.open and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert cap.open == 0 and cap.by_client == {}
    resp = await client.get("/api/events")
    assert resp.status == 200
    resp.close()


async def test_caps_count_clients_as_the_admission_limits_do() -> None:
    """Behind a trusted proxy the caps count the X-Forwarded-For address, not the proxy's."""
    config = Config(host="127.0.0.1", port=0, udp_port=0, host_candidates=False, trust_proxy=True)
    proxied: Client = TestClient(TestServer(create_app(config)))
    await proxied.start_server()
    try:
        cap = proxied.app[api.CAPS_KEY].events
        a, b = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
        opened = [await proxied.get("/api/events", headers=a) for _ in range(cap.per_client)]
        assert [r.status for r in opened] == [200] * cap.per_client
        assert (await proxied.get("/api/events", headers=a)).status == 429
        other = await proxied.get("/api/events", headers=b)
        assert other.status == 200
        assert cap.by_client == {"203.0.113.1": cap.per_client, "203.0.113.2": 1}
        for resp in [*opened, other]:
            resp.close()
    finally:
        await proxied.close()


# -- the collector --------------------------------------------------------------------------------


def test_collector_exports_every_snapshot_counter_generically() -> None:
    """Counter keys map to ``relaycast_<key>_total`` / ``relaycast_stream_<key>_total``, new
    keys included; histograms keep their cumulative buckets."""
    snap = ServerSnapshot(
        sessions=3,
        publishers=1,
        subscribers=2,
        counters={"udp_bytes_in": 1000, "garbage_dropped": 7, "brand_new": 5},
        streams=[
            StreamSnapshot(
                name="cam",
                live=True,
                viewers=2,
                viewers_connecting=0,
                video_codec="VP8",
                audio_codec=None,
                live_for=3.0,
                counters={"ingress_bytes": 500, "fresh_bytes": 9},
            )
        ],
        histograms={"handshake": HistogramSnapshot((0.1, 1.0), (2, 3, 4), 5.5, 4)},
    )
    registry = CollectorRegistry()
    registry.register(RelaycastCollector(web.Application(), lambda: snap))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["relaycast_udp_bytes_in"].samples[0].value == 1000
    assert families["relaycast_udp_garbage_dropped"].samples[0].value == 7
    assert families["relaycast_brand_new"].type == "counter"
    assert "relaycast_brand_new_total 5.0" in text
    assert 'relaycast_stream_fresh_bytes_total{stream="cam"} 9.0' in text
    assert 'relaycast_stream_ingress_bytes_total{stream="cam"} 500.0' in text
    assert 'relaycast_viewers{stream="cam"} 2.0' in text
    assert "relaycast_sessions 3.0" in text
    buckets = {
        s.labels["le"]: s.value
        for s in families["relaycast_handshake_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {"0.1": 2, "1.0": 3, "+Inf": 4}
    assert "relaycast_handshake_duration_seconds_sum 5.5" in text
    assert "relaycast_handshake_duration_seconds_count 4.0" in text
    assert families["relaycast_sessions_refused"].samples == []  # no admission limits here
