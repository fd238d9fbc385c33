"""JSON API and server-sent events about the streams, the speed test, and the routes of the
Prometheus metrics (http/metrics.py); the API reads MediaServer snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from relaycast.http.limits import ADMISSION_KEY
from relaycast.http.metrics import METRICS_KEY, admission, build_registry, metrics_handler
from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import SERVER_KEY, media_server
from relaycast.http.tokens import bearer, presents_key_for, visible_streams
from relaycast.media.recording import list_recordings
from relaycast.media.server import MediaServer
from relaycast.media.stats import ServerSnapshot, StreamSnapshot
from relaycast.rtp.resolution import FrameSize

HISTORY_SECONDS = 300  # per-stream samples kept for the dashboard charts (one a second)
SPEEDTEST_MAX_BYTES = 8 * 1024 * 1024  # the page sends at most 8 MiB
SPEEDTEST_TIMEOUT = 30.0  # seconds for the whole upload
SPEEDTEST_MAX_TOTAL = 2  # speed tests running at a time
SPEEDTEST_MAX_PER_CLIENT = 1
EVENTS_MAX_TOTAL = 100  # open /api/events streams
EVENTS_MAX_PER_CLIENT = 4


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
    """Bitrates measured over the media server's 1 s tick (counter bytes between two
    snapshots), the last minutes of them per stream, the video size the snapshots read from
    cached key frames, and server totals (UDP ingress/egress, CPU and memory of this process)."""

    def __init__(self, server: MediaServer) -> None:
        self.server = server
        self._last: dict[str, tuple[float, int, int]] = {}
        self.bitrate: dict[str, tuple[int, int]] = {}  # stream -> (ingress bps, egress bps)
        self.history: dict[str, deque[Sample]] = {}
        self.resolution: dict[str, FrameSize] = {}
        self.started = time.time()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call only starts the measurement
        self._udp_last: tuple[float, int, int] | None = None
        self.latest: ServerSnapshot = server.snapshot()  # as of the last tick
        self.totals: dict[str, Any] = self._totals(self.latest, 0, 0)
        server.on_tick.append(self.tick)

    def _totals(self, snap: ServerSnapshot, ingress_bps: int, egress_bps: int) -> dict[str, Any]:
        memory = self._process.memory_info().rss
        return {
            "time": time.time(),
            "uptime_s": round(time.time() - self.started, 1),
            "streams": len(snap.streams),
            "live_streams": sum(1 for s in snap.streams if s.live),
            "viewers": sum(s.viewers for s in snap.streams),
            "ingress_bps": ingress_bps,
            "egress_bps": egress_bps,
            "cpu_percent": round(self._process.cpu_percent(None), 1),
            "cpu_count": psutil.cpu_count() or 1,
            "system_cpu_percent": round(psutil.cpu_percent(None), 1),
            "memory_rss_bytes": memory,
            "system_memory_percent": round(psutil.virtual_memory().percent, 1),
        }

    def tick(self, now: float) -> None:
        """Take a snapshot; bitrates from its byte counters, one history sample a stream."""
        wall = time.time()
        snap = self.latest = self.server.snapshot()
        current: dict[str, tuple[float, int, int]] = {}
        for info in snap.streams:
            name = info.name
            ingress = info.counters.get("ingress_bytes", 0)
            egress = info.counters.get("egress_bytes", 0)
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
            history.append(Sample(wall, rates[0], rates[1], info.viewers))
            if info.frame_size is not None:
                self.resolution[name] = info.frame_size
            elif not info.live:
                self.resolution.pop(name, None)
        self._last = current
        self.bitrate = {k: v for k, v in self.bitrate.items() if k in current}
        self.history = {k: v for k, v in self.history.items() if k in current}
        self.resolution = {k: v for k, v in self.resolution.items() if k in current}

        ingress_bps = egress_bps = 0
        # the server's throughput: UDP and ICE-TCP (each byte counted by one of them)
        udp_in = snap.counters.get("udp_bytes_in", 0) + snap.counters.get("tcp_bytes_in", 0)
        udp_out = snap.counters.get("udp_bytes_out", 0) + snap.counters.get("tcp_bytes_out", 0)
        if self._udp_last is not None and now > self._udp_last[0]:
            span = now - self._udp_last[0]
            ingress_bps = max(0, int((udp_in - self._udp_last[1]) * 8 / span))
            egress_bps = max(0, int((udp_out - self._udp_last[2]) * 8 / span))
        self._udp_last = (now, udp_in, udp_out)
        self.totals = self._totals(snap, ingress_bps, egress_bps)


STATS_KEY = web.AppKey("stream_stats", StreamStats)


def describe(info: StreamSnapshot, stats: StreamStats) -> dict[str, Any]:
    """One stream as the JSON API and the events show it."""
    ingress, egress = stats.bitrate.get(info.name, (0, 0))
    size = stats.resolution.get(info.name)
    return {
        "name": info.name,
        "live": info.live,
        "viewers": info.viewers,
        "viewers_connecting": info.viewers_connecting,
        "video_codec": info.video_codec,
        "audio_codec": info.audio_codec,
        "ingress_bps": ingress,
        "egress_bps": egress,
        "uptime_s": round(info.live_for, 1) if info.live_for is not None else None,
        "width": size.width if size else None,
        "height": size.height if size else None,
        "resolution": str(size) if size else None,
        "watch_url": f"/watch/{info.name}",
        "layer_viewers": info.layer_viewers,  # simulcast: viewers per layer (rid)
        "fanout_paths": info.fanout_paths,  # outgoing tracks per path: native / python
    }


def _find(server: MediaServer, name: str, request: web.Request | None = None) -> StreamSnapshot:
    """The stream's snapshot; 404 when it has none, or (given the *request*) when it is
    private and the request does not present its publish key: the answer is the same as for
    a stream nobody uses, so a private stream's existence does not leak."""
    hidden = (
        request is not None
        and server.config.is_private(name)
        and not presents_key_for(request, server.config, name)
    )
    if not hidden:
        for info in server.snapshot().streams:
            if info.name == name:
                return info
    raise ProblemError(404, "Unknown stream", f"nobody publishes or watches {name!r} now")


def _visible(request: web.Request, names: list[str]) -> set[str]:
    """The stream names among *names* this request may see (private ones: with their key)."""
    return visible_streams(request, media_server(request).config, names)


async def list_streams(request: web.Request) -> web.Response:
    stats = request.app[STATS_KEY]
    snapshots = media_server(request).snapshot().streams
    shown = _visible(request, [s.name for s in snapshots])
    streams = [describe(s, stats) for s in snapshots if s.name in shown]
    return web.json_response(streams)


async def get_stream(request: web.Request) -> web.Response:
    name = require_stream_name(request.match_info["stream"])
    info = _find(media_server(request), name, request)
    body = describe(info, request.app[STATS_KEY])
    body["layers"] = info.layers  # simulcast: the layers, lowest first, and each viewer's
    body["viewer_layers"] = info.viewer_layers
    return web.json_response(body)


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
    _find(media_server(request), name, request)
    return web.json_response(history_json(request.app[STATS_KEY], name))


async def get_server(request: web.Request) -> web.Response:
    """Server totals: UDP ingress/egress bit/s, CPU and memory of the relaycast process."""
    return web.json_response(request.app[STATS_KEY].totals)


async def get_time(request: web.Request) -> web.Response:
    """The server's wall clock in ms since the epoch, for NTP-style offset estimation by the
    pages (offset = server - (t_send + t_receive) / 2, keeping the sample with the least RTT)."""
    return web.json_response(
        {"now_ms": time.time() * 1000.0}, headers={"Cache-Control": "no-store"}
    )


async def get_recordings(request: web.Request) -> web.Response:
    """The recorded files of the streams the presented publish key publishes (every stream
    for the generated key): stream, path relative to the record directory, size, start,
    duration, codecs. Needs ``Authorization: Bearer <publish key>``; wrong keys count towards
    the same lockout as WHIP's."""
    config = media_server(request).config
    admission = request.app[ADMISSION_KEY]
    client = admission.client(request)
    admission.check_key_lockout(client)
    key = bearer(request)
    if key is None:
        raise ProblemError(
            401,
            "Publish key required",
            "recordings are listed to holders of a publish key: "
            "send it as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="relaycast"'},
        )
    if config.record_dir is None:
        recordings: list[dict[str, Any]] = []
    else:
        root = config.record_dir
        recordings = await asyncio.to_thread(list_recordings, Path(root))
    # with configured keys, the key of some stream; else the generated key (any stream name)
    if not any(config.check_key(name, key) for name in config.stream_keys or ("_",)):
        admission.key_failed(client)
        raise ProblemError(403, "Wrong publish key", "that key publishes no stream here")
    allowed = {r["stream"] for r in recordings if config.check_key(r["stream"], key)}
    return web.json_response([r for r in recordings if r["stream"] in allowed])


class ConnectionCap:
    """At most ``total`` requests at a time, and ``per_client`` from one client address;
    refusals are problem documents with ``Retry-After`` and are counted by reason."""

    def __init__(
        self, endpoint: str, total: int, per_client: int, retry_after: int, what: str
    ) -> None:
        self.endpoint = endpoint
        self.total = total
        self.per_client = per_client
        self.retry_after = retry_after
        self.what = what  # "event streams", "speed tests" (for the detail sentence)
        self.by_client: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self._open = 0

    @property
    def open(self) -> int:
        return self._open

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """One slot for *client* while the ``with`` body runs; ProblemError 503/429 if full."""
        retry = {"Retry-After": str(self.retry_after)}
        if self._open >= self.total:
            self.refuse("server_busy")
            raise ProblemError(
                503,
                "Too many connections",
                f"the server already runs {self.total} {self.what}; try again later",
                headers=retry,
            )
        if self.by_client.get(client, 0) >= self.per_client:
            self.refuse("per_client")
            raise ProblemError(
                429,
                "Too Many Requests",
                f"at most {self.per_client} {self.what} at a time from one address; "
                "close another one or try again later",
                headers=retry,
            )
        self._open += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        try:
            yield
        finally:
            self._open -= 1
            left = self.by_client[client] - 1
            if left:
                self.by_client[client] = left
            else:
                del self.by_client[client]


@dataclass
class ApiCaps:
    """The API's concurrency caps (one set per app)."""

    events: ConnectionCap
    speedtest: ConnectionCap

    @classmethod
    def defaults(cls) -> ApiCaps:
        return cls(
            events=ConnectionCap(
                "events", EVENTS_MAX_TOTAL, EVENTS_MAX_PER_CLIENT, 10, "live event streams"
            ),
            speedtest=ConnectionCap(
                "speedtest", SPEEDTEST_MAX_TOTAL, SPEEDTEST_MAX_PER_CLIENT, 1, "speed tests"
            ),
        )


CAPS_KEY = web.AppKey("api_caps", ApiCaps)


def client_address(request: web.Request) -> str:
    """The client the caps count by: as the admission limits see it (``X-Forwarded-For``
    with ``trust_proxy``, IPv6 per /64), else the peer address."""
    limits = admission(request.app)
    if limits is not None:
        return limits.client(request)
    return request.remote or "unknown"


async def speedtest(request: web.Request) -> web.Response:
    """Upload speed test: reads an ``application/octet-stream`` body (up to 8 MiB, within
    30 s) and reports how fast it came.

    Only ``application/octet-stream`` is accepted, so that a page elsewhere cannot make its
    visitors upload here with a CORS "simple" request (its POST would have to be preflighted),
    and a few run at a time (:data:`SPEEDTEST_MAX_TOTAL`, one per address).  The time runs
    from the first body chunk to the last, so the request headers and any queueing before the
    handler do not count; the page also times the whole request and shows the lower of the
    two rates.
    """
    cap = request.app[CAPS_KEY].speedtest
    # the header itself: aiohttp's request.content_type says octet-stream when there is none,
    # and a POST without Content-Type is a simple request too
    media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != "application/octet-stream":
        cap.refuse("content_type")
        raise ProblemError(
            415,
            "Unsupported Media Type",
            "POST the speed test body as Content-Type: application/octet-stream",
        )
    received = 0
    first: float | None = None
    started = time.perf_counter()
    with cap.hold(client_address(request)):
        try:
            async with asyncio.timeout(SPEEDTEST_TIMEOUT):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    if first is None:
                        first = time.perf_counter()
                    received += len(chunk)
                    if received > SPEEDTEST_MAX_BYTES:
                        cap.refuse("too_large")
                        raise ProblemError(
                            413,
                            "Content Too Large",
                            f"send at most {SPEEDTEST_MAX_BYTES // (1024 * 1024)} MiB "
                            "to the speed test",
                        )
        except TimeoutError:
            cap.refuse("timeout")
            raise ProblemError(
                408,
                "Request Timeout",
                f"the speed test upload must finish within {SPEEDTEST_TIMEOUT:.0f} s",
                headers={"Connection": "close"},
            ) from None
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
    sample), all as of the media server's last tick.  On connect, one ``history`` event
    carries every stream's last minutes.  At most :data:`EVENTS_MAX_TOTAL` streams are open at
    a time, :data:`EVENTS_MAX_PER_CLIENT` from one address (503 / 429 beyond).  Private
    streams are left out unless the request presents their publish key."""
    with request.app[CAPS_KEY].events.hold(client_address(request)):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        stats = request.app[STATS_KEY]

        def event(name: str, data: Any) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        try:
            shown = _visible(request, list(stats.history))
            history = {
                name: [s.as_json() for s in samples]
                for name, samples in stats.history.items()
                if name in shown
            }
            await response.write(event("history", history))
            while True:
                snapshots = stats.latest.streams
                shown = _visible(request, [s.name for s in snapshots] + list(stats.history))
                streams = [describe(s, stats) for s in snapshots if s.name in shown]
                await response.write(event("streams", streams))
                await response.write(event("server", stats.totals))
                newest = {
                    name: samples[-1].as_json()
                    for name, samples in stats.history.items()
                    if samples and name in shown
                }
                await response.write(event("samples", newest))
                await asyncio.sleep(1.0)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def add_routes(app: web.Application) -> None:
    """The API routes, their caps and the app's metrics registry."""
    caps = app[CAPS_KEY] = ApiCaps.defaults()
    server = app[SERVER_KEY]
    app[METRICS_KEY] = build_registry(app, server.snapshot, [caps.events, caps.speedtest])
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream}", get_stream)
    app.router.add_get("/api/streams/{stream}/history", get_history)
    app.router.add_get("/api/server", get_server)
    app.router.add_get("/api/time", get_time)
    app.router.add_get("/api/recordings", get_recordings)
    app.router.add_post("/api/speedtest", speedtest)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics_handler)
