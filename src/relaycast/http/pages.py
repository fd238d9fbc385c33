"""The HTML pages and their static files (``web/``): no build step, served as they are.

``GET /`` index, ``GET /publish/{stream}`` streamer page, ``GET /watch/{stream}`` viewer
page, ``GET /static/...`` the CSS and ES modules.  Everything is sent with
``Cache-Control: no-cache`` so a new version of the server never runs stale scripts.

The streamer and viewer pages get their configuration in the HTML, so they can start their
WHIP/WHEP request without another round trip: before ``</head>``,
``<script id="relaycast-config" type="application/json">{"iceServers": [...], "https": ...}
</script>`` (the RTCIceServer list of :mod:`relaycast.http.ice_servers`, TURN credentials
included; these two pages are therefore ``Cache-Control: no-store``).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from relaycast.config import STREAM_NAME_RE, valid_stream_name
from relaycast.http.problems import ProblemError

__all__ = [
    "STREAM_NAME_RE",
    "add_page_routes",
    "default_web_root",
    "require_stream_name",
    "valid_stream_name",
]

CACHE_CONTROL = "no-cache"
#: The element the pages read their configuration from.
CONFIG_ELEMENT_ID = "relaycast-config"

#: ``page_config(request, stream)``: the JSON object injected into a page.
PageConfig = Callable[[web.Request, str], Mapping[str, object]]

# ES modules must be served with a JavaScript MIME type (HTML §8.1.5.1).
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".ico": "image/x-icon",
    ".png": "image/png",
}


def default_web_root() -> Path:
    """The ``web/`` directory shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "web"


def require_stream_name(name: str) -> str:
    """Return *name* if it is a valid stream name, else raise a 404 problem."""
    if not valid_stream_name(name):
        raise ProblemError(
            404,
            "Unknown stream",
            f"{name[:80]!r} is not a stream name: use 1-64 letters, digits, '_' or '-'.",
        )
    return name


def _file_response(path: Path) -> web.FileResponse:
    resp = web.FileResponse(path, headers={"Cache-Control": CACHE_CONTROL})
    content_type = _CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    resp.content_type = content_type
    if content_type.startswith("text/") or content_type == "application/json":
        resp.charset = "utf-8"
    return resp


def config_script(data: Mapping[str, object]) -> str:
    """The ``<script type="application/json">`` element carrying *data*; ``<``, ``>`` and
    ``&`` are escaped (still valid JSON) so no value can end the element."""
    text = (
        json.dumps(data, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    return f'<script id="{CONFIG_ELEMENT_ID}" type="application/json">{text}</script>'


def inject_config(html: str, data: Mapping[str, object]) -> str:
    """*html* with :func:`config_script` placed right before ``</head>`` (else at the start)."""
    script = config_script(data)
    index = html.lower().find("</head>")
    if index < 0:
        return script + html
    return html[:index] + script + "\n" + html[index:]


def add_page_routes(
    app: web.Application, web_root: Path, page_config: PageConfig | None = None
) -> None:
    """Register the page routes and ``/static/`` on *app*, serving files from *web_root*.
    With *page_config*, the streamer and viewer pages carry its answer (see the module)."""
    root = Path(web_root).resolve()

    def configured_page(name: str, request: web.Request, stream: str) -> web.StreamResponse:
        if page_config is None:
            return page(name)
        path = root / name
        if not path.is_file():
            page(name)  # raises the 500 problem
        html = inject_config(path.read_text(encoding="utf-8"), page_config(request, stream))
        return web.Response(
            text=html,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    def page(name: str) -> web.FileResponse:
        path = root / name
        if not path.is_file():
            raise ProblemError(
                500, "Page missing", f"The server's web files are incomplete: {name} is missing."
            )
        return _file_response(path)

    async def index(request: web.Request) -> web.StreamResponse:
        return page("index.html")

    async def publish(request: web.Request) -> web.StreamResponse:
        stream = require_stream_name(request.match_info["stream"])
        return configured_page("publish.html", request, stream)

    async def watch(request: web.Request) -> web.StreamResponse:
        stream = require_stream_name(request.match_info["stream"])
        return configured_page("watch.html", request, stream)

    async def static(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        try:
            path = (root / rel).resolve()
        except (OSError, ValueError):
            path = root
        if not path.is_relative_to(root) or path == root or not path.is_file():
            raise ProblemError(404, "Not Found", f"There is no static file {rel[:120]!r}.")
        return _file_response(path)

    app.router.add_get("/", index)
    app.router.add_get("/publish/{stream}", publish)
    app.router.add_get("/watch/{stream}", watch)
    app.router.add_get("/static/{path:.+}", static)
