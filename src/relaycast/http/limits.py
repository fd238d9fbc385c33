"""Admission control: what one anonymous client may cost the server.

Every viewer is anonymous, so ``POST /whep/{stream}`` is limited per client address (a rate
as a token bucket, and a number of live sessions), per stream, in total, and in how many
streams viewers may bring into existence.  Wrong publish keys are limited per client address
too.  Refusals are problem documents (RFC 9457) with ``Retry-After`` (RFC 9110 §10.2.3):
429 Too Many Requests (RFC 6585 §4) for what one client caused, 503 Service Unavailable
(RFC 9110 §15.6.4) when the server as a whole is full.

The client address is ``request.remote``, or with ``trust_proxy`` the last
``X-Forwarded-For`` entry (the one the proxy added).  IPv6 addresses count per /64, the
block one subscriber usually gets.  Live sessions per address are counted without hooks in
the media plane: the sessions admitted here are remembered (session id -> address) and
forgotten once they are no longer in ``MediaServer.sessions``.  Everything remembered per
address is swept at most once a second and capped at :data:`MAX_TRACKED` addresses.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from relaycast.config import Config
from relaycast.http.problems import ProblemError
from relaycast.media.server import MediaServer

__all__ = [
    "ADMISSION_KEY",
    "CAPACITY_RETRY_AFTER",
    "MAX_TRACKED",
    "REASONS",
    "Admission",
    "address_group",
]

#: Refusal reasons, the keys of :attr:`Admission.refused`.
REASONS = (
    "rate",
    "per_ip",
    "total",
    "per_stream",
    "streams",
    "unknown_stream",
    "bad_key",
    "bad_key_rate",
)
#: Seconds a client refused for capacity is asked to wait (sessions end within the
#: handshake or consent timeout, so capacity comes back in seconds, not minutes).
CAPACITY_RETRY_AFTER = 5
#: Addresses with a token bucket, and addresses with failed keys, remembered at most (least
#: recently used dropped first).  A bucket is only kept until it would be full again (2 s with
#: the defaults) and failures for one window, so this is many more than a busy server sees.
MAX_TRACKED = 16_384
#: Seconds between sweeps of what is remembered per address.
SWEEP_INTERVAL = 1.0

_T = TypeVar("_T")


def publisher_reserve(max_sessions: int) -> int:
    """Sessions kept for publishers (key holders): anonymous viewers from many addresses can
    fill the server only up to ``max_sessions`` minus this (5 %, at least 1 when possible)."""
    return min(max(1, max_sessions // 20), max_sessions - 1)


def address_group(address: str) -> str:
    """The unit limits count by: an IPv4 address, or the /64 of an IPv6 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)
class _Failures:
    """Wrong keys from one address in the window that started at ``start``."""

    start: float
    count: int


class Admission:
    """The admission limits of one server; ``app[ADMISSION_KEY]``.

    ``refused`` counts refusals by reason (:data:`REASONS`), for the metrics.
    """

    def __init__(
        self, config: Config, server: MediaServer, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.server = server
        self.clock = clock
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._buckets: dict[str, _Bucket] = {}  # client -> WHEP token bucket (LRU order)
        self._failures: dict[str, _Failures] = {}  # client -> wrong keys this window (LRU)
        self._owner: dict[str, str] = {}  # admitted viewer session id -> client
        self._viewers: dict[str, set[str]] = {}  # client -> admitted viewer session ids
        self._swept = clock()

    # -- who is asking ------------------------------------------------------------------

    def client(self, request: web.Request) -> str:
        """The client address limits count by (see :func:`address_group`)."""
        address = request.remote or "unknown"
        if self.config.trust_proxy:
            forwarded = request.headers.getall("X-Forwarded-For", [])
            entries = [e.strip() for value in forwarded for e in value.split(",") if e.strip()]
            if entries:
                address = entries[-1]
        return address_group(address)

    # -- viewers (WHEP) -----------------------------------------------------------------

    def take_token(self, client: str) -> None:
        """Spend one of *client*'s WHEP tokens, or refuse with 429 and the seconds until the
        next token (token bucket: ``whep_rate`` per second, ``whep_burst`` at most)."""
        now = self.clock()
        self._sweep(now)
        rate, burst = self.config.whep_rate, float(self.config.whep_burst)
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(burst, now)
        else:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        self._buckets[client] = bucket  # most recently used last
        _trim(self._buckets)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = max(1, math.ceil((1.0 - bucket.tokens) / rate))
        self._refuse(
            "rate",
            429,
            "Too Many Requests",
            f"this address may start {_num(rate)} viewer sessions per second "
            f"(bursts of {self.config.whep_burst}); retry in {wait} s",
            wait,
        )

    def check_viewer(self, stream: str, client: str) -> None:
        """Refuse a new viewer of *stream* that any limit forbids; call it again right before
        the session is made (no ``await`` in between), as other requests run meanwhile."""
        config, server = self.config, self.server
        if config.stream_keys and stream not in config.stream_keys:
            self._refuse(
                "unknown_stream",
                404,
                "Unknown stream",
                f"there is no stream {stream!r} on this server; check the watch link",
            )
        if self.viewers_from(client) >= config.max_sessions_per_ip:
            self._refuse(
                "per_ip",
                429,
                "Too Many Sessions",
                f"this address already has {config.max_sessions_per_ip} viewer sessions, the "
                "most allowed; close one (DELETE its session URL) or wait for it to end",
                CAPACITY_RETRY_AFTER,
            )
        self._check_total(publisher_reserve(config.max_sessions))
        live = server.streams.get(stream)
        if live is None:
            if len(server.streams) >= config.max_streams:
                self._refuse(
                    "streams",
                    503,
                    "Too Many Streams",
                    f"the server already has {config.max_streams} streams, the most allowed; "
                    f"{stream!r} can be watched once its streamer is live or another stream ends",
                    CAPACITY_RETRY_AFTER,
                )
        elif len(live.subscribers) >= config.max_viewers_per_stream:
            self._refuse(
                "per_stream",
                503,
                "Stream Full",
                f"{stream!r} already has {config.max_viewers_per_stream} viewers, the most "
                "allowed; try again later",
                CAPACITY_RETRY_AFTER,
            )

    def admitted(self, session_id: str, client: str) -> None:
        """Remember that *client* owns the viewer session *session_id*."""
        self._owner[session_id] = client
        self._viewers.setdefault(client, set()).add(session_id)

    def viewers_from(self, client: str) -> int:
        """Live viewer sessions admitted for *client* (ended ones are forgotten here)."""
        ids = self._viewers.get(client)
        if not ids:
            return 0
        ended = [sid for sid in ids if sid not in self.server.sessions]
        for sid in ended:
            ids.discard(sid)
            self._owner.pop(sid, None)
        if not ids:
            del self._viewers[client]
        return len(ids)

    # -- publishers (WHIP) --------------------------------------------------------------

    def check_publisher(self) -> None:
        """Refuse a new publisher when the server holds ``max_sessions`` already."""
        self._check_total()

    def check_key_lockout(self, client: str) -> None:
        """429 once *client* has sent ``bad_key_limit`` wrong keys in its current window of
        ``bad_key_window`` seconds (which starts at its first wrong key), for the rest of it."""
        failures = self._failures.get(client)
        if failures is None or failures.count < self.config.bad_key_limit:
            return
        wait = failures.start + self.config.bad_key_window - self.clock()
        if wait <= 0:
            return
        seconds = max(1, math.ceil(wait))
        self._refuse(
            "bad_key_rate",
            429,
            "Too Many Wrong Keys",
            f"this address sent {self.config.bad_key_limit} wrong publish keys within "
            f"{_num(self.config.bad_key_window)} s; retry in {seconds} s with the right key",
            seconds,
        )

    def key_failed(self, client: str) -> None:
        """Record one wrong publish key from *client* (counted as ``refused["bad_key"]``)."""
        self.refused["bad_key"] += 1
        now = self.clock()
        self._sweep(now)
        failures = self._failures.pop(client, None)
        if failures is None or now - failures.start >= self.config.bad_key_window:
            failures = _Failures(now, 0)
        failures.count += 1
        self._failures[client] = failures  # most recently used last
        _trim(self._failures)

    # -- internals ----------------------------------------------------------------------

    def _check_total(self, reserve: int = 0) -> None:
        if len(self.server.sessions) >= self.config.max_sessions - reserve:
            self._refuse(
                "total",
                503,
                "Server Full",
                f"the server already has {self.config.max_sessions} sessions, the most "
                "allowed; try again later",
                CAPACITY_RETRY_AFTER,
            )

    def _refuse(
        self, reason: str, status: int, title: str, detail: str, retry_after: int | None = None
    ) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        raise ProblemError(status, title, detail, headers=headers, reason=reason)

    def _sweep(self, now: float) -> None:
        """Forget full buckets, failures out of the window and ended sessions (once a second)."""
        if now - self._swept < SWEEP_INTERVAL:
            return
        self._swept = now
        refill = self.config.whep_burst / self.config.whep_rate
        for client in [c for c, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[client]  # it would be full again: same as no bucket
        window = self.config.bad_key_window
        for client in [c for c, f in self._failures.items() if now - f.start >= window]:
            del self._failures[client]
        for client in list(self._viewers):
            self.viewers_from(client)  # forgets the sessions that ended


def _trim(table: dict[str, _T]) -> None:
    """Drop the least recently used entries beyond :data:`MAX_TRACKED`."""
    while len(table) > MAX_TRACKED:
        del table[next(iter(table))]


def _num(value: float) -> str:
    return f"{value:g}"


ADMISSION_KEY = web.AppKey("admission", Admission)
