"""The cluster's registry in Redis: which nodes are up, their load, what each serves, and the
origin of each stream.

Keys (``DB`` from the ``--cluster`` URL):

=================================  =======================================  ==============
key                                value                                    expiry
=================================  =======================================  ==============
``relaycast:node:<node URL>``      JSON node record (below)                 ``NODE_TTL``
``relaycast:nodes``                sorted set: node URL -> last heartbeat   members pruned
``relaycast:origin:<stream>``      JSON ``{"node", "since", "sig"}``        ``ORIGIN_TTL``
=================================  =======================================  ==============

A node writes its record and refreshes the origin keys of the streams published on it every
``HEARTBEAT`` seconds; a node that stops (or loses Redis) disappears when they expire. A node
record: ``url``, ``time``, ``sessions``, ``viewers``, ``max_sessions``, ``load``,
``cpu_percent`` and ``streams`` (name -> ``role`` origin/edge, ``live``, ``viewers``, ``depth``,
``path`` = the chain of nodes from the origin to this one). Every record is signed with the
cluster secret when there is one (:func:`relaycast.cluster.auth.sign_record`); records with a
bad signature are ignored.

redis-py (``pip install relaycast[cluster]``) is imported only when a registry is made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from relaycast.cluster.auth import sign_record, verify_record

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between a node's registry writes
NODE_TTL = 5.0  # a node record expires this long after the last heartbeat
ORIGIN_TTL = 5.0  # an origin key expires this long after its node last refreshed it
COMMAND_TIMEOUT = 1.5  # seconds for one registry round trip before Redis counts as away
PREFIX = "relaycast:"

_T = TypeVar("_T")

# Refresh our claim on an origin key: extend it when it names us, take it back when it is gone
# (Redis restarted, or it expired while Redis was away); answer the current value.
_REFRESH = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
local ok, rec = pcall(cjson.decode, v)
if ok and type(rec) == 'table' and rec['node'] == ARGV[3] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""
# Delete an origin key only while it still names us (a newer publisher elsewhere keeps it).
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, rec = pcall(cjson.decode, v)
if ok and type(rec) == 'table' and rec['node'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RegistryUnavailable(Exception):
    """Redis cannot be reached (or answered with an error); the message says what happened."""


@dataclass
class NodeRecord:
    """One node as its last heartbeat described it."""

    url: str
    time: float
    sessions: int = 0
    viewers: int = 0
    max_sessions: int = 1
    load: float = 0.0
    cpu_percent: float = 0.0
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "time": self.time,
            "sessions": self.sessions,
            "viewers": self.viewers,
            "max_sessions": self.max_sessions,
            "load": self.load,
            "cpu_percent": self.cpu_percent,
            "streams": self.streams,
        }


@dataclass(frozen=True)
class Origin:
    node: str
    since: float


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class Registry:
    """This node's view of Redis. Every method raises :class:`RegistryUnavailable` when Redis
    does not answer within :data:`COMMAND_TIMEOUT`; redis-py reconnects by itself on the next
    call once Redis is back."""

    def __init__(self, url: str, node_url: str, secret: str | None) -> None:
        self.url = url
        self.node_url = node_url
        self.secret = secret
        self._redis: Redis | None = None

    async def connect(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # the optional extra is missing
            raise RuntimeError(
                "--cluster needs redis-py: pip install 'relaycast[cluster]'"
            ) from exc
        self._redis = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_timeout=COMMAND_TIMEOUT,
            decode_responses=True,
            health_check_interval=5,
        )

    async def close(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception:  # closing a connection to a Redis that is gone
                log.debug("closing the registry connection failed", exc_info=True)
            self._redis = None

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RegistryUnavailable("the registry is not connected")
        return self._redis

    async def _call(self, what: str, make: Callable[[], Awaitable[_T]]) -> _T:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(COMMAND_TIMEOUT + 0.5):
                return await make()
        except (RedisError, OSError, TimeoutError) as exc:
            raise RegistryUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    # -- nodes ----------------------------------------------------------------------------------

    async def heartbeat(self, record: NodeRecord, origins: list[str]) -> dict[str, Origin | None]:
        """Write our node record and refresh our claims on ``origins``; returns, per stream of
        ``origins``, the origin the registry now names (another node: someone took it over)."""
        data = record.as_json()
        data["sig"] = sign_record(self.secret, "node", _canonical(record.as_json()))
        ttl_ms = int(NODE_TTL * 1000)
        mine = self._origin_value(time.time())

        async def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(f"{PREFIX}node:{record.url}", json.dumps(data), px=ttl_ms)
            pipe.zadd(f"{PREFIX}nodes", {record.url: record.time})
            for name in origins:
                pipe.eval(
                    _REFRESH, 1, f"{PREFIX}origin:{name}", mine, str(int(ORIGIN_TTL * 1000)),
                    self.node_url,
                )  # fmt: skip
            result: list[Any] = await pipe.execute()
            return result

        results = await self._call("heartbeat", run)
        return {
            name: self._parse_origin(name, v) for name, v in zip(origins, results[2:], strict=True)
        }

    async def nodes(self) -> list[NodeRecord]:
        """The nodes whose record has not expired (stale index entries are pruned)."""

        async def run() -> list[NodeRecord]:
            urls: list[str] = await self.redis.zrange(f"{PREFIX}nodes", 0, -1)
            if not urls:
                return []
            values: list[str | None] = await self.redis.mget([f"{PREFIX}node:{u}" for u in urls])
            out: list[NodeRecord] = []
            gone: list[str] = []
            for url, value in zip(urls, values, strict=True):
                record = self._parse_node(url, value)
                if record is None:
                    gone.append(url)
                else:
                    out.append(record)
            if gone:
                await self.redis.zrem(f"{PREFIX}nodes", *gone)
            return out

        return await self._call("list nodes", run)

    def _parse_node(self, url: str, value: str | None) -> NodeRecord | None:
        if value is None:
            return None
        try:
            data = json.loads(value)
            signature = data.pop("sig", None)
            if not verify_record(self.secret, signature, "node", _canonical(data)):
                log.warning("ignoring the registry record of %s: bad signature", url)
                return None
            return NodeRecord(
                url=str(data["url"]),
                time=float(data["time"]),
                sessions=int(data.get("sessions", 0)),
                viewers=int(data.get("viewers", 0)),
                max_sessions=max(1, int(data.get("max_sessions", 1))),
                load=float(data.get("load", 0.0)),
                cpu_percent=float(data.get("cpu_percent", 0.0)),
                streams=dict(data.get("streams", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed registry record for %s", url)
            return None

    async def forget_node(self) -> None:
        """This node stops: take its record out now rather than at expiry."""

        async def run() -> None:
            await self.redis.delete(f"{PREFIX}node:{self.node_url}")
            await self.redis.zrem(f"{PREFIX}nodes", self.node_url)

        await self._call("forget node", run)

    # -- origins --------------------------------------------------------------------------------

    def _origin_value(self, since: float) -> str:
        node = self.node_url
        sig = sign_record(self.secret, "origin", node, repr(since))
        return json.dumps({"node": node, "since": since, "sig": sig})

    def _parse_origin(self, stream: str, value: object) -> Origin | None:
        if not isinstance(value, str):
            return None
        try:
            data = json.loads(value)
            node, since = str(data["node"]), float(data["since"])
        except (ValueError, KeyError, TypeError):
            return None
        if not verify_record(self.secret, data.get("sig"), "origin", node, repr(since)):
            log.warning("ignoring the origin record of %r: bad signature", stream)
            return None
        return Origin(node, since)

    async def claim_origin(self, stream: str) -> None:
        """A publisher went live here: this node is the stream's origin (the newest wins)."""
        value = self._origin_value(time.time())
        await self._call(
            "claim origin",
            lambda: self.redis.set(f"{PREFIX}origin:{stream}", value, px=int(ORIGIN_TTL * 1000)),
        )

    async def release_origin(self, stream: str) -> None:
        """The publisher here ended: drop the origin key unless another node holds it now."""

        async def run() -> None:
            await self.redis.eval(_RELEASE, 1, f"{PREFIX}origin:{stream}", self.node_url)  # type: ignore[misc]

        await self._call("release origin", run)

    async def origins(self, streams: list[str]) -> dict[str, Origin | None]:
        """The origin of each of ``streams`` (None: nobody publishes it)."""
        if not streams:
            return {}

        async def run() -> list[str | None]:
            values: list[str | None] = await self.redis.mget(
                [f"{PREFIX}origin:{s}" for s in streams]
            )
            return values

        values = await self._call("look up origins", run)
        return {s: self._parse_origin(s, v) for s, v in zip(streams, values, strict=True)}

    async def origin(self, stream: str) -> Origin | None:
        return (await self.origins([stream]))[stream]
