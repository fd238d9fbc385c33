"""One worker of ``relaycast serve --workers N``: a whole relaycast server (its own event
loop, MediaServer, HTTP app) wired to its peers by :class:`WorkerNode`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import signal
from typing import IO

from aiohttp import web

from relaycast.app import ServerInfo, run
from relaycast.config import Config
from relaycast.http.signalling import SERVER_KEY
from relaycast.http.tls import ServerTls
from relaycast.workers.api import WorkerApi
from relaycast.workers.links import PeerLinks
from relaycast.workers.plan import WorkerPlan
from relaycast.workers.relay import RELAY_TYPES, Relay
from relaycast.workers.steering import Steering

log = logging.getLogger(__name__)

LINK_TIMEOUT = 5.0  # a starting worker waits this long for its links to every peer (s)


def worker_config(config: Config, count: int) -> Config:
    """The settings of one of ``count`` workers: the server-wide caps (sessions, viewers per
    stream) split evenly, rounded up; per-address limits stay as set (docs/security.md)."""
    return dataclasses.replace(
        config,
        max_sessions=max(1, math.ceil(config.max_sessions / count)),
        max_viewers_per_stream=max(1, math.ceil(config.max_viewers_per_stream / count)),
    )


class WorkerNode:
    """:class:`relaycast.app.RunHooks` of a worker: steering, relay, links, internal site."""

    def __init__(self, plan: WorkerPlan, tls: ServerTls | None) -> None:
        self.plan = plan
        self.tls = tls
        self.links: PeerLinks | None = None
        self.relay: Relay | None = None
        self.steering: Steering | None = None

    def prepare(self, app: web.Application) -> None:
        plan = self.plan
        server = app[SERVER_KEY]
        server.session_prefix = plan.session_prefix
        server.shared_ports = True
        server.ice.ufrag_prefix = plan.ufrag_prefix
        links = self.links = PeerLinks(
            plan.index, plan.count, plan.link_path, self._message, self._up, self._down
        )
        relay = self.relay = Relay(plan.index, plan.count, server, links.send)
        steering = self.steering = Steering(plan, server, links, relay)
        server.forwarder_factory = relay.forwarder
        server.stream_listeners.append(relay.stream_changed)
        server.on_tick.append(relay.tick)
        server.ice.foreign = steering.foreign
        api = WorkerApi(steering, app)
        app.middlewares.append(steering.middleware)
        app.middlewares.append(api.middleware)

        async def lifetime(app: web.Application) -> object:
            links.start()
            if not await links.wait_connected(LINK_TIMEOUT):
                log.warning("worker %d: not every peer is reachable yet", plan.index)
            yield
            links.close()
            await steering.close()

        app.cleanup_ctx.append(lifetime)  # type: ignore[arg-type]

    def sites(self, runner: web.AppRunner) -> list[web.BaseSite]:
        path = self.plan.http_path(self.plan.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return [web.UnixSite(runner, str(path))]

    def _message(self, sender: int, message: bytes, fds: list[int]) -> None:
        if message[:1] in RELAY_TYPES:
            assert self.relay is not None
            self.relay.on_message(sender, message)
            for fd in fds:
                os.close(fd)
        else:
            assert self.steering is not None
            self.steering.on_message(sender, message, fds)

    def _up(self, peer: int) -> None:
        if self.relay is not None:
            self.relay.peer_up(peer)

    def _down(self, peer: int) -> None:
        if self.relay is not None:
            self.relay.peer_down(peer)


def _raise_fd_limit() -> None:
    """Every validated peer address has a socket of its own: take the hard limit."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(config: Config, plan: WorkerPlan, tls: ServerTls | None, ready: IO[str]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)

    def announce(info: ServerInfo) -> None:
        ready.write(json.dumps(dataclasses.asdict(info)) + "\n")
        ready.flush()

    with contextlib.suppress(asyncio.CancelledError):
        await run(config, announce, WorkerNode(plan, tls))


def worker_main(config: Config, plan: WorkerPlan, tls: ServerTls | None, ready_fd: int) -> int:
    """The body of a forked worker process; returns its exit code."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # run() handles it when TLS is on
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _raise_fd_limit()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s w{plan.index} %(name)s: %(message)s")
        )
    with os.fdopen(ready_fd, "w") as ready:
        try:
            asyncio.run(_serve(worker_config(config, plan.count), plan, tls, ready))
        except OSError as exc:
            log.error("worker %d cannot serve: %s", plan.index, exc)
            return 1
        except Exception:
            log.exception("worker %d failed", plan.index)
            return 1
    return 0
