"""JSON API, server-sent events and Prometheus metrics about the streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psutil
from aiohttp import web

from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import media_server
from relaycast.media.server import MediaServer
from relaycast.media.stream import Stream
from relaycast.rtp.resolution import FrameSize, frame_size

HISTORY_SECONDS = 300  # per-stream samples kept for the dashboard charts (one a second)
SPEEDTEST_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One second of one stream: bitrates in bit/s and connected viewers."""

    t: float  # wall clock, seconds since the epoch
    ingress_bps: int
    egress_bps: int
    viewers: int

    def as_json(self) -> list[float | int]:
        return [round(self.t, 3), self.ingress_bps, self.egress_bps, self.viewers]


class StreamStats:
    """Bitrates measured over the media server's 1 s tick (bytes between two ticks), the last
    minutes of them per stream, the video size read from cached key frames, and server totals
    (UDP ingress/egress, CPU and memory of this process)."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self._last: dict[str, tuple[float, int, int]] = {}
        self.bitrate: dict[str, tuple[int, int]] = {}  # stream -> (ingress bps, egress bps)
        self.history: dict[str, deque[Sample]] = {}
        self.resolution: dict[str, FrameSize] = {}
        self.started = time.time()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call only starts the measurement
        self._mux_last: tuple[float, int, int] | None = None
        self.totals: dict[str, Any] = self._totals(0, 0)
        server.on_tick.append(self.tick)

    @staticmethod
    def _bytes(stream: Stream) -> tuple[int, int]:
        ingress = 0
        if stream.publisher is not None:
            ingress = sum(t.bytes for t in stream.publisher.tracks.values())
        egress = sum(d.bytes_sent for s in stream.subscribers for d in s.downtracks)
        return ingress, egress

    def _read_resolution(self, stream: Stream) -> None:
        """The size announced by the cached key frame (fast-start GOP), if it says one."""
        forwarder = stream.forwarders.get("video")
        if forwarder is None or forwarder.source is None or not forwarder.gop:
            return
        codec = forwarder.source.codec_name
        for packet in forwarder.gop[:4]:  # SPS / key frame header sit in the first packets
            size = frame_size(codec, packet.payload)
            if size is not None:
                self.resolution[stream.name] = size
                return

    def _totals(self, ingress_bps: int, egress_bps: int) -> dict[str, Any]:
        memory = self._process.memory_info().rss
        return {
            "time": time.time(),
            "uptime_s": round(time.time() - self.started, 1),
            "streams": len(self.server.streams),
            "live_streams": sum(1 for s in self.server.streams.values() if s.live),
            "viewers": sum(viewer_count(s) for s in self.server.streams.values()),
            "ingress_bps": ingress_bps,
            "egress_bps": egress_bps,
            "cpu_percent": round(self._process.cpu_percent(None), 1),
            "cpu_count": psutil.cpu_count() or 1,
            "system_cpu_percent": round(psutil.cpu_percent(None), 1),
            "memory_rss_bytes": memory,
            "system_memory_percent": round(psutil.virtual_memory().percent, 1),
        }

    def tick(self, now: float) -> None:
        wall = time.time()
        current: dict[str, tuple[float, int, int]] = {}
        for name, stream in self.server.streams.items():
            ingress, egress = self._bytes(stream)
            current[name] = (now, ingress, egress)
            last = self._last.get(name)
            if last is not None and now > last[0]:
                span = now - last[0]
                self.bitrate[name] = (
                    max(0, int((ingress - last[1]) * 8 / span)),
                    max(0, int((egress - last[2]) * 8 / span)),
                )
            rates = self.bitrate.get(name, (0, 0))
            history = self.history.setdefault(name, deque(maxlen=HISTORY_SECONDS))
            history.append(Sample(wall, rates[0], rates[1], viewer_count(stream)))
            if stream.live:
                self._read_resolution(stream)
            else:
                self.resolution.pop(name, None)
        self._last = current
        self.bitrate = {k: v for k, v in self.bitrate.items() if k in current}
        self.history = {k: v for k, v in self.history.items() if k in current}
        self.resolution = {k: v for k, v in self.resolution.items() if k in current}

        ingress_bps = egress_bps = 0
        with contextlib.suppress(RuntimeError):  # the media plane is not started yet
            mux = self.server.mux
            egress = self.server.egress_bytes()  # sendto traffic plus the DownTracks' own sends
            if self._mux_last is not None and now > self._mux_last[0]:
                span = now - self._mux_last[0]
                ingress_bps = max(0, int((mux.bytes_in - self._mux_last[1]) * 8 / span))
                egress_bps = max(0, int((egress - self._mux_last[2]) * 8 / span))
            self._mux_last = (now, mux.bytes_in, egress)
        self.totals = self._totals(ingress_bps, egress_bps)


def viewer_count(stream: Stream) -> int:
    return sum(1 for s in stream.subscribers if s.connected_at is not None)


STATS_KEY = web.AppKey("stream_stats", StreamStats)


def describe(stream: Stream, stats: StreamStats) -> dict[str, Any]:
    publisher = stream.publisher
    codecs = publisher.codecs() if publisher is not None else {}
    ingress, egress = stats.bitrate.get(stream.name, (0, 0))
    size = stats.resolution.get(stream.name)
    live_for = None
    if publisher is not None and publisher.connected_at is not None:
        live_for = round(time.monotonic() - publisher.connected_at, 1)
    return {
        "name": stream.name,
        "live": stream.live,
        "viewers": viewer_count(stream),
        "viewers_connecting": sum(1 for s in stream.subscribers if s.connected_at is None),
        "video_codec": codecs["video"].name if "video" in codecs else None,
        "audio_codec": codecs["audio"].name if "audio" in codecs else None,
        "ingress_bps": ingress,
        "egress_bps": egress,
        "uptime_s": live_for,
        "width": size.width if size else None,
        "height": size.height if size else None,
        "resolution": str(size) if size else None,
        "watch_url": f"/watch/{stream.name}",
    }


async def list_streams(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    streams = [describe(s, stats) for s in media_server(request).streams.values()]
    return web.json_response(streams)


async def get_stream(request: web.Request) -> web.Response:
    name = require_stream_name(request.match_info["stream"])
    stream = media_server(request).streams.get(name)
    if stream is None:
        raise ProblemError(404, "Unknown stream", f"nobody publishes or watches {name!r} now")
    return web.json_response(describe(stream, request.app[STATS_KEY]))


def history_json(stats: StreamStats, name: str) -> dict[str, Any]:
    samples = stats.history.get(name, ())
    return {
        "name": name,
        "fields": ["t", "ingress_bps", "egress_bps", "viewers"],
        "samples": [s.as_json() for s in samples],
    }


async def get_history(request: web.Request) -> web.Response:
    """The last minutes of one stream, one sample a second: [t, ingress, egress, viewers]."""
    name = require_stream_name(request.match_info["stream"])
    stats = request.app[STATS_KEY]
    if name not in media_server(request).streams:
        raise ProblemError(404, "Unknown stream", f"nobody publishes or watches {name!r} now")
    return web.json_response(history_json(stats, name))


async def get_server(request: web.Request) -> web.Response:
    """Server totals: UDP ingress/egress bit/s, CPU and memory of the relaycast process."""
    return web.json_response(request.app[STATS_KEY].totals)


async def get_time(request: web.Request) -> web.Response:
    """The server's wall clock in ms since the epoch, for NTP-style offset estimation by the
    pages (offset = server - (t_send + t_receive) / 2, keeping the sample with the least RTT)."""
    return web.json_response(
        {"now_ms": time.time() * 1000.0}, headers={"Cache-Control": "no-store"}
    )


async def speedtest(request: web.Request) -> web.Response:
    """Upload speed test: reads the request body (up to 16 MiB) and reports how fast it came.

    The time runs from the first body chunk to the last, so the request headers and any
    queueing before the handler do not count; the page also times the whole request and
    shows the lower of the two rates.
    """
    received = 0
    first: float | None = None
    started = time.perf_counter()
    async for chunk in request.content.iter_chunked(64 * 1024):
        if first is None:
            first = time.perf_counter()
        received += len(chunk)
        if received > SPEEDTEST_MAX_BYTES:
            raise ProblemError(
                413,
                "Content Too Large",
                f"send at most {SPEEDTEST_MAX_BYTES // (1024 * 1024)} MiB to the speed test",
            )
    finished = time.perf_counter()
    seconds = finished - (first if first is not None else started)
    if received == 0:
        raise ProblemError(400, "Empty speed test", "POST a few megabytes of any data")
    seconds = max(seconds, 1e-6)
    return web.json_response(
        {
            "bytes": received,
            "seconds": round(seconds, 6),
            "mbps": round(received * 8 / seconds / 1e6, 3),
        },
        headers={"Cache-Control": "no-store"},
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events, once a second: ``streams`` (the stream list, as GET /api/streams),
    ``server`` (the totals, as GET /api/server) and ``samples`` (each stream's newest history
    sample).  On connect, one ``history`` event carries every stream's last minutes."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    stats = request.app[STATS_KEY]
    server = media_server(request)

    def event(name: str, data: Any) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    try:
        history = {name: history_json(stats, name)["samples"] for name in server.streams}
        await response.write(event("history", history))
        while True:
            await response.write(
                event("streams", [describe(s, stats) for s in server.streams.values()])
            )
            await response.write(event("server", stats.totals))
            newest = {
                name: samples[-1].as_json() for name, samples in stats.history.items() if samples
            }
            await response.write(event("samples", newest))
            await asyncio.sleep(1.0)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format."""
    server = media_server(request)
    stats = request.app[STATS_KEY]
    mux = server.mux
    lines = [
        "# TYPE relaycast_streams gauge",
        f"relaycast_streams {len(server.streams)}",
        "# TYPE relaycast_sessions gauge",
        f"relaycast_sessions {len(server.sessions)}",
        "# TYPE relaycast_udp_bytes_in_total counter",
        f"relaycast_udp_bytes_in_total {mux.bytes_in}",
        "# TYPE relaycast_udp_bytes_out_total counter",
        f"relaycast_udp_bytes_out_total {server.egress_bytes()}",
        "# TYPE relaycast_udp_dropped_total counter",
        f"relaycast_udp_dropped_total {mux.dropped}",
        "# TYPE relaycast_stun_rejected_total counter",
        f"relaycast_stun_rejected_total {server.ice.rejected}",
        "# TYPE relaycast_process_cpu_percent gauge",
        f"relaycast_process_cpu_percent {stats.totals['cpu_percent']}",
        "# TYPE relaycast_process_resident_memory_bytes gauge",
        f"relaycast_process_resident_memory_bytes {stats.totals['memory_rss_bytes']}",
        "# TYPE relaycast_viewers gauge",
    ]
    for stream in server.streams.values():
        info = describe(stream, stats)
        lines.append(f'relaycast_viewers{{stream="{stream.name}"}} {info["viewers"]}')
        lines.append(f'relaycast_ingress_bps{{stream="{stream.name}"}} {info["ingress_bps"]}')
        lines.append(f'relaycast_egress_bps{{stream="{stream.name}"}} {info["egress_bps"]}')
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream}", get_stream)
    app.router.add_get("/api/streams/{stream}/history", get_history)
    app.router.add_get("/api/server", get_server)
    app.router.add_get("/api/time", get_time)
    app.router.add_post("/api/speedtest", speedtest)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics)
