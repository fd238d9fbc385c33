"""What WHIP (RFC 9725) and WHEP share: the SDP body, the session resource, PATCH and DELETE."""

from __future__ import annotations

from aiohttp import web

from relaycast.http.ice_servers import ice_link_headers
from relaycast.http.pages import require_stream_name
from relaycast.http.problems import ProblemError
from relaycast.media.server import MediaServer
from relaycast.media.session import Session
from relaycast.sdp import SdpError, SessionDescription, build_sdpfrag, parse_sdp, parse_sdpfrag
from relaycast.sdp.parse import SdpLimitError

MAX_SDP_BYTES = 64 * 1024
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"

SERVER_KEY = web.AppKey("media_server", MediaServer)


def media_server(request: web.Request) -> MediaServer:
    return request.app[SERVER_KEY]


async def read_body(request: web.Request, content_type: str) -> str:
    """The request body as text, after checking its media type (415) and size (413)."""
    if request.content_type != content_type:
        raise ProblemError(
            415,
            "Unsupported Media Type",
            f"send the body as Content-Type: {content_type} (got {request.content_type or 'none'})",
        )
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to the end
    # (a body split over several TCP segments would otherwise be cut short).
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_SDP_BYTES:
        chunk = await request.content.read(MAX_SDP_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    if len(raw) > MAX_SDP_BYTES:
        raise ProblemError(
            413, "Content Too Large", f"the body is limited to {MAX_SDP_BYTES} bytes"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(400, "Malformed SDP", f"the body is not UTF-8 text: {exc}") from exc


async def read_offer(request: web.Request) -> SessionDescription:
    text = await read_body(request, SDP)
    try:
        return parse_sdp(text)
    except SdpError as exc:
        raise _sdp_problem(exc, "Malformed SDP") from exc


def _sdp_problem(exc: SdpError, title: str) -> ProblemError:
    """400 for malformed SDP; 413 (RFC 9110 §15.5.14) naming the cap for SDP over a limit."""
    if isinstance(exc, SdpLimitError):
        return ProblemError(413, "SDP Too Large", str(exc), limit=exc.limit, maximum=exc.maximum)
    return ProblemError(400, title, str(exc))


def created(request: web.Request, session: Session, location: str) -> web.Response:
    """201 with the answer, the resource URL, its ETag and the ICE servers (RFC 9725 §4.2),
    TURN ones with fresh credentials when a TURN secret is configured."""
    response = web.Response(status=201, text=session.answer, content_type=SDP)
    response.headers["Location"] = location
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = SDPFRAG
    config = media_server(request).config
    for link in ice_link_headers(config, request.match_info.get("stream", "relaycast")):
        response.headers.add("Link", link)
    return response


def find_session(request: web.Request, role: str) -> Session:
    stream = require_stream_name(request.match_info["stream"])
    session = media_server(request).find(request.match_info["session"], role, stream)
    if session is None:
        raise ProblemError(
            404, "Unknown session", "no such session: it ended, expired or never existed"
        )
    return session


async def patch_session(request: web.Request, role: str) -> web.Response:
    """Trickle ICE (204) or ICE restart (200 with our new credentials), RFC 9725 §4.4."""
    session = find_session(request, role)
    text = await read_body(request, SDPFRAG)
    try:
        ufrag, pwd, _candidates = parse_sdpfrag(text)
    except SdpError as exc:
        raise _sdp_problem(exc, "Malformed SDP fragment") from exc
    if_match = request.headers.get("If-Match")
    restart = ufrag is not None and ufrag != session.negotiated.remote_ufrag
    if restart:
        if if_match != "*" and if_match != session.etag:
            raise ProblemError(
                412, "Precondition Failed", 'an ICE restart needs If-Match: "*" or the current ETag'
            )
        if pwd is None:
            raise ProblemError(400, "Malformed SDP fragment", "an ICE restart needs a=ice-pwd")
        session.negotiated.remote_ufrag = ufrag or ""
        session.negotiated.remote_pwd = pwd
        session.restart_ice()
        server = media_server(request)
        mids = [m.mid for m in session.negotiated.media if not m.rejected]
        body = build_sdpfrag(server.local_transport(session), mids)
        response = web.Response(status=200, text=body, content_type=SDPFRAG)
        response.headers["ETag"] = session.etag
        return response
    if if_match is not None and if_match != "*" and if_match != session.etag:
        raise ProblemError(
            412, "Precondition Failed", "If-Match does not match this session's current ETag"
        )
    # ICE-lite: the peer's candidates need no action, its checks tell us where it is.
    return web.Response(status=204)


async def delete_session(request: web.Request, role: str) -> web.Response:
    session = find_session(request, role)
    session.close("deleted by the client")
    return web.Response(status=200)
