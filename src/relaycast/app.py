"""``create_app(config)`` builds and wires everything; nothing lives at module level."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from relaycast.config import Config
from relaycast.http import api, whep, whip
from relaycast.http.cors import cors_middleware, cors_on_prepare, ice_server_link
from relaycast.http.limits import ADMISSION_KEY, Admission
from relaycast.http.pages import add_page_routes
from relaycast.http.problems import problem_middleware
from relaycast.http.signalling import ICE_LINKS_KEY, MAX_SDP_BYTES, SERVER_KEY
from relaycast.media.server import MediaServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """Where a started server listens (ports are real even when 0 was asked for)."""

    http_port: int
    udp_port: int
    candidates: list[str]


def create_app(config: Config) -> web.Application:
    """The aiohttp application with its MediaServer, started and stopped with the app."""
    links = [ice_server_link(url) for url in config.ice_servers]
    app = web.Application(
        middlewares=[problem_middleware, cors_middleware(ice_link_headers=links)],
        client_max_size=MAX_SDP_BYTES * 2,
    )
    server = MediaServer(config)
    app.on_response_prepare.append(cors_on_prepare)  # streamed responses (server-sent events)
    app[SERVER_KEY] = server
    app[ADMISSION_KEY] = Admission(config, server)
    app[ICE_LINKS_KEY] = links
    app[api.STATS_KEY] = api.StreamStats(server)
    whip.add_routes(app)
    whep.add_routes(app)
    api.add_routes(app)
    add_page_routes(app, config.web_dir())

    async def media_plane(app: web.Application) -> object:
        await server.start()
        yield
        await server.stop()

    app.cleanup_ctx.append(media_plane)  # type: ignore[arg-type]
    return app


async def run(config: Config, ready: Callable[[ServerInfo], None] | None = None) -> None:
    """Serve until cancelled (SIGINT/SIGTERM are turned into cancellation by the CLI)."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    try:
        addresses = [a for a in runner.addresses if isinstance(a, tuple)]
        http_port = int(addresses[0][1]) if addresses else config.port
        server = app[SERVER_KEY]
        if ready is not None:
            ready(ServerInfo(http_port, server.udp_port, list(server.candidates)))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
