"""The WHEP layer extension: a viewer (or a player) picks its simulcast layer.

The WHEP ``201`` carries ``Link: <{session}/layer>; rel="urn:ietf:params:whep:ext:core:layer"``.
``POST`` there with ``{"mediaId": "<mid>", "encodingId": "<rid>"}`` pins a layer, ``{}``
returns to automatic selection (both ``204``); an unknown mid or rid is a ``422``. ``GET``
answers the selection's state (media/layers.py, ``Subscriber.layer_status``; ``top``: a cluster
node's pull, cluster/http.py)::

    {"mode": "auto"|"pinned"|"top", "current": rid|null, "target": rid|null, "reason": str,
     "estimate_bps": int|null, "layers": [{"rid", "width", "height", "fps", "bitrate_bps",
     "active"}]}

Like ``PATCH``/``DELETE`` of a WHEP session, the unguessable session URL is the capability:
no key.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from relaycast.http.problems import ProblemError
from relaycast.http.signalling import find_session
from relaycast.media.subscriber import Subscriber

REL = "urn:ietf:params:whep:ext:core:layer"
MAX_BODY = 4096


def link_header(session_url: str) -> str:
    """The ``Link`` value a WHEP ``201`` carries for ``session_url``."""
    return f'<{session_url}/layer>; rel="{REL}"'


def _subscriber(request: web.Request) -> Subscriber:
    session = find_session(request, "subscriber")
    assert isinstance(session, Subscriber)
    return session


async def get_layer(request: web.Request) -> web.Response:
    subscriber = _subscriber(request)
    return web.json_response(subscriber.layer_status(time.monotonic()))


async def post_layer(request: web.Request) -> web.Response:
    subscriber = _subscriber(request)
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "Content Too Large", f"the body is limited to {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ProblemError(400, "Malformed JSON", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ProblemError(400, "Malformed JSON", 'send an object such as {"encodingId": "h"}')
    mid = body.get("mediaId")
    rid = body.get("encodingId")
    if (mid is not None and not isinstance(mid, str)) or (
        rid is not None and not isinstance(rid, str)
    ):
        raise ProblemError(400, "Malformed layer request", "mediaId and encodingId are strings")
    if rid is None and mid is not None:
        raise ProblemError(
            422,
            "Unknown layer",
            'name the layer with "encodingId" (a rid), or send {} for automatic selection',
        )
    try:
        subscriber.pin_layer(mid, rid)
    except ValueError as exc:
        raise ProblemError(422, "Unknown layer", str(exc)) from exc
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/whep/{stream}/{session}/layer", get_layer)
    app.router.add_post("/whep/{stream}/{session}/layer", post_layer)
