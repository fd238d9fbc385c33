"""WHEP endpoint: ``POST /whep/{stream}``; viewers may arrive before the streamer."""

from __future__ import annotations

from aiohttp import web

from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import (
    created,
    delete_session,
    media_server,
    patch_session,
    read_offer,
)
from relaycast.sdp import NegotiationError

ROLE = "subscriber"


async def post(request: web.Request) -> web.Response:
    stream = require_stream_name(request.match_info["stream"])
    offer = await read_offer(request)
    try:
        subscriber = media_server(request).play(stream, offer)
    except NegotiationError as exc:
        raise ProblemError(exc.status, "Cannot play this stream here", str(exc)) from exc
    return created(request, subscriber, f"/whep/{stream}/{subscriber.id}")


async def patch(request: web.Request) -> web.Response:
    return await patch_session(request, ROLE)


async def delete(request: web.Request) -> web.Response:
    return await delete_session(request, ROLE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whep/{stream}", post)
    app.router.add_patch("/whep/{stream}/{session}", patch)
    app.router.add_delete("/whep/{stream}/{session}", delete)
