"""The API of all workers at once: ``/api/streams``, ``/api/streams/{stream}``,
``/api/server`` and ``/metrics`` answered by whichever worker the request reached.

That worker asks every other one for its state over their internal sites (unix sockets,
the run's secret) at the time of the request and merges: viewers and egress add up, the
publisher's worker gives ingress, codecs, uptime and size, and every stream says which worker
holds its publisher and how many viewers each has. ``/metrics`` is every worker's exposition
with a ``worker`` label added to each sample (sum over it in PromQL). A worker that does not
answer within :data:`ASK_TIMEOUT` is listed with ``"up": false`` and left out of the sums.
The supervisor is not involved: it stays a plain process that only forks and restarts.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from relaycast.http.api import STATS_KEY, describe
from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import SERVER_KEY
from relaycast.http.tokens import visible_streams
from relaycast.workers.steering import describe_steering

if TYPE_CHECKING:
    from relaycast.workers.steering import Handler, Steering

ASK_TIMEOUT = 2.0
STATE_PATH = "/internal/state"
METRICS_PATH = "/metrics"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?(\s.*)$")


def local_state(
    app: web.Application, index: int, counters: dict[str, int] | None = None
) -> dict[str, Any]:
    """This worker's part: its streams as the API describes them, its totals and counters."""
    stats = app[STATS_KEY]
    server = app[SERVER_KEY]
    streams = []
    for info in server.snapshot().streams:
        item = describe(info, stats)
        stream = server.streams.get(info.name)
        item["publisher_here"] = bool(stream is not None and stream.publisher is not None)
        item["layers"] = info.layers  # simulcast (merged: the publisher's worker's)
        item["viewer_layers"] = [{**v, "worker": index} for v in info.viewer_layers]
        streams.append(item)
    return {
        "worker": index,
        "pid": os.getpid(),
        "up": True,
        "streams": streams,
        "totals": stats.totals,
        "sessions": len(server.sessions),
        "counters": counters or {},
    }


class WorkerApi:
    """Registers ``/internal/state`` and answers the aggregated routes."""

    def __init__(self, steering: Steering, app: web.Application) -> None:
        self.steering = steering
        self.app = app
        self.index = steering.plan.index
        self.count = steering.plan.count
        app.router.add_get(STATE_PATH, self.state)

    async def state(self, request: web.Request) -> web.Response:
        if not self.steering.is_internal(request):
            raise ProblemError(403, "Forbidden", "internal to relaycast's workers")
        return web.json_response(self._local())

    def _local(self) -> dict[str, Any]:
        steering = self.steering
        counters = {
            **describe_steering(steering),
            **steering.relay.stats(),
            "link_messages_dropped": steering.links.dropped,
            "pinned_sockets": len(steering.server.mux.pinned),
        }
        return local_state(self.app, self.index, counters)

    async def _ask(self, index: int, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        session = self.steering.client(index)
        async with asyncio.timeout(ASK_TIMEOUT):
            async with session.get(f"http://worker{index}{path}", headers=headers) as answer:
                if path == METRICS_PATH:
                    return answer.status, await answer.text()
                return answer.status, await answer.json()

    async def states(self) -> list[dict[str, Any]]:
        """Every worker's state, this one's first-hand; a silent one as ``up: false``."""
        headers = self.steering.internal_headers()
        peers = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(
            *(self._ask(i, STATE_PATH, headers) for i in peers), return_exceptions=True
        )
        out = [self._local()]
        for index, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException) or answer[0] != 200:
                out.append({"worker": index, "up": False, "streams": [], "totals": {}})
            else:
                out.append(answer[1])
        out.sort(key=lambda s: int(s["worker"]))
        return out

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.steering.is_internal(request) or request.method != "GET":
            return await handler(request)
        path = request.path
        if path == "/api/streams":
            listed = await self.streams(request)
            for item in listed:  # the list leaves these to /api/streams/{stream}
                item.pop("layers", None)
                item.pop("viewer_layers", None)
            return web.json_response(listed)
        if path.startswith("/api/streams/") and path.count("/") == 3:
            name = require_stream_name(path.rsplit("/", 1)[1])
            for item in await self.streams(request):
                if item["name"] == name:
                    return web.json_response(item)
            raise ProblemError(404, "Unknown stream", f"nobody publishes or watches {name!r} now")
        if path == "/api/server":
            return web.json_response(await self.server_totals())
        if path == METRICS_PATH:
            return await self.metrics(request)
        return await handler(request)

    async def streams(self, request: web.Request) -> list[dict[str, Any]]:
        states = await self.states()
        merged: dict[str, dict[str, Any]] = {}
        for state in states:
            for item in state["streams"]:
                entry = merged.get(item["name"])
                if entry is None:
                    entry = merged[item["name"]] = {
                        **item,
                        "viewers": 0,
                        "viewers_connecting": 0,
                        "egress_bps": 0,
                        "ingress_bps": 0,
                        "publisher_worker": None,
                        "workers": [],
                        "layers": [],
                        "viewer_layers": [],
                        "layer_viewers": {},
                        "fanout_paths": {},
                    }
                    entry.pop("publisher_here", None)
                entry["viewers"] += item["viewers"]
                # simulcast: the publisher's worker's layers (else any worker's), every
                # worker's viewers
                if item.get("layers") and (item.get("publisher_here") or not entry["layers"]):
                    entry["layers"] = item["layers"]
                entry["viewer_layers"] += item.get("viewer_layers", [])
                for rid, count in item.get("layer_viewers", {}).items():
                    entry["layer_viewers"][rid] = entry["layer_viewers"].get(rid, 0) + count
                for path, count in item.get("fanout_paths", {}).items():
                    entry["fanout_paths"][path] = entry["fanout_paths"].get(path, 0) + count
                entry["viewers_connecting"] += item["viewers_connecting"]
                entry["egress_bps"] += item["egress_bps"]
                entry["live"] = entry["live"] or item["live"]
                if item.get("publisher_here"):
                    entry["publisher_worker"] = state["worker"]
                    for key in ("ingress_bps", "video_codec", "audio_codec", "uptime_s"):
                        entry[key] = item[key]
                for key in ("width", "height", "resolution"):
                    if entry[key] is None:
                        entry[key] = item[key]
                entry["workers"].append(
                    {
                        "worker": state["worker"],
                        "pid": state.get("pid"),
                        "publisher": bool(item.get("publisher_here")),
                        "viewers": item["viewers"],
                        "viewers_connecting": item["viewers_connecting"],
                        "egress_bps": item["egress_bps"],
                    }
                )
        config = self.app[SERVER_KEY].config
        shown = visible_streams(request, config, list(merged))
        return [entry for name, entry in merged.items() if name in shown]

    async def server_totals(self) -> dict[str, Any]:
        states = await self.states()
        up = [s for s in states if s.get("up")]
        totals: dict[str, Any] = dict(up[0]["totals"]) if up else {}
        for key in (
            "viewers", "ingress_bps", "egress_bps", "cpu_percent", "memory_rss_bytes",
        ):  # fmt: skip
            totals[key] = sum(s["totals"].get(key, 0) for s in up)
        names = {item["name"] for s in up for item in s["streams"]}
        live = {item["name"] for s in up for item in s["streams"] if item["live"]}
        totals["streams"] = len(names)
        totals["live_streams"] = len(live)
        totals["cpu_percent"] = round(totals["cpu_percent"], 1)
        totals["workers"] = [
            {
                "worker": s["worker"],
                "up": bool(s.get("up")),
                "pid": s.get("pid"),
                "sessions": s.get("sessions", 0),
                "viewers": s["totals"].get("viewers", 0),
                "cpu_percent": s["totals"].get("cpu_percent"),
                "memory_rss_bytes": s["totals"].get("memory_rss_bytes"),
                **s.get("counters", {}),
            }
            for s in states
        ]
        return totals

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        headers = self.steering.internal_headers()
        if "Authorization" in request.headers:  # private streams' labels, as for one worker
            headers["Authorization"] = request.headers["Authorization"]
        indexes = list(range(self.count))
        answers = await asyncio.gather(
            *(self._ask(i, METRICS_PATH, headers) for i in indexes), return_exceptions=True
        )
        texts = [
            (index, answer[1])
            for index, answer in zip(indexes, answers, strict=True)
            if not isinstance(answer, BaseException) and answer[0] == 200
        ]
        body = merge_expositions(texts)
        return web.Response(
            body=body.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )


def merge_expositions(texts: list[tuple[int, str]]) -> str:
    """Prometheus text expositions of several workers as one: each sample gets a ``worker``
    label; a family's HELP/TYPE lines appear once and its samples stay together."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    order: list[str] = []
    for index, text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    if family not in families:
                        families[family] = ([], [])
                        order.append(family)
                    meta = families[family][0]
                    if not any(m.split(None, 2)[1] == parts[1] for m in meta):
                        meta.append(line)
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, rest = match.groups()
            label = f'worker="{index}"'
            labelled = f"{{{label}}}" if not labels else f"{{{label},{labels[1:]}"
            if family not in families:
                families[family] = ([], [])
                order.append(family)
            families[family][1].append(f"{name}{labelled}{rest}")
    lines: list[str] = []
    for family in order:
        meta, samples = families[family]
        lines.extend(meta)
        lines.extend(samples)
    return "\n".join(lines) + "\n"


async def close_quietly(session: aiohttp.ClientSession) -> None:
    await session.close()
