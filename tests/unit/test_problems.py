"""The HTTP shell: problem+json errors (RFC 9457), CORS, the page and static routes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaycast.http.cors import EXPOSE_HEADERS, cors_middleware, cors_on_prepare, ice_server_link
from relaycast.http.pages import add_page_routes, default_web_root
from relaycast.http.problems import ProblemError, problem, problem_middleware

SECRET = "db-password=hunter2"

ClientMaker = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientMaker]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(app: web.Application) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def shell_app(*, cors_first: bool = True, **cors_kwargs: object) -> web.Application:
    """An app wired like create_app, with the two middlewares in either order."""
    cors = cors_middleware(**cors_kwargs)  # type: ignore[arg-type]
    order = [cors, problem_middleware] if cors_first else [problem_middleware, cors]
    app = web.Application(middlewares=order)

    async def refuse(request: web.Request) -> web.Response:
        raise ProblemError(
            403,
            "Wrong publish key",
            "The key for stream 'live' does not match; check the key you were given.",
            type_="https://relaycast.example/problems/bad-key",
            headers={"WWW-Authenticate": "Bearer"},
            stream="live",
        )

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError(SECRET)

    async def bad_request(request: web.Request) -> web.Response:
        raise web.HTTPBadRequest(text="The SDP offer has no m= line.")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def returns_problem(request: web.Request) -> web.Response:
        return problem(409, "Stream busy", "Someone is already live on 'live'.", retry_after=3)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response([{"name": "live"}])

    async def created(request: web.Request) -> web.Response:
        return web.Response(status=201, text="v=0\r\n", headers={"Location": "/whip/live/abc"})

    app.router.add_post("/whip/{stream}", created)
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/api/refuse", refuse)
    app.router.add_get("/api/crash", crash)
    app.router.add_get("/bad", bad_request)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/busy", returns_problem)
    app.router.add_get("/api/streams", ok)
    app.router.add_get("/plain", ok)
    return app


# -- problem+json --------------------------------------------------------------------------


async def test_problem_error_becomes_problem_json(make_client: ClientMaker) -> None:
    client = await make_client(shell_app())
    resp = await client.get("/refuse")
    assert resp.status == 403
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert await resp.json(content_type=None) == {
        "type": "https://relaycast.example/problems/bad-key",
        "title": "Wrong publish key",
        "status": 403,
        "detail": "The key for stream 'live' does not match; check the key you were given.",
        "stream": "live",
    }


async def test_returned_problem_keeps_extension_members(make_client: ClientMaker) -> None:
    resp = await (await make_client(shell_app())).get("/busy")
    body = await resp.json(content_type=None)
    assert resp.status == 409
    assert body["type"] == "about:blank"
    assert body["retry_after"] == 3
    assert body["detail"] == "Someone is already live on 'live'."


async def test_unknown_route_is_404_problem(make_client: ClientMaker) -> None:
    resp = await (await make_client(shell_app())).get("/no/such/thing")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["status"] == 404
    assert body["title"] == "Not Found"
    assert "/no/such/thing" in body["detail"]


async def test_wrong_method_is_405_problem_with_allow(make_client: ClientMaker) -> None:
    resp = await (await make_client(shell_app())).delete("/plain")
    assert resp.status == 405
    assert resp.content_type == "application/problem+json"
    assert "GET" in resp.headers["Allow"]
    body = await resp.json(content_type=None)
    assert body["status"] == 405
    assert body["detail"].startswith("DELETE is not allowed on /plain.")


async def test_http_exception_text_becomes_detail(make_client: ClientMaker) -> None:
    resp = await (await make_client(shell_app())).get("/bad")
    assert resp.status == 400
    body = await resp.json(content_type=None)
    assert body["detail"] == "The SDP offer has no m= line."
    assert body["title"] == "Bad Request"


async def test_crash_is_500_without_leaking_internals(
    make_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="relaycast.http.problems")
    resp = await (await make_client(shell_app())).get("/api/crash")
    text = await resp.text()
    assert resp.status == 500
    assert resp.content_type == "application/problem+json"
    assert SECRET not in text
    assert "RuntimeError" not in text and "Traceback" not in text
    body = await resp.json(content_type=None)
    assert body["title"] == "Internal Server Error"
    assert "try again" in body["detail"].lower()
    # ... but the operator gets the traceback in the log.
    record = next(r for r in caplog.records if r.exc_info)
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])
    assert "/api/crash" in record.getMessage()
    # CORS headers are on the 500 as well (CORS wraps the problem middleware).
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_redirects_pass_through(make_client: ClientMaker) -> None:
    resp = await (await make_client(shell_app())).get("/redirect", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/elsewhere"


def test_problem_error_defaults_title_from_status() -> None:
    exc = ProblemError(404)
    assert exc.title == "Not Found"
    assert exc.detail == "Not Found"
    assert exc.response().status == 404


# -- CORS ----------------------------------------------------------------------------------


async def test_preflight_on_whip_answers_with_cors_and_ice_links(make_client: ClientMaker) -> None:
    links = [ice_server_link("stun:stun.example.org:3478")]
    client = await make_client(shell_app(ice_link_headers=links))
    resp = await client.options(
        "/whip/live",
        headers={
            "Origin": "https://studio.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "*"
    for method in ("POST", "PATCH", "DELETE", "OPTIONS", "GET"):
        assert method in h["Access-Control-Allow-Methods"]
    for header in ("Authorization", "Content-Type", "If-Match"):
        assert header in h["Access-Control-Allow-Headers"]
    assert h["Access-Control-Expose-Headers"] == EXPOSE_HEADERS
    assert h["Accept-Post"] == "application/sdp"
    assert h.getall("Link") == ['<stun:stun.example.org:3478>; rel="ice-server"']


async def test_preflight_ice_links_can_be_computed_per_request(make_client: ClientMaker) -> None:
    n = 0

    def links() -> list[str]:
        nonlocal n
        n += 1
        return [ice_server_link("turn:turn.example.org", f"user{n}", "pw")]

    client = await make_client(shell_app(ice_link_headers=links))
    first = (await client.options("/whep/live")).headers["Link"]
    second = (await client.options("/whep/live")).headers["Link"]
    assert 'username="user1"' in first and 'username="user2"' in second
    assert 'credential="pw"; credential-type="password"' in second


async def test_cors_headers_on_normal_and_problem_responses(make_client: ClientMaker) -> None:
    client = await make_client(shell_app())
    ok = await client.post("/whip/live", data="v=0")
    assert ok.status == 201
    assert ok.headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in ok.headers["Access-Control-Expose-Headers"]
    api = await client.get("/api/streams")
    assert api.headers["Access-Control-Allow-Origin"] == "*"
    missing = await client.get("/whip/live/nope")  # unknown route under a CORS prefix
    assert missing.status == 404
    assert missing.headers["Access-Control-Allow-Origin"] == "*"
    plain = await client.get("/plain")
    assert "Access-Control-Allow-Origin" not in plain.headers
    # OPTIONS elsewhere is not a CORS preflight: it is a wrong method.
    assert (await client.options("/plain")).status == 405


@pytest.mark.parametrize("cors_first", [True, False])
async def test_error_responses_carry_cors_in_either_middleware_order(
    make_client: ClientMaker, cors_first: bool
) -> None:
    client = await make_client(shell_app(cors_first=cors_first))
    for path, status in (("/api/refuse", 403), ("/api/crash", 500), ("/api/nope", 404)):
        resp = await client.get(path)
        assert resp.status == status, path
        assert resp.content_type == "application/problem+json", path
        assert resp.headers.get("Access-Control-Allow-Origin") == "*", path
        assert "Location" in resp.headers["Access-Control-Expose-Headers"], path
    bad = await client.delete("/api/streams")
    assert bad.status == 405
    assert bad.headers.get("Access-Control-Allow-Origin") == "*"
    assert "GET" in bad.headers["Allow"]


async def test_streamed_responses_carry_cors(make_client: ClientMaker) -> None:
    """A handler that prepares its own response (server-sent events) gets the CORS headers
    from ``cors_on_prepare``: aiohttp runs the hook when ``response.prepared`` is already
    true, which once made the hook skip every streamed response."""
    app = web.Application(middlewares=[problem_middleware, cors_middleware()])
    app.on_response_prepare.append(cors_on_prepare)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        return response

    app.router.add_get("/api/events", events)
    app.router.add_get("/events", events)
    client = await make_client(app)
    resp = await client.get("/api/events", headers={"Origin": "https://other.example"})
    assert resp.status == 200
    assert resp.headers.get("Access-Control-Allow-Origin") == "*"
    assert resp.headers.get("Access-Control-Expose-Headers") == EXPOSE_HEADERS
    assert await resp.read() == b"data: 1\n\n"
    # Not a CORS path: nothing added.
    plain = await client.get("/events")
    assert "Access-Control-Allow-Origin" not in plain.headers


def test_ice_server_link_quotes_values() -> None:
    value = ice_server_link("turn:t.example?transport=udp", 'a"b', "c\\d")
    assert value == (
        '<turn:t.example?transport=udp>; rel="ice-server"; username="a\\"b"; '
        'credential="c\\\\d"; credential-type="password"'
    )


# -- pages ---------------------------------------------------------------------------------


def page_app(web_root: Path) -> web.Application:
    app = web.Application(middlewares=[problem_middleware])
    add_page_routes(app, web_root)
    return app


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<title>index</title>")
    (root / "publish.html").write_text("<title>publish</title>")
    (root / "watch.html").write_text("<title>watch</title>")
    (root / "js" / "app.js").write_text("export const x = 1;\n")
    (tmp_path / "secret.txt").write_text(SECRET)
    return root


async def test_pages_are_served_without_caching(make_client: ClientMaker, web_root: Path) -> None:
    client = await make_client(page_app(web_root))
    for path, title in (("/", "index"), ("/publish/live", "publish"), ("/watch/a-b_9", "watch")):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert f"<title>{title}</title>" in await resp.text()
    js = await client.get("/static/js/app.js")
    assert js.status == 200
    assert js.content_type == "text/javascript"  # ES modules need a JavaScript MIME type
    assert js.headers["Cache-Control"] == "no-cache"


async def test_bad_stream_names_and_escapes_are_404_problems(
    make_client: ClientMaker, web_root: Path
) -> None:
    client = await make_client(page_app(web_root))
    for path in ("/publish/a.b", "/watch/" + "x" * 65, "/watch/%C3%A4"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "application/problem+json"
    # Sent raw: aiohttp's client would normalise the dot segments away before sending.
    port = client.port
    assert port is not None
    for path in (
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/js/..%2F..%2Fsecret.txt",
        "/static/js",
        "/static/x",
    ):
        status, body = await raw_get(port, path)
        assert status == 404, path
        assert SECRET.encode() not in body
        assert b'"status": 404' in body


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_packaged_pages_reference_only_existing_files() -> None:
    """Every /static/ URL in the HTML and every relative ES-module import resolves."""
    root = default_web_root()
    for page in ("index.html", "publish.html", "watch.html"):
        html = (root / page).read_text()
        refs = re.findall(r'(?:src|href)="/static/([^"]+)"', html)
        assert refs, page
        for ref in refs:
            assert (root / ref).is_file(), f"{page} -> /static/{ref}"
    for module in (root / "js").glob("*.js"):
        for ref in re.findall(r'from "(\./[^"]+)"', module.read_text()):
            assert (module.parent / ref).resolve().is_file(), f"{module.name} -> {ref}"
