"""WHEP endpoint: ``POST /whep/{stream}``; viewers may arrive before the streamer.

Viewers need no key, so every POST passes the admission limits first
(:mod:`relaycast.http.limits`).  A private stream's viewers need a viewer token
(:mod:`relaycast.http.tokens`): none is 401, a bad one 403; the rate limit counts first, so
guessing tokens costs the same as opening sessions.  ``PATCH`` and ``DELETE`` on a session
stay keyless: the session URL, with its unguessable random id, is the capability to change or
end that one session (it is only ever sent to the viewer that made it).
"""

from __future__ import annotations

from aiohttp import web

from relaycast.cluster.http import CLUSTER_KEY, is_node_request, node_play
from relaycast.http import layers
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
from relaycast.http.tokens import require_viewer_token
from relaycast.sdp import NegotiationError

ROLE = "subscriber"


async def post(request: web.Request) -> web.Response:
    """A new viewer: rate and capacity checked before the body is read, capacity again
    right before the session is made (other requests run while the body arrives)."""
    stream = require_stream_name(request.match_info["stream"])
    cluster = request.app.get(CLUSTER_KEY)
    if cluster is not None and is_node_request(request):  # another node pulls (cluster/http.py)
        return await node_play(request, cluster, stream)
    admission = request.app[ADMISSION_KEY]
    client = admission.client(request)
    admission.take_token(client)
    require_viewer_token(request, media_server(request).config, stream)
    admission.check_viewer(stream, client)
    offer = await read_offer(request)
    if cluster is not None:  # a stream published on another node: pull it (or redirect)
        redirect = await cluster.before_play(request, stream)
        if redirect is not None:
            raise web.HTTPTemporaryRedirect(redirect)
    admission.check_viewer(stream, client)
    try:
        subscriber = media_server(request).play(stream, offer)
    except NegotiationError as exc:
        raise ProblemError(exc.status, "Cannot play this stream here", str(exc)) from exc
    admission.admitted(subscriber.id, client)
    location = f"/whep/{stream}/{subscriber.id}"
    response = created(request, subscriber, location)
    response.headers.add("Link", layers.link_header(location))  # the layer extension
    return response


async def patch(request: web.Request) -> web.Response:
    """Trickle ICE or ICE restart; the session URL is the capability (no key)."""
    return await patch_session(request, ROLE)


async def delete(request: web.Request) -> web.Response:
    """End the viewer session; the session URL is the capability (no key)."""
    return await delete_session(request, ROLE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whep/{stream}", post)
    app.router.add_patch("/whep/{stream}/{session}", patch)
    app.router.add_delete("/whep/{stream}/{session}", delete)
    layers.add_routes(app)
