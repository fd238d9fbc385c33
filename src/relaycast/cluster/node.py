"""This node's part in the cluster: registration, origins, pulls, redirects (design.md,
"Cluster").

* A WHIP publisher here makes this node the stream's origin (``Registry.claim_origin``; the
  newest claim wins, so a publisher that reconnects on another node takes the stream along).
* A viewer here of a stream that is neither published nor pulled here starts a pull from a
  source of it (:meth:`ClusterNode.before_play`); viewers of a stream not live anywhere wait,
  and the heartbeat starts the pull once the registry names an origin.
* Every :data:`~relaycast.cluster.registry.HEARTBEAT`: the node record and our origin claims
  are written, the other nodes read, and each pulled stream checked: its source still on the
  chain from the current origin (else a new pull is made and takes over once its DTLS is up,
  so viewers keep their DownTracks), media still flowing (else the pull is given up and retried
  with back-off), viewers still here (else it ends after :data:`LINGER`).
* Redis away: nothing running changes; new cross-node pulls are refused with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil

from relaycast.cluster.pull import SIGNAL_TIMEOUT, EdgePull, PullError
from relaycast.cluster.registry import (
    HEARTBEAT,
    NODE_TTL,
    NodeRecord,
    Origin,
    Registry,
    RegistryUnavailable,
)
from relaycast.config import Config
from relaycast.http.problems import ProblemError

if TYPE_CHECKING:
    from aiohttp import web

    from relaycast.media.publisher import Publisher
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream

log = logging.getLogger(__name__)

LINGER = 10.0  # seconds a pull outlives the last viewer of its stream here
BACKOFF_FIRST = 1.0  # seconds before retrying a failed pull, doubled up to BACKOFF_MAX
BACKOFF_MAX = 10.0
DEPTH_COST = 0.1  # source choice: load + DEPTH_COST x hops from the origin, lowest wins
REDIRECT_MARGIN = 0.1  # --cluster-redirect: only to a node this much less loaded
REGISTRY_RETRY_AFTER = 2


class ClusterNode:
    """Owned by the app (``app[CLUSTER_KEY]``) when ``--cluster`` is given."""

    def __init__(self, config: Config, server: MediaServer) -> None:
        assert config.cluster is not None and config.node_url is not None
        self.config = config
        self.server = server
        self.node_url = config.node_url
        self.secret = config.cluster_secret
        self.registry = Registry(config.cluster, config.node_url, config.cluster_secret)
        self.pulls: dict[str, EdgePull] = {}  # the pull feeding each stream here
        self.switching: dict[str, EdgePull] = {}  # a new pull that will replace it
        self.backoff: dict[str, tuple[float, float]] = {}  # stream -> (retry at, delay)
        self.errors: dict[str, PullError] = {}  # stream -> the last pull's refusal
        self.idle_since: dict[str, float] = {}
        self.claimed: set[str] = set()
        self.node_sessions: dict[str, str] = {}  # session id -> the node that pulls through it
        self.nodes: list[NodeRecord] = []
        self.available = False
        self.registry_error = "not connected yet"
        self.attempts = 0
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._cpu = 0.0
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._bind_ip = config.media_bind_host() or "0.0.0.0"
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.registry.connect()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SIGNAL_TIMEOUT))
        self.server.on_publish.append(self._published)
        self.server.on_fast_tick.append(self._fast_tick)
        self.server.on_tick.append(self._slow_tick)
        self._task = asyncio.create_task(self._run())
        log.info("cluster node %s, registry %s", self.node_url, _redacted(self.registry.url))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pull in [*self.switching.values(), *self.pulls.values()]:
            pull.close("the node is shutting down")
        with contextlib.suppress(RegistryUnavailable):
            for name in list(self.claimed):
                await self.registry.release_origin(name)
            await self.registry.forget_node()
        await asyncio.sleep(0)  # let the pulls' DELETEs start
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        if self._http is not None:
            await self._http.close()
        await self.registry.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "cluster node not started"
        return self._http

    # -- publishers -----------------------------------------------------------------------------

    def _published(self, publisher: Publisher) -> None:
        """A WHIP publisher here: we are the origin now; a pull of the stream is not needed."""
        name = publisher.stream.name
        for pulls in (self.switching, self.pulls):
            pull = pulls.get(name)
            if pull is not None:
                pull.close("a publisher of the stream went live on this node")
        self.claimed.add(name)
        self._spawn(self._claim(name))

    async def _claim(self, name: str) -> None:
        try:
            await self.registry.claim_origin(name)
        except RegistryUnavailable as exc:
            log.warning("cannot register this node as the origin of %r yet: %s", name, exc)

    # -- timers ---------------------------------------------------------------------------------

    def _fast_tick(self, now: float) -> None:
        for pull in (*self.pulls.values(), *self.switching.values()):
            pull.poll_feedback(now)

    def _slow_tick(self, now: float) -> None:
        """Receiver reports to the sources; pulls that lost their source are given up (this
        needs no registry, so an origin that dies is noticed while Redis is away too)."""
        self._cpu = self._process.cpu_percent(None)
        for pull in (*self.pulls.values(), *self.switching.values()):
            reason = pull.stalled(now)
            if reason is not None:
                pull.fail(reason)
            else:
                pull.send_reports(now)
                if pull.connected_at is not None:
                    self.backoff.pop(pull.stream.name, None)
                    self.errors.pop(pull.stream.name, None)

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:  # the heartbeat must never die
                log.exception("cluster heartbeat failed")
            await asyncio.sleep(HEARTBEAT)

    # -- the heartbeat --------------------------------------------------------------------------

    def load(self) -> float:
        """0..1 and beyond: the larger of the session share and the CPU of one core."""
        sessions = len(self.server.sessions) / max(1, self.config.max_sessions)
        return round(max(sessions, self._cpu / 100.0), 3)

    def record(self) -> NodeRecord:
        streams: dict[str, dict[str, Any]] = {}
        viewers = 0
        for name, stream in self.server.streams.items():
            connected = sum(1 for s in stream.subscribers if s.connected_at is not None)
            viewers += connected
            pulled_by = sum(1 for s in stream.subscribers if s.id in self.node_sessions)
            info: dict[str, Any] = {"viewers": connected, "nodes": pulled_by}
            pull = self.pulls.get(name)
            if stream.publisher is not None:
                info.update(role="origin", live=stream.live, depth=0, path=[self.node_url])
            elif pull is not None and stream.pull is pull:
                path = [*pull.path, self.node_url]
                info.update(role="edge", live=stream.live, depth=len(path) - 1, path=path)
                info["source"] = pull.source
            else:
                info.update(role="waiting", live=False)
            streams[name] = info
        return NodeRecord(
            url=self.node_url,
            time=time.time(),
            sessions=len(self.server.sessions),
            viewers=viewers,
            max_sessions=self.config.max_sessions,
            load=self.load(),
            cpu_percent=round(self._cpu, 1),
            streams=streams,
        )

    async def beat(self) -> None:
        server = self.server
        published = [
            name
            for name, stream in server.streams.items()
            if stream.publisher is not None and not stream.publisher.closed
        ]
        try:
            for name in self.claimed - set(published):
                await self.registry.release_origin(name)
                self.claimed.discard(name)
            owners = await self.registry.heartbeat(self.record(), published)
            self.nodes = await self.registry.nodes()
            wanted = [
                name
                for name, stream in server.streams.items()
                if stream.publisher is None and (stream.subscribers or name in self.pulls)
            ]
            origins = await self.registry.origins(wanted)
        except RegistryUnavailable as exc:
            if self.available or self.registry_error != str(exc):
                log.warning("cluster registry unavailable (running streams go on): %s", exc)
            self.available = False
            self.registry_error = str(exc)
            return
        if not self.available:
            log.info("cluster registry reachable")
        self.available = True
        self.registry_error = ""
        for name, owner in owners.items():
            if owner is None or owner.node == self.node_url:
                self.claimed.add(name)
                continue
            # a newer publisher of the stream went live on another node: it is the origin
            self.claimed.discard(name)
            stream = server.streams.get(name)
            if stream is not None and stream.publisher is not None:
                stream.publisher.close(f"a newer publisher of {name!r} is live on {owner.node}")
            wanted.append(name)
            origins[name] = owner
        now = time.monotonic()
        for name in wanted:
            self._maintain(name, origins.get(name), now)

    def _maintain(self, name: str, origin: Origin | None, now: float) -> None:
        stream = self.server.streams.get(name)
        if stream is None or stream.publisher is not None:
            return
        pull = self.pulls.get(name)
        if not stream.subscribers:
            if pull is not None:
                since = self.idle_since.setdefault(name, now)
                if now - since > LINGER:
                    pull.close("no viewers of the stream here")
            return
        self.idle_since.pop(name, None)
        if origin is None:
            if pull is not None:
                pull.close("the stream is not published on any node")
            return
        if origin.node == self.node_url:
            return  # our own claim, not yet expired after our publisher left
        if pull is not None:
            if not self._still_valid(pull, origin) and name not in self.switching:
                log.info("%r moved to origin %s: switching the pull", name, origin.node)
                self._start(stream, origin, switch=True)
            return
        retry_at, _ = self.backoff.get(name, (0.0, 0.0))
        if now >= retry_at:
            self._start(stream, origin)

    def _still_valid(self, pull: EdgePull, origin: Origin) -> bool:
        """The pull's chain still starts at the stream's current origin."""
        if not pull.path or pull.path[0] != origin.node:
            return False
        if pull.source == origin.node:
            return True
        for node in self.nodes:
            if node.url == pull.source:
                info = node.streams.get(pull.stream.name) or {}
                path = info.get("path") or []
                return bool(info.get("live")) and bool(path) and path[0] == origin.node
        return False

    def choose_source(self, name: str, origin: Origin) -> tuple[str, list[str]]:
        """Where to pull ``name`` from (design.md, "Cluster": the rule): among the origin and
        the nodes that pull it live from a chain starting at the origin, not through this node,
        the lowest ``load + DEPTH_COST x depth``; the origin on a tie."""
        loads = {node.url: node.load for node in self.nodes}
        best = (loads.get(origin.node, 0.0), 0, origin.node, [origin.node])
        for node in self.nodes:
            info = node.streams.get(name) or {}
            path = info.get("path") or []
            if (
                node.url in (self.node_url, origin.node)
                or info.get("role") != "edge"
                or not info.get("live")
                or not path
                or path[0] != origin.node
                or self.node_url in path
            ):
                continue
            depth = len(path) - 1
            score = node.load + DEPTH_COST * depth
            if (score, depth) < (best[0] + DEPTH_COST * best[1], best[1]):
                best = (node.load, depth, node.url, list(path))
        return best[2], best[3]

    def _start(self, stream: Stream, origin: Origin, *, switch: bool = False) -> EdgePull:
        name = stream.name
        source, path = self.choose_source(name, origin)
        self.attempts += 1
        pull = EdgePull(
            stream=stream,
            source=source,
            path=path,
            node_url=self.node_url,
            secret=self.secret,
            certificate=self.server.certificate,
            bind_ip=self._bind_ip,
            http=self.http,
            max_bitrate=self.config.max_bitrate,
            keyframe_interval=self.config.keyframe_interval,
            on_attach=self._attached,
            on_end=self._ended,
        )
        if switch:
            self.switching[name] = pull
        else:
            self.pulls[name] = pull
            stream.pull = pull
        log.info("pulling %r from %s", name, source)
        pull.signalled = asyncio.get_running_loop().create_task(self._signal(pull))
        return pull

    async def _signal(self, pull: EdgePull) -> None:
        try:
            await pull.signal()
        except PullError as exc:
            pull.error = exc
            pull.fail(exc.detail)

    def _attached(self, pull: EdgePull) -> None:
        """A pull's DTLS is up: it feeds the stream from now on (a switch retires the old)."""
        name = pull.stream.name
        if self.switching.get(name) is not pull:
            return
        del self.switching[name]
        old = self.pulls.get(name)
        self.pulls[name] = pull
        pull.stream.pull = pull
        if old is not None and old is not pull:
            old.close(f"switched to {pull.source}")

    def _ended(self, pull: EdgePull, reason: str) -> None:
        name = pull.stream.name
        if self.switching.get(name) is pull:
            del self.switching[name]
        if self.pulls.get(name) is not pull:
            return
        del self.pulls[name]
        if pull.stream.pull is pull:
            pull.stream.pull = None
        if pull.state == "failed":
            _, delay = self.backoff.get(name, (0.0, 0.0))
            delay = min(BACKOFF_MAX, delay * 2) if delay else BACKOFF_FIRST
            self.backoff[name] = (time.monotonic() + delay, delay)
            if pull.error is not None:
                self.errors[name] = pull.error
            log.warning("pull of %r failed (%s); retry in %.0f s", name, reason, delay)
        self.server.release(pull.stream)

    # -- WHEP -----------------------------------------------------------------------------------

    async def before_play(self, request: web.Request, name: str) -> str | None:
        """Before a viewer is admitted here: a URL to redirect it to (``--cluster-redirect``),
        or None once the stream is, or is being, fed here (a pull started when another node
        publishes it). Raises ProblemError: 503 without the registry or the origin, 502 when
        the source refuses this node."""
        redirect = self._redirect(request, name)
        if redirect is not None:
            return redirect
        stream = self.server.streams.get(name)
        if stream is not None and (stream.publisher is not None or stream.pull is not None):
            return None
        try:
            origin = await self.registry.origin(name)
        except RegistryUnavailable as exc:
            raise ProblemError(
                503,
                "Cluster registry unavailable",
                f"this node cannot look up which node publishes {name!r}: its registry "
                f"(Redis) does not answer ({exc}). Streams already served here go on; try "
                "again in a few seconds.",
                headers={"Retry-After": str(REGISTRY_RETRY_AFTER)},
                reason="registry",
            ) from None
        if origin is None or origin.node == self.node_url:
            return None  # not live anywhere: the viewer waits here, the heartbeat pulls later
        stream = self.server._stream(name)
        if stream.publisher is not None:
            return None
        pull = stream.pull if isinstance(stream.pull, EdgePull) else None
        if pull is None:
            retry_at, _ = self.backoff.get(name, (0.0, 0.0))
            if time.monotonic() < retry_at:
                self._refused(name, self.errors.get(name))
                return None
            pull = self._start(stream, origin)
        if pull.signalled is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pull.signalled), SIGNAL_TIMEOUT + 1)
        if pull.error is not None:
            self._refused(name, pull.error)
            raise ProblemError(
                503,
                "Stream source unreachable",
                f"this node cannot pull {name!r} from {pull.source}: {pull.error.detail}. "
                "Try again in a few seconds.",
                headers={"Retry-After": str(REGISTRY_RETRY_AFTER)},
                reason="source",
            )
        return None

    def _refused(self, name: str, error: PullError | None) -> None:
        if error is not None and error.status in (401, 403):
            raise ProblemError(
                502,
                "The stream's source refused this node",
                f"the node that serves {name!r} refused to let this node pull it "
                f"({error.detail}); every node of the cluster needs the same --cluster-secret",
                reason="node_refused",
            )

    def _redirect(self, request: web.Request, name: str) -> str | None:
        if not self.config.cluster_redirect or "redirected" in request.query:
            return None
        fresh = [n for n in self.nodes if time.time() - n.time < NODE_TTL]
        others = [n for n in fresh if n.url != self.node_url]
        if not others:
            return None
        best = min(others, key=lambda n: n.load)
        if best.load + REDIRECT_MARGIN >= self.load():
            return None
        query = [(k, v) for k, v in request.query.items() if k != "redirected"]
        query.append(("redirected", "1"))
        return f"{best.url}/whep/{name}?{urllib.parse.urlencode(query)}"

    def node_session(self, session_id: str, node: str) -> None:
        self.node_sessions[session_id] = node

    # -- API ------------------------------------------------------------------------------------

    def describe(self, visible: set[str] | None = None) -> dict[str, Any]:
        """``GET /api/cluster``: the nodes as of the last heartbeat, this node's pulls."""
        now = time.time()
        for sid in [s for s in self.node_sessions if s not in self.server.sessions]:
            del self.node_sessions[sid]

        def shown(names: list[str]) -> list[str]:
            return sorted(n for n in names if visible is None or n in visible)

        nodes = []
        listed = self.nodes if self.available else []
        if not any(n.url == self.node_url for n in listed):
            listed = [self.record(), *listed]
        for node in sorted(listed, key=lambda n: n.url):
            streams = {k: v for k, v in node.streams.items() if k in shown(list(node.streams))}
            nodes.append(
                {
                    "url": node.url,
                    "self": node.url == self.node_url,
                    "streams": sorted(streams),
                    "stream_roles": streams,
                    "viewers": node.viewers,
                    "sessions": node.sessions,
                    "load": node.load,
                    "cpu_percent": node.cpu_percent,
                    "age_s": round(max(0.0, now - node.time), 1),
                }
            )
        mono = time.monotonic()
        pulls = [
            p.describe(mono)
            for p in (*self.pulls.values(), *self.switching.values())
            if visible is None or p.stream.name in visible
        ]
        retrying = {
            name: round(max(0.0, at - mono), 1)
            for name, (at, _) in self.backoff.items()
            if visible is None or name in visible
        }
        return {
            "enabled": True,
            "node": self.node_url,
            "registry": "ok" if self.available else "unavailable",
            "registry_error": self.registry_error or None,
            "nodes": nodes,
            "pulls": pulls,
            "retrying": retrying,
            "pull_attempts": self.attempts,
        }


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url
