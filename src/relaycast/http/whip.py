"""WHIP endpoint (RFC 9725): ``POST /whip/{stream}`` with a Bearer publish key.

``PATCH`` and ``DELETE`` on a publisher session need the stream's key too (RFC 9725 allows
the session resource the same Bearer authentication as the endpoint): otherwise anyone who
learns the session URL could end or restart a live stream.  Wrong keys are limited per client
address (:meth:`relaycast.http.limits.Admission.check_key_lockout`).
"""

from __future__ import annotations

from aiohttp import web

from relaycast.http.limits import ADMISSION_KEY
from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.http.signalling import (
    created,
    delete_session,
    media_server,
    patch_session,
    read_offer,
)
from relaycast.media.server import StreamBusy
from relaycast.sdp import NegotiationError

ROLE = "publisher"


def _check_key(request: web.Request, stream: str) -> None:
    """429 while the client address is locked out for wrong keys, 401 without a key, 403
    with a wrong one (counted against the address); the comparison is constant-time."""
    admission = request.app[ADMISSION_KEY]
    client = admission.client(request)
    admission.check_key_lockout(client)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProblemError(
            401,
            "Publish key required",
            "send the stream's publish key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="relaycast"'},
        )
    if not media_server(request).config.check_key(stream, token.strip()):
        admission.key_failed(client)
        raise ProblemError(403, "Wrong publish key", f"that key does not publish {stream!r}")


async def post(request: web.Request) -> web.Response:
    stream = require_stream_name(request.match_info["stream"])
    _check_key(request, stream)
    admission = request.app[ADMISSION_KEY]
    admission.check_publisher()
    offer = await read_offer(request)
    admission.check_publisher()
    try:
        publisher = media_server(request).publish(stream, offer)
    except NegotiationError as exc:
        raise ProblemError(exc.status, "Unsupported offer", str(exc)) from exc
    except StreamBusy as exc:
        raise ProblemError(
            409,
            "Stream already live",
            f"{stream!r} already has a live publisher; stop it first or use another stream name",
        ) from exc
    return created(request, publisher, f"/whip/{stream}/{publisher.id}")


async def patch(request: web.Request) -> web.Response:
    """Trickle ICE or ICE restart: needs the stream's publish key (401/403)."""
    _check_key(request, require_stream_name(request.match_info["stream"]))
    return await patch_session(request, ROLE)


async def delete(request: web.Request) -> web.Response:
    """Stop publishing: needs the stream's publish key (401/403)."""
    _check_key(request, require_stream_name(request.match_info["stream"]))
    return await delete_session(request, ROLE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{stream}", post)
    app.router.add_patch("/whip/{stream}/{session}", patch)
    app.router.add_delete("/whip/{stream}/{session}", delete)
