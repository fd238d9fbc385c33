"""TURN REST credentials reach clients: WHIP/WHEP 201 and OPTIONS ``Link`` headers and the
page configuration, each checked the way coturn checks them (recomputing the HMAC)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from tests.conftest import ServerFactory
from tests.integration.test_whip_whep_http import make_offer, post

pytestmark = pytest.mark.integration

TURN_SECRET = "shared-with-coturn"
LINK_RE = re.compile(
    r'^<(?P<url>[^>]+)>; rel="ice-server"(?:; username="(?P<username>[^"]*)"; '
    r'credential="(?P<credential>[^"]*)"; credential-type="password")?$'
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def check_coturn_style(username: str, credential: str, name: str, ttl: int) -> None:
    expiry, _, user = username.partition(":")
    assert user == name
    assert abs(int(expiry) - (time.time() + ttl)) < 5
    expected = hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def parse_links(values: list[str]) -> list[dict[str, str | None]]:
    out = []
    for value in values:
        if 'rel="urn:ietf:params:whep:ext:core:layer"' in value:
            continue  # the WHEP layer extension (WHEP answers), not an ICE server
        match = LINK_RE.match(value)
        assert match is not None, value
        out.append(match.groupdict())
    return out


async def test_turn_credentials_in_links_and_pages(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start(
        "--ice-server", "stun:stun.example.org:3478",
        "--ice-server", "turn:turn.example.org:3478?transport=udp",
        "--turn-secret", TURN_SECRET, "--turn-ttl", "600",
    )  # fmt: skip

    def check(values: list[str], name: str) -> None:
        stun, turn = parse_links(values)
        assert stun == {"url": "stun:stun.example.org:3478", "username": None, "credential": None}
        assert turn["url"] == "turn:turn.example.org:3478?transport=udp"
        assert turn["username"] is not None and turn["credential"] is not None
        check_coturn_style(turn["username"], turn["credential"], name, 600)

    response, text = await post(http, f"{server.http}/whip/live", await make_offer(send=True),
                                key="test-key")  # fmt: skip
    assert response.status == 201, text
    check(response.headers.getall("Link"), "live")
    response, text = await post(http, f"{server.http}/whep/other", await make_offer(send=False))
    assert response.status == 201, text
    check(response.headers.getall("Link"), "other")
    async with http.options(f"{server.http}/whep/other") as r:
        assert r.status == 204
        check(r.headers.getall("Link"), "other")

    for page in ("publish", "watch"):
        async with http.get(f"{server.http}/{page}/live") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-store"
            html = await r.text()
        match = re.search(
            r'<script id="relaycast-config" type="application/json">(.*?)</script>\s*</head>',
            html,
        )
        assert match is not None
        config = json.loads(match.group(1))
        assert config["https"] is False
        stun, turn = config["iceServers"]
        assert stun == {"urls": "stun:stun.example.org:3478"}
        assert turn["urls"] == "turn:turn.example.org:3478?transport=udp"
        check_coturn_style(turn["username"], turn["credential"], "live", 600)
