"""CORS for the WHIP/WHEP endpoints and the JSON API (Fetch standard, "CORS protocol").

WHIP (RFC 9725 §4.1) and WHEP clients running in browsers on other origins need the
preflight answered and ``Location``/``ETag``/``Link`` exposed.  The ``OPTIONS`` answer may
also carry the STUN/TURN servers as ``Link: <url>; rel="ice-server"`` headers
(RFC 9725 §4.6; earlier WHIP drafts §4.5).

On the CORS paths the middleware turns errors into problem responses itself (see
:func:`relaycast.http.problems.handle_with_problems`), so they carry the CORS headers
whatever the order of the middlewares.  A handler that prepares its own streaming response
(server-sent events) before returning should call :func:`apply_cors_headers` first, or the
app can register :func:`cors_on_prepare` in ``app.on_response_prepare``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from relaycast.http.problems import handle_with_problems

__all__ = [
    "ALLOW_HEADERS",
    "ALLOW_METHODS",
    "CORS_PREFIXES",
    "EXPOSE_HEADERS",
    "apply_cors_headers",
    "cors_middleware",
    "cors_on_prepare",
    "ice_server_link",
    "is_cors_path",
]

CORS_PREFIXES: tuple[str, ...] = ("/whip/", "/whep/", "/api/")
ALLOW_METHODS = "POST, PATCH, DELETE, OPTIONS, GET"
ALLOW_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSE_HEADERS = "Location, ETag, Link, Accept-Patch"
MAX_AGE = "86400"


def is_cors_path(path: str, prefixes: Sequence[str] = CORS_PREFIXES) -> bool:
    """True when *path* is one of the cross-origin endpoints."""
    return path.startswith(tuple(prefixes)) or path.rstrip("/") in {p.rstrip("/") for p in prefixes}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_link(url: str, username: str | None = None, credential: str | None = None) -> str:
    """One ``Link`` header value announcing a STUN/TURN server (RFC 9725 §4.6)::

    <turn:turn.example.net?transport=udp>; rel="ice-server"; username="u";
    credential="p"; credential-type="password"
    """
    value = f'<{url}>; rel="ice-server"'
    if username is not None:
        value += f"; username={_quote(username)}"
    if credential is not None:
        value += f'; credential={_quote(credential)}; credential-type="password"'
    return value


def _set_cors_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", EXPOSE_HEADERS)


def apply_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add ``Access-Control-Allow-Origin`` and ``-Expose-Headers`` to *response*, unless it
    was prepared already (its headers are on the wire)."""
    if response.prepared:
        return
    _set_cors_headers(response)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``app.on_response_prepare`` hook: CORS headers on every response of a CORS path.

    aiohttp runs this hook inside ``prepare()``, after it has attached the payload writer
    (so ``response.prepared`` is already true) and before it writes the headers: the headers
    are set here without the ``prepared`` check, which used to skip every streamed response
    (the server-sent events of ``/api/events``).
    """
    if is_cors_path(request.path):
        _set_cors_headers(response)


def cors_middleware(
    *,
    ice_link_headers: Sequence[str] | Callable[[], Sequence[str]] = (),
    ice_links_for: Callable[[web.Request], Sequence[str]] | None = None,
    prefixes: Sequence[str] = CORS_PREFIXES,
) -> Middleware:
    """A middleware answering ``OPTIONS`` on *prefixes* with ``204`` and the CORS headers,
    and adding ``Allow-Origin``/``Expose-Headers`` to the other responses there.

    *ice_link_headers* are ``Link`` values (see :func:`ice_server_link`) sent with every
    ``OPTIONS`` answer; a callable is asked each time (for short-lived TURN credentials).
    *ice_links_for*, when given, is asked instead with the request (credentials per stream).
    """
    prefix_tuple = tuple(prefixes)

    def links(request: web.Request) -> Sequence[str]:
        if ice_links_for is not None:
            return ice_links_for(request)
        return ice_link_headers() if callable(ice_link_headers) else ice_link_headers

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_cors_path(request.path, prefix_tuple):
            return await handler(request)
        if request.method == "OPTIONS":
            resp = web.Response(status=204)
            resp.headers["Access-Control-Allow-Origin"] = "*"
            resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            resp.headers["Access-Control-Max-Age"] = MAX_AGE
            resp.headers["Allow"] = ALLOW_METHODS
            if request.path.startswith(("/whip/", "/whep/")):
                resp.headers["Accept-Post"] = "application/sdp"
            for link in links(request):
                resp.headers.add("Link", link)
            return resp
        # Errors become problem responses here already, so they carry the CORS headers
        # whichever order the middlewares are listed in.
        try:
            response = await handle_with_problems(request, handler)
        except web.HTTPException as exc:  # a redirect
            apply_cors_headers(request, exc)
            raise
        apply_cors_headers(request, response)
        return response

    return middleware
