"""Admission limits against the real server: what one anonymous client may cost.

Every refusal must be an RFC 9457 problem with the right status (429, RFC 6585 §4, for what
one client caused; 503 when the server or a stream is full) and a ``Retry-After`` (RFC 9110
§10.2.3).  Other clients come from another loopback address (127.0.0.2) through
``TCPConnector(local_addr=...)``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import psutil
import pytest
from aiohttp import web
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration.test_whip_whep_http import make_offer, problem_of

from relaycast.app import create_app
from relaycast.config import Config
from relaycast.http.limits import ADMISSION_KEY, REASONS

pytestmark = pytest.mark.integration

SDP = "application/sdp"
OTHER_ADDRESS = "127.0.0.2"

#: A small recvonly offer every server accepts: what a flood would send, minus aiortc's cost.
VIEW_OFFER = (
    "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=ice-ufrag:abcd",
            "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
            "a=setup:actpass",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=recvonly",
            "a=rtcp-mux",
            "a=rtpmap:96 VP8/90000",
            "a=rtcp-fb:96 nack pli",
        ]
    )
    + "\r\n"
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def other() -> AsyncIterator[aiohttp.ClientSession]:
    """A client on another address (127.0.0.2) than the default one (127.0.0.1)."""
    connector = aiohttp.TCPConnector(local_addr=(OTHER_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def view(
    http: aiohttp.ClientSession, server: RelaycastServer, stream: str = "live"
) -> tuple[aiohttp.ClientResponse, str]:
    async with http.post(
        f"{server.http}/whep/{stream}", data=VIEW_OFFER, headers={"Content-Type": SDP}
    ) as response:
        return response, await response.text()


def refusal(
    response: aiohttp.ClientResponse, text: str, status: int, reason: str
) -> dict[str, object]:
    """A problem document with *status*, our *reason* member and, unless 404, Retry-After."""
    doc = problem_of(response, text, status)
    assert doc["reason"] == reason, doc
    if status != 404:
        retry = response.headers.get("Retry-After", "")
        assert retry.isdigit() and int(retry) >= 1, response.headers
    return doc


async def metric(http: aiohttp.ClientSession, server: RelaycastServer, name: str) -> float:
    async with http.get(f"{server.http}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"no {name} in /metrics"
    return float(match.group(1))


# -- one address floods WHEP --------------------------------------------------------------------


async def test_flood_from_one_address_is_bounded_and_others_still_get_in(
    server_factory: ServerFactory,
    http: aiohttp.ClientSession,
    other: aiohttp.ClientSession,
) -> None:
    """3,000 WHEP POSTs from 127.0.0.1 with the default limits: at most 50 sessions (per
    address) exist, memory stays flat, and a viewer from 127.0.0.2 still gets in."""
    server = server_factory.start(keys={})  # generated key: any stream name exists
    proc = psutil.Process(server.proc.pid)
    rss_before = proc.memory_info().rss
    statuses: Counter[int] = Counter()
    retry_afters: set[str] = set()
    names = iter(range(3000))

    async def worker() -> None:
        for i in names:
            # Many stream names too: a flood must not create a stream per request either.
            async with http.post(
                f"{server.http}/whep/s{i % 500}", data=VIEW_OFFER, headers={"Content-Type": SDP}
            ) as response:
                await response.read()
                statuses[response.status] += 1
                if response.status in (429, 503):
                    retry_afters.add(response.headers.get("Retry-After", "missing"))

    start = time.monotonic()
    flood = asyncio.gather(*(worker() for _ in range(16)))
    await asyncio.sleep(0.5)  # the flood is under way
    response, answer = await view(other, server, "s1")
    assert response.status == 201, answer
    await flood
    elapsed = time.monotonic() - start

    assert sum(statuses.values()) == 3000
    assert set(statuses) <= {201, 429, 503}, statuses
    assert statuses[201] <= 50, statuses  # max_sessions_per_ip
    assert statuses[429] >= 2900, statuses
    assert "missing" not in retry_afters and all(r.isdigit() for r in retry_afters)
    assert await metric(http, server, "relaycast_sessions") <= 51  # + the other viewer
    async with http.get(f"{server.http}/api/streams") as r:
        assert len(await r.json()) <= 51
    growth = proc.memory_info().rss - rss_before
    assert growth < 30 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB"
    assert elapsed < 30, f"{elapsed:.1f} s"
    # The other address is still welcome after the flood.
    response, answer = await view(other, server, "s2")
    assert response.status == 201, answer


# -- each limit, configured by flag or environment ----------------------------------------------


async def test_rate_limit_from_env_429_with_seconds_until_a_token(
    server_factory: ServerFactory, http: aiohttp.ClientSession, other: aiohttp.ClientSession
) -> None:
    server = server_factory.start(env={"RELAYCAST_WHEP_RATE": "2", "RELAYCAST_WHEP_BURST": "3"})
    for _ in range(3):
        response, text = await view(http, server)
        assert response.status == 201, text
    response, text = await view(http, server)
    doc = refusal(response, text, 429, "rate")
    assert response.headers["Retry-After"] == "1"  # 1 token at 2/s: 0.5 s, rounded up
    assert "2 viewer sessions per second" in str(doc["detail"])
    response, text = await view(other, server)  # another address has its own bucket
    assert response.status == 201, text
    await asyncio.sleep(0.6)  # one token back
    response, text = await view(http, server)
    assert response.status == 201, text


async def test_per_address_limit_429_and_freed_by_delete(
    server_factory: ServerFactory, http: aiohttp.ClientSession, other: aiohttp.ClientSession
) -> None:
    server = server_factory.start("--max-sessions-per-ip", "3")
    locations = []
    for _ in range(3):
        response, text = await view(http, server)
        assert response.status == 201, text
        locations.append(response.headers["Location"])
    response, text = await view(http, server, "other")  # any stream: the limit is per address
    doc = refusal(response, text, 429, "per_ip")
    assert "3 viewer sessions" in str(doc["detail"])
    response, text = await view(other, server)
    assert response.status == 201, text
    async with http.delete(f"{server.http}{locations[0]}") as d:
        assert d.status == 200
    response, text = await view(http, server)
    assert response.status == 201, text


async def test_per_stream_limit_from_env_503(
    server_factory: ServerFactory, http: aiohttp.ClientSession, other: aiohttp.ClientSession
) -> None:
    server = server_factory.start(env={"RELAYCAST_MAX_VIEWERS_PER_STREAM": "2"})
    for client in (http, other):
        response, text = await view(client, server)
        assert response.status == 201, text
    response, text = await view(other, server)
    doc = refusal(response, text, 503, "per_stream")
    assert "'live' already has 2 viewers" in str(doc["detail"])
    response, text = await view(other, server, "other")
    assert response.status == 201, text


async def test_total_limit_503_for_viewers_and_publishers(
    server_factory: ServerFactory, http: aiohttp.ClientSession, other: aiohttp.ClientSession
) -> None:
    server = server_factory.start("--max-sessions", "3")
    for client in (http, other, http):
        response, text = await view(client, server)
        assert response.status == 201, text
    response, text = await view(other, server, "other")
    refusal(response, text, 503, "total")
    offer = await make_offer(send=True)
    async with http.post(
        f"{server.http}/whip/live",
        data=offer,
        headers={"Content-Type": SDP, "Authorization": "Bearer test-key"},
    ) as response:
        refusal(response, await response.text(), 503, "total")


async def test_streams_limit_503_only_for_new_streams(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start("--max-streams", "2", keys={})
    for stream in ("a", "b"):
        response, text = await view(http, server, stream)
        assert response.status == 201, text
    response, text = await view(http, server, "c")
    doc = refusal(response, text, 503, "streams")
    assert "2 streams" in str(doc["detail"])
    response, text = await view(http, server, "a")  # an existing stream is still watchable
    assert response.status == 201, text


async def test_unknown_stream_with_configured_keys_404(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start()  # keys live and other
    response, text = await view(http, server, "nonexistent")
    doc = refusal(response, text, 404, "unknown_stream")
    assert "'nonexistent'" in str(doc["detail"])
    async with http.get(f"{server.http}/api/streams") as r:
        assert await r.json() == []  # nothing was made


# -- publish keys -------------------------------------------------------------------------------


async def test_whip_patch_and_delete_need_the_key(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start()
    offer = await make_offer(send=True)
    async with http.post(
        f"{server.http}/whip/live",
        data=offer,
        headers={"Content-Type": SDP, "Authorization": "Bearer test-key"},
    ) as response:
        assert response.status == 201, await response.text()
        url = f"{server.http}{response.headers['Location']}"
    frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    for method in ("PATCH", "DELETE"):
        async with http.request(method, url, data=frag, headers=patch_headers) as r:
            problem_of(r, await r.text(), 401)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        bad = {**patch_headers, "Authorization": "Bearer other-key"}  # another stream's key
        async with http.request(method, url, data=frag, headers=bad) as r:
            problem_of(r, await r.text(), 403)
    good = {**patch_headers, "Authorization": "Bearer test-key"}
    async with http.patch(url, data="a=end-of-candidates\r\n", headers=good) as r:
        assert r.status == 204, await r.text()
    async with http.delete(url, headers={"Authorization": "Bearer test-key"}) as r:
        assert r.status == 200, await r.text()
    async with http.delete(url, headers={"Authorization": "Bearer test-key"}) as r:
        problem_of(r, await r.text(), 404)


async def test_wrong_keys_locked_out_per_address(
    server_factory: ServerFactory, http: aiohttp.ClientSession, other: aiohttp.ClientSession
) -> None:
    server = server_factory.start()
    offer = await make_offer(send=True)

    async def publish(
        client: aiohttp.ClientSession, key: str
    ) -> tuple[aiohttp.ClientResponse, str]:
        headers = {"Content-Type": SDP, "Authorization": f"Bearer {key}"}
        async with client.post(f"{server.http}/whip/live", data=offer, headers=headers) as r:
            return r, await r.text()

    for attempt in range(10):
        response, text = await publish(http, f"guess-{attempt}")
        problem_of(response, text, 403)
    response, text = await publish(http, "guess-10")
    doc = refusal(response, text, 429, "bad_key_rate")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "10 wrong publish keys" in str(doc["detail"])
    response, text = await publish(http, "test-key")  # locked out, even with the right key
    refusal(response, text, 429, "bad_key_rate")
    response, text = await publish(other, "test-key")  # another address is not
    assert response.status == 201, text
    async with other.delete(
        f"{server.http}{response.headers['Location']}",
        headers={"Authorization": "Bearer test-key"},
    ) as d:
        assert d.status == 200


# -- offers and streamed responses --------------------------------------------------------------


async def test_offer_with_3000_sections_refused_fast(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start()
    head, _, section = VIEW_OFFER.partition("m=video")
    bomb = head + "m=video" + section + "m=audio 0 X 0\r\n" * 2999
    assert len(bomb.encode()) < 64 * 1024
    best = float("inf")
    for _ in range(3):
        start = time.monotonic()
        async with http.post(
            f"{server.http}/whep/live", data=bomb, headers={"Content-Type": SDP}
        ) as response:
            doc = problem_of(response, await response.text(), 413)
        best = min(best, time.monotonic() - start)
        assert doc["limit"] == "m-sections" and doc["maximum"] == 16, doc
        assert "more than 16 m= sections" in str(doc["detail"])
    assert best < 0.5, f"{best * 1000:.0f} ms"  # measured ~3 ms over loopback
    assert await metric(http, server, "relaycast_sessions") == 0


async def test_event_stream_carries_cors(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start()
    async with http.get(
        f"{server.http}/api/events", headers={"Origin": "https://player.example.com"}
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers.get("Access-Control-Allow-Origin") == "*"


# -- the refusal counters the metrics read ------------------------------------------------------


async def test_refusals_counted_by_reason_on_the_app() -> None:
    config = Config(
        port=0,
        udp_port=0,
        public_ips=("127.0.0.1",),
        host_candidates=False,
        stream_keys={"live": "k"},
        whep_burst=1,
        whep_rate=0.5,
    )
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        admission = app[ADMISSION_KEY]
        assert admission.refused == dict.fromkeys(REASONS, 0)
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                async with http.post(
                    f"http://127.0.0.1:{port}/whep/live",
                    data=VIEW_OFFER,
                    headers={"Content-Type": SDP},
                ) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert r.headers["Retry-After"] == "2"  # 1 token at 0.5/s
                        assert json.loads(await r.text())["reason"] == "rate"
        assert statuses == [201, 429, 429]
        assert admission.refused["rate"] == 2
        assert sum(admission.refused.values()) == 2
    finally:
        await runner.cleanup()
