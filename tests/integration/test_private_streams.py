"""Private streams against the real server: WHEP's 401 / 403 / 201 for every kind of token, and
private streams kept out of the API, the event stream and the metrics without the publish key.

Tokens are made here with PyJWT and by hand (RFC 7519), not with relaycast's code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import jwt
import pytest
import pytest_asyncio
from tests.conftest import SRC, RelaycastServer, ServerFactory
from tests.integration.test_whip_whep_http import make_offer, post, problem_of

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SECRET = "private-streams-test-secret-0123456789"
KEYS = {"live": "test-key", "show": "show-key", "vip": "vip-key"}


@pytest.fixture(scope="module")
def srv(module_server_factory: ServerFactory) -> RelaycastServer:
    return module_server_factory.start(
        "--private-stream", "show", "--private-stream", "vip", "--token-secret", SECRET,
        "--whep-rate", "1000", "--whep-burst", "1000",
        keys=KEYS,
    )  # fmt: skip


@pytest_asyncio.fixture(loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def token(sub: str = "show", ttl: int = 600, secret: str = SECRET, **extra: object) -> str:
    claims: dict[str, object] = {"sub": sub, "exp": int(time.time()) + ttl, **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(claims: dict[str, object], alg: str = "HS256") -> str:
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    sig = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), digest).digest()
    return f"{header}.{payload}.{b64url(sig)}"


async def whep(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientResponse, str]:
    response, text = await post(http, url, await make_offer(send=False), headers=headers)
    if response.status == 201:
        async with http.delete(url.split("/whep/")[0] + response.headers["Location"]) as d:
            assert d.status == 200
    return response, text


async def test_whep_without_a_token_is_401(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    for headers in (None, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response, text = await whep(http, f"{srv.http}/whep/show", headers)
        doc = problem_of(response, text, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "relaycast token" in str(doc["detail"])
    response, text = await whep(http, f"{srv.http}/whep/show?token=")
    problem_of(response, text, 401)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("wrong secret", lambda: token(secret="another-secret-of-at-least-32-bytes!")),
        ("expired", lambda: token(ttl=-5)),
        ("other stream", lambda: token(sub="live")),
        ("other private stream", lambda: token(sub="vip")),
        ("no exp", lambda: jwt.encode({"sub": "show"}, SECRET, algorithm="HS256")),
        ("no sub", lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")),
        ("HS384", lambda: hand_made({"sub": "show", "exp": int(time.time()) + 60}, "HS384")),
        ("alg none", lambda: hand_made({"sub": "show", "exp": int(time.time()) + 60}).rsplit(
            ".", 1)[0].replace(b64url(b'{"alg": "HS256", "typ": "JWT"}'),
                               b64url(b'{"alg": "none", "typ": "JWT"}')) + "."),
        ("garbage", lambda: "not-a-token"),
        ("publish key", lambda: "show-key"),
    ],
)  # fmt: skip
async def test_whep_with_a_bad_token_is_403(
    srv: RelaycastServer, http: aiohttp.ClientSession, name: str, make: object
) -> None:
    bad = make()  # type: ignore[operator]
    response, text = await whep(http, f"{srv.http}/whep/show", {"Authorization": f"Bearer {bad}"})
    doc = problem_of(response, text, 403)
    assert bad not in text  # the token is not echoed
    assert "new watch link" in str(doc["detail"]), doc
    response, text = await whep(http, f"{srv.http}/whep/show?token={bad}")
    problem_of(response, text, 403)


async def test_whep_with_a_good_token_is_201(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    good = token()
    response, text = await whep(http, f"{srv.http}/whep/show", {"Authorization": f"Bearer {good}"})
    assert response.status == 201, text
    assert text.startswith("v=0")
    response, text = await whep(http, f"{srv.http}/whep/show?token={good}")
    assert response.status == 201, text
    by_hand = hand_made({"sub": "show", "exp": int(time.time()) + 60})
    response, text = await whep(http, f"{srv.http}/whep/show?token={by_hand}")
    assert response.status == 201, text
    # public streams need none, and ignore one
    response, text = await whep(http, f"{srv.http}/whep/live")
    assert response.status == 201, text
    response, text = await whep(http, f"{srv.http}/whep/live", {"Authorization": "Bearer x"})
    assert response.status == 201, text


async def test_token_made_by_the_token_command_opens_the_stream(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYCAST_")}
    env["PYTHONPATH"] = str(SRC)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relaycast", "token", "show", "--ttl", "60",
        "--token-secret", SECRET, "--port", str(srv.port),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    made, url = out.decode().splitlines()
    assert url == f"{srv.http}/watch/show?token={made}"
    response, text = await whep(http, f"{srv.http}/whep/show?token={made}")
    assert response.status == 201, text


# -- visibility -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def published(srv: RelaycastServer) -> AsyncIterator[None]:
    """Publisher sessions on 'live' (public) and 'show' (private): both streams exist."""
    locations: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as http:
        for name in ("live", "show"):
            response, text = await post(
                http, f"{srv.http}/whip/{name}", await make_offer(send=True), key=KEYS[name]
            )
            assert response.status == 201, text
            locations.append((response.headers["Location"], KEYS[name]))
        yield
        for location, key in locations:
            async with http.delete(
                f"{srv.http}{location}", headers={"Authorization": f"Bearer {key}"}
            ):
                pass


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_private_streams_stay_out_of_the_api_without_the_publish_key(
    srv: RelaycastServer, published: None
) -> None:
    async with aiohttp.ClientSession() as http:

        async def names(headers: dict[str, str] | None = None) -> set[str]:
            async with http.get(f"{srv.http}/api/streams", headers=headers) as r:
                assert r.status == 200
                return {s["name"] for s in await r.json()}

        assert "live" in await names()
        assert "show" not in await names()
        assert "show" not in await names(bearer("test-key"))  # another stream's key
        assert "show" not in await names(bearer("vip-key"))
        assert "show" not in await names(bearer(token()))  # a viewer token is not a key
        assert {"live", "show"} <= await names(bearer("show-key"))

        for path in ("/api/streams/show", "/api/streams/show/history"):
            for headers in (None, bearer("test-key"), bearer(token())):
                async with http.get(f"{srv.http}{path}", headers=headers) as r:
                    problem_of(r, await r.text(), 404)
            async with http.get(f"{srv.http}{path}", headers=bearer("show-key")) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["name"] == "show"
        # an unknown stream and a hidden one look the same
        async with http.get(f"{srv.http}/api/streams/absent") as r:
            unknown = await r.json()
        async with http.get(f"{srv.http}/api/streams/show") as r:
            hidden = await r.json()
        assert hidden["title"] == unknown["title"]
        assert hidden["detail"] == unknown["detail"].replace("absent", "show")


async def test_private_streams_stay_out_of_the_metrics_labels(
    srv: RelaycastServer, published: None
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{srv.http}/metrics") as r:
            anonymous = await r.text()
        async with http.get(f"{srv.http}/metrics", headers=bearer("test-key")) as r:
            other_key = await r.text()
        async with http.get(f"{srv.http}/metrics", headers=bearer("show-key")) as r:
            owner = await r.text()
    for text in (anonymous, other_key, owner):
        assert 'relaycast_stream_live{stream="live"}' in text
    assert 'stream="show"' not in anonymous
    assert 'stream="show"' not in other_key
    assert 'relaycast_stream_live{stream="show"}' in owner
    assert 'relaycast_stream_ingress_bytes_total{stream="show"}' in owner


async def _first_streams_event(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The ``history`` event and the first ``streams`` event that lists 'live'."""
    history: dict[str, object] = {}
    async with http.get(url, headers=headers) as r:
        assert r.status == 200
        event = None
        async with asyncio.timeout(10):
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "history":
                        history = data
                    elif event == "streams" and any(s["name"] == "live" for s in data):
                        return history, data
    raise AssertionError("no streams event")


async def test_private_streams_stay_out_of_the_dashboard_events(
    srv: RelaycastServer, published: None
) -> None:
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(2.2)  # two ticks: both streams have history samples
        history, streams = await _first_streams_event(http, f"{srv.http}/api/events", None)
        assert "show" not in {s["name"] for s in streams}
        assert "show" not in history and "live" in history
        history, streams = await _first_streams_event(
            http, f"{srv.http}/api/events", bearer("show-key")
        )
        assert "show" in {s["name"] for s in streams}
        assert "show" in history
