"""The HTML pages and their static files (``web/``): no build step, served as they are.

``GET /`` index, ``GET /publish/{stream}`` streamer page, ``GET /watch/{stream}`` viewer
page, ``GET /static/...`` the CSS and ES modules.  Everything is sent with
``Cache-Control: no-cache`` so a new version of the server never runs stale scripts.
"""

from __future__ import annotations

import mimetypes
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


def add_page_routes(app: web.Application, web_root: Path) -> None:
    """Register the page routes and ``/static/`` on *app*, serving files from *web_root*."""
    root = Path(web_root).resolve()

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
        require_stream_name(request.match_info["stream"])
        return page("publish.html")

    async def watch(request: web.Request) -> web.StreamResponse:
        require_stream_name(request.match_info["stream"])
        return page("watch.html")

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
