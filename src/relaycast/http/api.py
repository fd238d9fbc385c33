"""JSON API, server-sent events and Prometheus metrics about the streams."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import media_server
from relaycast.media.server import MediaServer
from relaycast.media.stream import Stream


class StreamStats:
    """Bitrates measured over the slow timer (bytes between two ticks)."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self._last: dict[str, tuple[float, int, int]] = {}
        self.bitrate: dict[str, tuple[int, int]] = {}  # stream -> (ingress bps, egress bps)
        self.started = time.time()
        server.on_tick.append(self.tick)

    @staticmethod
    def _bytes(stream: Stream) -> tuple[int, int]:
        ingress = 0
        if stream.publisher is not None:
            ingress = sum(t.bytes for t in stream.publisher.tracks.values())
        egress = sum(d.bytes_sent for s in stream.subscribers for d in s.downtracks)
        return ingress, egress

    def tick(self, now: float) -> None:
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
        self._last = current
        self.bitrate = {k: v for k, v in self.bitrate.items() if k in current}


STATS_KEY = web.AppKey("stream_stats", StreamStats)


def describe(stream: Stream, stats: StreamStats) -> dict[str, Any]:
    publisher = stream.publisher
    codecs = publisher.codecs() if publisher is not None else {}
    ingress, egress = stats.bitrate.get(stream.name, (0, 0))
    live_for = None
    if publisher is not None and publisher.connected_at is not None:
        live_for = round(time.monotonic() - publisher.connected_at, 1)
    return {
        "name": stream.name,
        "live": stream.live,
        "viewers": sum(1 for s in stream.subscribers if s.connected_at is not None),
        "viewers_connecting": sum(1 for s in stream.subscribers if s.connected_at is None),
        "video_codec": codecs["video"].name if "video" in codecs else None,
        "audio_codec": codecs["audio"].name if "audio" in codecs else None,
        "ingress_bps": ingress,
        "egress_bps": egress,
        "uptime_s": live_for,
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


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the stream list once a second."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    stats = request.app[STATS_KEY]
    server = media_server(request)
    try:
        while True:
            payload = json.dumps([describe(s, stats) for s in server.streams.values()])
            await response.write(f"event: streams\ndata: {payload}\n\n".encode())
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
        f"relaycast_udp_bytes_out_total {mux.bytes_out}",
        "# TYPE relaycast_udp_dropped_total counter",
        f"relaycast_udp_dropped_total {mux.dropped}",
        "# TYPE relaycast_stun_rejected_total counter",
        f"relaycast_stun_rejected_total {server.ice.rejected}",
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
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics)
