"""``create_app(config)`` builds and wires everything; nothing lives at module level."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from relaycast.cluster.http import CLUSTER_KEY, add_cluster_routes
from relaycast.config import Config, valid_stream_name
from relaycast.http import api, whep, whip
from relaycast.http.cors import cors_middleware, cors_on_prepare
from relaycast.http.ice_servers import client_ice_servers, ice_link_headers
from relaycast.http.limits import ADMISSION_KEY, Admission
from relaycast.http.pages import add_page_routes
from relaycast.http.problems import problem_middleware
from relaycast.http.signalling import MAX_SDP_BYTES, SERVER_KEY
from relaycast.http.tls import ServerTls, server_tls
from relaycast.media.server import MediaServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """Where a started server listens (ports are real even when 0 was asked for)."""

    http_port: int
    udp_port: int
    candidates: list[str]
    #: SHA-256 of the served certificate (``AB:CD:...``) when TLS is on
    tls_fingerprint: str | None = None
    tls_self_signed: bool = False


def _path_stream(path: str) -> str:
    """The stream named by ``/whip/{stream}...`` or ``/whep/{stream}...``, else ``relaycast``
    (the name put into TURN usernames)."""
    parts = path.split("/")
    if len(parts) > 2 and valid_stream_name(parts[2]):
        return parts[2]
    return "relaycast"


def create_app(config: Config) -> web.Application:
    """The aiohttp application with its MediaServer, started and stopped with the app."""

    def links_for(request: web.Request) -> list[str]:
        return ice_link_headers(config, _path_stream(request.path))

    def page_config(request: web.Request, stream: str) -> Mapping[str, object]:
        return {"iceServers": client_ice_servers(config, stream), "https": request.secure}

    app = web.Application(
        middlewares=[problem_middleware, cors_middleware(ice_links_for=links_for)],
        client_max_size=MAX_SDP_BYTES * 2,
    )
    server = MediaServer(config)
    app.on_response_prepare.append(cors_on_prepare)  # streamed responses (server-sent events)
    app[SERVER_KEY] = server
    app[ADMISSION_KEY] = Admission(config, server)
    app[api.STATS_KEY] = api.StreamStats(server)
    whip.add_routes(app)
    whep.add_routes(app)
    api.add_routes(app)
    add_page_routes(app, config.web_dir(), page_config)

    async def media_plane(app: web.Application) -> object:
        await server.start()
        yield
        await server.stop()

    app.cleanup_ctx.append(media_plane)  # type: ignore[arg-type]
    add_cluster_routes(app)
    if config.cluster is not None:  # several machines (relaycast.cluster); redis-py only then
        from relaycast.cluster.node import ClusterNode

        cluster = app[CLUSTER_KEY] = ClusterNode(config, server)

        async def cluster_node(app: web.Application) -> object:
            await cluster.start()
            yield
            await cluster.stop()

        app.cleanup_ctx.append(cluster_node)  # type: ignore[arg-type]
    return app


class RunHooks(Protocol):
    """What a worker of ``relaycast serve --workers N`` changes in :func:`run`
    (``relaycast.workers.worker``): the TLS context the supervisor made (one certificate for
    every worker), the app wired for steering and relaying before it starts, the HTTP port
    shared with ``SO_REUSEPORT``, and more sites (the internal one)."""

    tls: ServerTls | None

    def prepare(self, app: web.Application) -> None: ...

    def sites(self, runner: web.AppRunner) -> list[web.BaseSite]: ...


def _reload_on_sighup(tls: ServerTls | None) -> Callable[[], None]:
    """Install a SIGHUP handler reloading the certificate files; returns its remover."""
    if tls is None:
        return lambda: None
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, tls.reload)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (a thread)
        return lambda: None

    def remove() -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)

    return remove


async def run(
    config: Config,
    ready: Callable[[ServerInfo], None] | None = None,
    hooks: RunHooks | None = None,
) -> None:
    """Serve until cancelled (SIGINT/SIGTERM are turned into cancellation by the CLI).

    With TLS configured the site serves HTTPS, and SIGHUP reloads the certificate and key
    files (:class:`relaycast.http.tls.ServerTls`).  A certificate that cannot be used raises
    :class:`relaycast.http.tls.TlsError` (a ConfigError) before anything listens.
    """
    tls = server_tls(config) if hooks is None else hooks.tls
    app = create_app(config)
    if hooks is not None:
        hooks.prepare(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.host,
        config.port,
        ssl_context=tls.context if tls is not None else None,
        reuse_port=True if hooks is not None else None,
    )
    remove_sighup = _reload_on_sighup(tls)
    try:
        await site.start()
        for extra in hooks.sites(runner) if hooks is not None else []:
            await extra.start()
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        http_port = int(addresses[0][1]) if addresses else config.port
        server = app[SERVER_KEY]
        if ready is not None:
            ready(
                ServerInfo(
                    http_port,
                    server.udp_port,
                    list(server.candidates),
                    tls.fingerprint if tls is not None else None,
                    tls.self_signed if tls is not None else False,
                )
            )
        await asyncio.Event().wait()
    finally:
        remove_sighup()
        await runner.cleanup()
