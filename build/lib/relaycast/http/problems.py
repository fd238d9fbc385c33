"""Errors as ``application/problem+json`` (RFC 9457, "Problem Details for HTTP APIs").

Every 4xx/5xx the HTTP side produces goes through here: handlers either return
:func:`problem` or raise :class:`ProblemError`; :func:`problem_middleware` also turns
aiohttp's own ``HTTPException`` (unknown route, wrong method, body too large) and any
unexpected exception into a problem document.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "ProblemError",
    "handle_with_problems",
    "problem",
    "problem_middleware",
]

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Headers of an aiohttp HTTPException worth keeping on the problem response.
_KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", "Location", "Accept-Post")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem-details response (RFC 9457 §3.1: type, title, status, detail + extensions).

    *detail* is the sentence a person reads to fix the problem; extension members in
    *extra* must be JSON-serialisable and must not reuse the standard member names.
    """
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update({key: value for key, value in extra.items() if key not in body})
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        charset="utf-8",
        headers=dict(headers) if headers else None,
    )


class ProblemError(Exception):
    """Raise from a handler to answer with a problem document (RFC 9457)."""

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str = "",
        *,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.status = status
        self.title = title if title is not None else _reason(status)
        self.detail = detail or self.title
        self.type_ = type_
        self.headers: dict[str, str] = dict(headers) if headers else {}
        self.extra = extra
        super().__init__(f"{status} {self.title}: {self.detail}")

    def response(self) -> web.Response:
        """The problem+json response for this error."""
        return problem(
            self.status,
            self.title,
            self.detail,
            type_=self.type_,
            headers=self.headers,
            **self.extra,
        )


def _detail_for(request: web.Request, exc: web.HTTPException) -> str:
    default_text = f"{exc.status}: {exc.reason}"
    text = (exc.text or "").strip()
    if text and text != default_text:
        return text
    if exc.status == 404:
        return (
            f"There is nothing at {request.path}. Publish with POST /whip/<stream>, watch at "
            "/watch/<stream>, list live streams at /api/streams."
        )
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        hint = f" Allowed: {allowed}." if allowed else ""
        return f"{request.method} is not allowed on {request.path}.{hint}"
    if exc.status == 413:
        return "The request body is too large for this endpoint."
    return f"The request to {request.path} failed: {exc.reason}."


async def handle_with_problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Call *handler*, answering errors as problem documents (the body of
    :func:`problem_middleware`, usable by other middlewares that must see the final response).
    """
    try:
        return await handler(request)
    except ProblemError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through untouched
        headers = {h: exc.headers[h] for h in _KEEP_HEADERS if h in exc.headers}
        return problem(
            exc.status,
            exc.reason or _reason(exc.status),
            _detail_for(request, exc),
            headers=headers,
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(
            500,
            "Internal Server Error",
            "The server hit an unexpected error and logged it. Try again; if it keeps "
            "happening, report it with the time it happened.",
        )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`ProblemError`, aiohttp ``HTTPException`` (status >= 400) and
    unexpected exceptions into ``application/problem+json`` responses.

    Unexpected exceptions are logged with their traceback and answered with a 500 that
    reveals nothing about the server's internals.
    """
    return await handle_with_problems(request, handler)
