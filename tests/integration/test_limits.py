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
from typing import Any
from unittest import mock

import aiohttp
import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration.test_whip_whep_http import make_offer, problem_of

from relaycast.app import create_app
from relaycast.config import Config
from relaycast.http.limits import (
    ADMISSION_KEY,
    MAX_TRACKED,
    REASONS,
    SWEEP_INTERVAL,
    Admission,
    address_group,
)
from relaycast.http.problems import ProblemError

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
    server = server_factory.start("--max-sessions", "4")  # one of them kept for publishers
    for client in (http, other, http):
        response, text = await view(client, server)
        assert response.status == 201, text
    response, text = await view(other, server, "other")
    refusal(response, text, 503, "total")
    # anonymous viewers cannot take the publishers' share: a streamer still gets in
    async with http.post(
        f"{server.http}/whip/live",
        data=await make_offer(send=True),
        headers={"Content-Type": SDP, "Authorization": "Bearer test-key"},
    ) as response:
        assert response.status == 201, await response.text()
    async with http.post(
        f"{server.http}/whip/other",
        data=await make_offer(send=True),
        headers={"Content-Type": SDP, "Authorization": "Bearer other-key"},
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


async def test_forwarded_addresses_count_only_with_trust_proxy(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    """Behind a proxy every client has the proxy's address; ``--trust-proxy`` takes the last
    X-Forwarded-For entry instead.  Without it the header changes nothing (no spoofing)."""
    args = ("--whep-rate", "0.1", "--whep-burst", "1")

    async def status(server: RelaycastServer, client: str) -> int:
        headers = {"Content-Type": SDP, "X-Forwarded-For": f"203.0.113.50, {client}"}
        async with http.post(f"{server.http}/whep/live", data=VIEW_OFFER, headers=headers) as r:
            return r.status

    proxied = server_factory.start("--trust-proxy", *args)
    assert [await status(proxied, ip) for ip in ("198.51.100.1", "198.51.100.1")] == [201, 429]
    assert await status(proxied, "198.51.100.2") == 201
    direct = server_factory.start(*args, env={"RELAYCAST_TRUST_PROXY": "off"})
    assert [await status(direct, ip) for ip in ("198.51.100.1", "198.51.100.2")] == [201, 429]


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


# -- the limiter's own bookkeeping (no server) --------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeMedia:
    """What Admission reads of the MediaServer: live sessions and streams."""

    def __init__(self) -> None:
        self.sessions: dict[str, object] = {}
        self.streams: dict[str, object] = {}


def limiter(**settings: Any) -> tuple[Admission, FakeClock, FakeMedia]:
    clock, media = FakeClock(), FakeMedia()
    config = Config(stream_keys={"live": "k"}, **settings)
    return Admission(config, media, clock), clock, media  # type: ignore[arg-type]


def request_from(peer: str, forwarded: str | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return make_mocked_request("POST", "/whep/live", headers=headers, transport=transport)


def test_address_groups() -> None:
    assert address_group("192.0.2.7") == "192.0.2.7"
    assert address_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"  # same subscriber
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_group("fe80::1%eth0") == "fe80::/64"
    assert address_group("unknown") == "unknown"


def test_client_address_trusts_x_forwarded_for_only_when_told() -> None:
    spoofed = request_from("10.0.0.1", "203.0.113.9, 198.51.100.4")
    plain, _, _ = limiter()
    assert plain.client(spoofed) == "10.0.0.1"
    proxied, _, _ = limiter(trust_proxy=True)
    assert proxied.client(spoofed) == "198.51.100.4"  # the entry the proxy added
    assert proxied.client(request_from("10.0.0.1")) == "10.0.0.1"


def test_token_bucket_refills_at_the_rate() -> None:
    admission, clock, _ = limiter(whep_rate=4.0, whep_burst=2)
    admission.take_token("a")
    admission.take_token("a")
    with pytest.raises(ProblemError) as info:
        admission.take_token("a")
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "1"
    clock.now += 0.25  # one token at 4/s
    admission.take_token("a")
    with pytest.raises(ProblemError):
        admission.take_token("a")
    admission.take_token("b")  # another address: its own bucket
    assert admission.refused["rate"] == 2


def test_retry_after_rounds_up_slow_rates() -> None:
    admission, _, _ = limiter(whep_rate=0.1, whep_burst=1)
    admission.take_token("a")
    with pytest.raises(ProblemError) as info:
        admission.take_token("a")
    assert info.value.headers["Retry-After"] == "10"


def test_memory_is_bounded_for_many_addresses() -> None:
    admission, clock, media = limiter(whep_rate=10.0, whep_burst=20)
    for n in range(MAX_TRACKED + 500):
        admission.take_token(f"a{n}")
    assert len(admission._buckets) == MAX_TRACKED  # the oldest were dropped
    clock.now += 2.0 + SWEEP_INTERVAL  # every bucket is full again: nothing to remember
    admission.take_token("late")
    assert len(admission._buckets) == 1
    # sessions admitted and then ended are forgotten on the next sweep
    for n in range(100):
        media.sessions[f"s{n}"] = object()
        admission.admitted(f"s{n}", f"c{n % 7}")
    assert admission.viewers_from("c0") == 15
    media.sessions.clear()
    clock.now += SWEEP_INTERVAL
    admission.take_token("late")
    assert admission._owner == {} and admission._viewers == {}
    for n in range(MAX_TRACKED + 10):
        admission.key_failed(f"k{n}")
    assert len(admission._failures) == MAX_TRACKED
    clock.now += admission.config.bad_key_window + SWEEP_INTERVAL
    admission.key_failed("late")
    assert list(admission._failures) == ["late"]


def test_wrong_keys_lock_out_for_the_rest_of_the_window() -> None:
    admission, clock, _ = limiter(bad_key_limit=3, bad_key_window=60.0)
    for _ in range(3):
        admission.check_key_lockout("a")
        admission.key_failed("a")
        clock.now += 10
    with pytest.raises(ProblemError) as info:
        admission.check_key_lockout("a")
    assert info.value.status == 429 and info.value.headers["Retry-After"] == "30"
    admission.check_key_lockout("b")  # not another address
    clock.now += 29.5
    with pytest.raises(ProblemError) as info:
        admission.check_key_lockout("a")
    assert info.value.headers["Retry-After"] == "1"  # rounded up
    clock.now += 0.5  # the window that began with the first wrong key is over
    admission.check_key_lockout("a")
    admission.key_failed("a")  # a new window with one failure
    admission.check_key_lockout("a")
    assert admission.refused["bad_key_rate"] == 2
    assert admission.refused["bad_key"] == 4  # every wrong key


def test_viewer_checks_in_order_of_cost() -> None:
    admission, _, media = limiter(max_sessions_per_ip=2, max_sessions=3, max_streams=1)
    with pytest.raises(ProblemError) as info:
        admission.check_viewer("nope", "a")
    assert info.value.status == 404
    admission.check_viewer("live", "a")  # creates 'live' below max_streams
    media.sessions.update({"s1": object(), "s2": object()})
    admission.admitted("s1", "a")
    admission.admitted("s2", "a")
    with pytest.raises(ProblemError) as info:
        admission.check_viewer("live", "a")
    assert (info.value.status, info.value.extra["reason"]) == (429, "per_ip")
    media.sessions["s3"] = object()
    with pytest.raises(ProblemError) as info:
        admission.check_viewer("live", "b")
    assert (info.value.status, info.value.extra["reason"]) == (503, "total")
    assert admission.refused["unknown_stream"] == 1
