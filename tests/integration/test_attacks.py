"""The attacker's tests: one anonymous viewer must not hurt anyone else.

Everything runs against a real ``relaycast serve`` on loopback with a live publisher (the load
generator's VP8 clip, in its own process). The attacker is a WHEP viewer built on our own
ClientTransport (ICE, DTLS, SRTP), so it can send well-formed SRTCP from a validated address,
plus plain and raw (source-spoofing) UDP sockets for what an off-path attacker can send.

1. NACK amplification: a few hundred bytes of RTCP must not buy megabytes of retransmissions,
   and a NACK storm must not disturb an honest viewer.
2. Media redirection: tampered or replayed STUN, a DTLS-looking datagram, or another session's
   check from a spoofed address must not move a viewer's media or steal its address.
3. A malformed DTLS record during the handshake is dropped, the handshake completes.
4. A viewer that passes ICE but never does DTLS is closed after the handshake timeout.
5. Smaller versions of the soak (join/leave cycles) and garbage flood benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tests.conftest import ROOT, SRC, RelaycastServer, ServerFactory
from tests.integration.attack_peers import (
    Listener,
    LivePublisher,
    Watcher,
    append_use_candidate,
    binding_request,
    can_spoof,
    dtls_record,
    garbage_records,
    has_use_candidate,
    spoofed_udp,
    wait_for,
)

from relaycast.loadgen.runner import LOAD_TEST_LIMITS
from relaycast.net import stun
from relaycast.rtp.rtcp import RtcpReceiverReport

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVER = "127.0.0.1"


@dataclass
class Live:
    server: RelaycastServer
    publisher: LivePublisher

    @property
    def media(self) -> tuple[str, int]:
        return (SERVER, self.server.udp_port)


@pytest.fixture(scope="module")
def live(module_server_factory: ServerFactory) -> Iterator[Live]:
    """One server with a live publisher on ``live``, shared by the module's tests (each test
    brings its own viewers)."""
    server = module_server_factory.start()
    publisher = LivePublisher(server.http, server.keys["live"])
    time.sleep(4.0)  # several hundred video packets in the server's NACK cache
    try:
        yield Live(server, publisher)
    finally:
        publisher.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def watching(http: aiohttp.ClientSession, live: Live, **kwargs: Any) -> Watcher:
    viewer = Watcher(**kwargs)
    await viewer.join(http, live.server.http)
    assert await wait_for(lambda: viewer.count(kind="video") >= 60, 10), "no video arrives"
    return viewer


def now_ns() -> int:
    return time.time_ns()


# -- 1. NACK amplification ------------------------------------------------------------------------

ONE_COMPOUND_LIMIT = 300  # retransmissions one 1,280-byte compound may trigger
HONEST_DELIVERY = 0.99
HONEST_GAP_MS = 200.0


def storm_seqs(newest: int) -> list[int]:
    return list(range(newest - 1023, newest + 1))


async def test_nack_amplification_is_bounded(live: Live, http: aiohttp.ClientSession) -> None:
    """The finding: one 1,280-byte compound of 5 generic NACKs x 1,024 sequence numbers made
    the server resend 5,120 packets (~6 MB). The attacker counts every packet that arrives with
    a sequence number it already had; the honest viewer must not notice the storm."""
    honest = await watching(http, live, nack=True)
    attacker = await watching(http, live, decrypt=False)
    try:
        # -- one compound
        t1 = now_ns()
        size = attacker.nack(storm_seqs(attacker.newest()), copies=5)
        assert 1200 <= size <= 1300, size  # the finding's 1,280 bytes
        await asyncio.sleep(1.0)
        once, once_bytes = attacker.retransmissions(t1)
        problems = []
        if once > ONE_COMPOUND_LIMIT:
            problems.append(
                f"one {size}-byte RTCP compound made the server resend {once} packets "
                f"({once_bytes / 1e6:.2f} MB); at most {ONE_COMPOUND_LIMIT} allowed"
            )

        # -- a storm: 20 compounds in ~1 s
        await asyncio.sleep(1.0)  # let any retransmission budget refill
        t2 = now_ns()
        before = [e for e in honest.log if t2 - 2_000_000_000 <= e[3] < t2 and not e[5]]
        stream_bytes_per_s = sum(e[4] for e in before) / 2.0
        biggest = max(e[4] for e in honest.log)
        for _ in range(20):
            attacker.nack(storm_seqs(attacker.newest()), copies=5)
            await asyncio.sleep(0.05)
        t3 = now_ns()
        await asyncio.sleep(1.5)
        storm_s = (t3 - t2) / 1e9
        n, resent = attacker.retransmissions(t2)
        bound = 1.25 * stream_bytes_per_s * max(1.0, storm_s) + ONE_COMPOUND_LIMIT * biggest
        ratio, gap_ms = honest.delivery(t2 - 500_000_000, t3 + 500_000_000)
        print(
            f"one compound: {once} packets / {once_bytes / 1e6:.2f} MB resent; "
            f"storm of 20 compounds over {storm_s:.2f} s: {n} packets / {resent / 1e6:.2f} MB "
            f"(bound {bound / 1e6:.2f} MB: stream {stream_bytes_per_s * 8 / 1e6:.2f} Mbit/s "
            f"+ one burst of {ONE_COMPOUND_LIMIT}); honest viewer: {ratio:.2%} delivered, "
            f"longest video gap {gap_ms:.0f} ms"
        )
        if resent > bound:
            problems.append(
                f"a storm of 20 compounds over {storm_s:.2f} s made the server resend {n} "
                f"packets / {resent / 1e6:.2f} MB; bound {bound / 1e6:.2f} MB (the stream's "
                f"{stream_bytes_per_s * 8 / 1e6:.2f} Mbit/s for the storm + one burst)"
            )
        if ratio < HONEST_DELIVERY:
            problems.append(f"the honest viewer got {ratio:.2%} of its packets during the storm")
        if gap_ms > HONEST_GAP_MS:
            problems.append(f"the honest viewer's video stalled {gap_ms:.0f} ms during the storm")
        assert not problems, "\n".join(problems)
    finally:
        await attacker.close(http)
        await honest.close(http)


# -- 2. media redirection -------------------------------------------------------------------------


async def assert_not_redirected(
    viewer: Watcher, attacker: Listener, since_ns: int, what: str
) -> None:
    await asyncio.sleep(1.2)
    attacker.drain()
    arrived = viewer.count(since_ns + 200_000_000, kind="video")
    assert attacker.media == 0, (
        f"{what}: the attacker's socket {attacker.address} received {attacker.media} media "
        f"datagrams (and {attacker.dtls} DTLS); the viewer got {arrived} video packets"
    )
    assert attacker.dtls == 0, f"{what}: the server sent DTLS to the attacker"
    assert arrived >= 50, f"{what}: the viewer got only {arrived} video packets in 1 s"


def credentials(viewer: Watcher) -> tuple[str, str, str]:
    assert viewer.remote is not None
    return viewer.remote.ufrag, viewer.transport.local_ufrag, viewer.remote.pwd


@pytest.mark.parametrize("fingerprint", [True, False], ids=["fingerprint", "no-fingerprint"])
async def test_use_candidate_after_integrity_does_not_redirect(
    live: Live, http: aiohttp.ClientSession, fingerprint: bool
) -> None:
    """(a) The viewer's own non-nominating check (a consent refresh), captured, with
    USE-CANDIDATE appended after MESSAGE-INTEGRITY (which does not cover it) and, in one
    variant, a recomputed FINGERPRINT (a CRC, no secret), replayed from another address."""
    viewer = await watching(http, live)
    attacker = Listener()
    try:
        captured = binding_request(*credentials(viewer), use_candidate=False)
        viewer.send_raw(captured)  # what the viewer says on the wire
        await asyncio.sleep(0.2)
        t = now_ns()
        attacker.sendto(append_use_candidate(captured, fingerprint=fingerprint), live.media)
        await assert_not_redirected(viewer, attacker, t, "USE-CANDIDATE after MI")
    finally:
        attacker.close()
        await viewer.close(http)


async def test_replayed_nominating_check_does_not_redirect(
    live: Live, http: aiohttp.ClientSession
) -> None:
    """(b) A captured Binding request (with USE-CANDIDATE, byte for byte what our client sent)
    re-sent from another source address."""
    viewer = await watching(http, live)
    attacker = Listener()
    try:
        captured = [d for d in viewer.stun_sent() if has_use_candidate(d)][-1]
        t = now_ns()
        for _ in range(3):
            attacker.sendto(captured, live.media)
        await assert_not_redirected(viewer, attacker, t, "replayed nominating check")
    finally:
        attacker.close()
        await viewer.close(http)


async def test_dtls_looking_datagram_does_not_redirect(
    live: Live, http: aiohttp.ClientSession
) -> None:
    """(c) Once an address has passed a check (here: a replayed consent refresh), any single
    datagram with a first byte in 20..63 from it moved the send address, unauthenticated."""
    viewer = await watching(http, live)
    attacker = Listener()
    try:
        captured = binding_request(*credentials(viewer), use_candidate=False)
        viewer.send_raw(captured)
        await asyncio.sleep(0.2)
        t = now_ns()
        attacker.sendto(captured, live.media)  # replayed: the address becomes "validated"
        await assert_not_redirected(viewer, attacker, t, "replayed consent refresh")
        t = now_ns()
        for datagram in (dtls_record(23, 1, 7, os.urandom(60)), b"\x16\xfe\xfd" + bytes(10)):
            attacker.sendto(datagram, live.media)
        await assert_not_redirected(viewer, attacker, t, "DTLS-looking datagram")
    finally:
        attacker.close()
        await viewer.close(http)


async def test_own_srtcp_from_a_forged_address_does_not_redirect(
    live: Live, http: aiohttp.ClientSession
) -> None:
    """(e) A viewer holds its own SRTP keys, so it can send SRTCP that authenticates from any
    source address it can forge (here a socket at 127.0.0.2 that never answers STUN stands in
    for a victim). Media moves only to an address that answers the server's own Binding
    request with the viewer's ice-pwd (RFC 7675 return routability); a real move does."""
    viewer = await watching(http, live)
    victim = Listener()
    mover = Listener()
    srtp = viewer.transport.srtp
    assert srtp is not None
    report = bytes(RtcpReceiverReport(ssrc=viewer.ssrc, reports=[]))
    try:
        # the address passes a fresh check signed with the viewer's own credentials
        victim.sendto(binding_request(*credentials(viewer), use_candidate=True), live.media)
        await asyncio.sleep(0.2)
        victim.drain()
        victim.stun = 0
        t = now_ns()
        for _ in range(5):
            victim.sendto(srtp.protect_rtcp(report), live.media)
            await asyncio.sleep(0.1)
        await assert_not_redirected(viewer, victim, t, "the viewer's own SRTCP from elsewhere")
        assert victim.stun >= 1, "the server did not probe the new address"

        # the same, from an address that answers the probe as the viewer's agent would
        mover.sendto(binding_request(*credentials(viewer), use_candidate=False), live.media)
        await asyncio.sleep(0.2)
        mover.drain()
        mover.media = 0
        pwd = viewer.transport.local_pwd.encode()
        answered = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and mover.media < 20:
            mover.sendto(srtp.protect_rtcp(report), live.media)
            for _ in range(10):
                await asyncio.sleep(0.01)
                answered += answer_probes(mover, pwd)
            mover.drain()
        assert answered >= 1, "no probe reached the answering address"
        assert mover.media >= 20, f"media did not follow a verified move ({mover.media})"
    finally:
        victim.close()
        mover.close()
        await viewer.close(http)


def answer_probes(listener: Listener, pwd: bytes) -> int:
    """Answer the server's Binding requests waiting on ``listener`` (signed with ``pwd``)."""
    answered = 0
    while True:
        try:
            data, addr = listener.sock.recvfrom(4096)
        except (BlockingIOError, InterruptedError):
            return answered
        if not data or data[0] >= 4:
            if 127 < (data[0] if data else 0) < 192:
                listener.media += 1
            continue
        message = stun.StunMessage.parse(data)
        if message.msg_class == stun.REQUEST and stun.check_integrity(data, pwd):
            listener.sendto(stun.binding_success(message, listener.address, pwd), addr)
            answered += 1


async def nack_answered(viewer: Watcher, back: int) -> int:
    """NACK five packets the viewer already has; how many came back within 1 s."""
    newest = viewer.newest()
    t = now_ns()
    viewer.nack([newest - back - i for i in range(5)])
    await asyncio.sleep(1.0)
    return viewer.retransmissions(t)[0]


@pytest.mark.skipif(not can_spoof(), reason="spoofing a source address needs CAP_NET_RAW")
async def test_other_session_cannot_take_over_an_address(
    live: Live, http: aiohttp.ClientSession
) -> None:
    """(d) ``UdpMux.bind`` let one session take over an address a live session owns: the
    attacker opens its own session and sends a valid check for it with the victim's source
    address (spoofed). From then on the victim's RTCP (its NACKs, receiver reports) went to the
    attacker's session: the victim's NACKs were no longer answered."""
    victim = await watching(http, live)
    thief = Watcher()
    await thief.join(http, live.server.http, connect=False)
    try:
        assert await nack_answered(victim, 40) >= 1, "precondition: the victim's NACKs work"
        request = binding_request(*credentials(thief), use_candidate=True)
        for _ in range(3):
            spoofed_udp(victim.transport.local, live.media, request)
            await asyncio.sleep(0.05)
        t = now_ns()
        answered = await nack_answered(victim, 20)
        assert answered >= 1, (
            "after another session's check from the victim's (spoofed) address, the victim's "
            "NACKs are no longer answered: its address was taken over"
        )
        assert victim.count(t, kind="video") >= 50, "the victim stopped receiving media"
    finally:
        await thief.close(http)
        await victim.close(http)


# -- 3. a bad DTLS record during the handshake ----------------------------------------------------


def inject_before_dtls(index: int, garbage: list[bytes]):  # type: ignore[no-untyped-def]
    """A ``before_send`` hook: the garbage goes out, from the viewer's own (validated) address,
    right before its ``index``-th DTLS datagram (0: the ClientHello; 1: the second flight)."""
    seen = [0]

    def hook(data: bytes) -> list[bytes]:
        if data and 19 < data[0] < 64:
            n = seen[0]
            seen[0] += 1
            if n == index:
                return [*garbage, data]
        return [data]

    return hook


GARBAGE = garbage_records()


@pytest.mark.parametrize(
    ("position", "kinds"),
    [(0, [k]) for k in GARBAGE] + [(1, list(GARBAGE))],
    ids=[f"before-clienthello-{k}" for k in GARBAGE] + ["before-second-flight-all"],
)
async def test_malformed_dtls_record_does_not_kill_handshake(
    live: Live, http: aiohttp.ClientSession, position: int, kinds: list[str]
) -> None:
    viewer = Watcher(before_send=inject_before_dtls(position, [GARBAGE[k] for k in kinds]))
    try:
        try:
            await viewer.join(http, live.server.http, timeout=6.0)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"garbage {kinds} before DTLS datagram {position} killed it: {exc}")
        assert await wait_for(lambda: viewer.count(kind="video") >= 30, 5), "no media"
    finally:
        await viewer.close(http)


# -- 4. the handshake deadline --------------------------------------------------------------------


def supports_handshake_timeout() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "relaycast", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        timeout=30,
    )
    return "--handshake-timeout" in out.stdout


async def test_viewer_that_never_does_dtls_is_closed(server_factory: ServerFactory) -> None:
    """ICE passes (and consent keeps being refreshed) but no DTLS ever: the session must be
    gone after the handshake timeout (2 s here; the default 10 s when the flag is missing)."""
    timeout = 2.0 if supports_handshake_timeout() else 10.0
    args = ["--handshake-timeout", "2"] if timeout == 2.0 else []
    srv = server_factory.start(*args)
    viewer = Watcher(before_send=lambda d: [] if d and 19 < d[0] < 64 else [d])
    async with aiohttp.ClientSession() as http:
        try:
            await viewer.join(http, srv.http, connect=False)
            assert viewer.remote is not None
            viewer.transport.start(viewer.remote)
            await asyncio.wait_for(viewer.transport.ice_connected.wait(), 5)
            t0 = time.monotonic()

            async def connecting() -> int:
                async with http.get(f"{srv.http}/api/streams/live") as r:
                    if r.status == 404:
                        return 0
                    return int((await r.json())["viewers_connecting"])

            assert await connecting() == 1, "precondition: the viewer is connecting"
            while time.monotonic() - t0 < timeout + 4.0 and await connecting():
                viewer.send_raw(binding_request(*credentials(viewer)))  # consent stays fresh
                await asyncio.sleep(0.5)
            left = await connecting()
            assert left == 0, (
                f"a viewer that passed ICE but never started DTLS is still connecting after "
                f"{time.monotonic() - t0:.1f} s (handshake timeout {timeout:.0f} s)"
            )
            assert viewer.location is not None
            async with http.delete(viewer.location) as r:
                assert r.status == 404, f"DELETE of the timed-out session answered {r.status}"
        finally:
            viewer.transport.close()


# -- 5. soak and garbage flood, small ------------------------------------------------------------


def _bench(name: str) -> Any:
    import importlib

    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


@pytest.mark.timeout(240)
def test_soak_join_leave_cycles(server_factory: ServerFactory) -> None:
    """300 viewer join/leave cycles (WHEP POST, ICE, DTLS, a few packets, DELETE), 6 at a
    time, with a live publisher: nothing is left behind and memory settles (generous: 12 MiB
    over the level after 100 warm-up cycles; the benchmark holds 10,000 cycles to 5 MB)."""
    soak, hc = _bench("soak"), _bench("hardening_common")
    srv = server_factory.start(*LOAD_TEST_LIMITS)  # every cycle comes from 127.0.0.1
    server = hc.Server.running(srv.http, srv.udp_port, srv.proc.pid, srv.keys["live"])
    result = soak.run_soak(
        server, cycles=300, concurrency=6, warmup=100, rss_slack=12 * 2**20, quiet=True
    )
    print({k: v for k, v in result.items() if k != "rss_curve"})
    assert result["cycles"] == 300
    assert result["ok"], "; ".join(result["problems"])


@pytest.mark.timeout(240)
def test_garbage_flood_does_not_hurt_viewers(server_factory: ServerFactory) -> None:
    """10 viewers watch for 5 s while one process floods the media port with garbage from 8
    addresses: every viewer gets >= 99.9 % of the packets, and the server counts what it threw
    away."""
    flood, hc = _bench("garbage_flood"), _bench("hardening_common")
    srv = server_factory.start(*LOAD_TEST_LIMITS)
    server = hc.Server.running(srv.http, srv.udp_port, srv.proc.pid, srv.keys["live"])
    result = flood.run_flood(server, viewers=10, duration=5.0, quiet=True)
    print(result)
    assert result["garbage_per_s"] > 5_000, "the flood did not get going"
    assert not result["viewer_errors"], result["viewer_errors"]
    assert len(result["delivered_ratios"]) == 10, result
    assert min(result["delivered_ratios"]) >= 0.999, (
        f"under {result['garbage_per_s']:,} garbage datagrams/s the viewers got "
        f"{result['delivered_ratios']}"
    )
    dropped = sum(result["server_drop_counters"].values())
    assert dropped >= 1000, (
        f"the server counted {dropped:.0f} drops/rejections of "
        f"{result['garbage_datagrams']} garbage datagrams: {result['server_drop_counters']}"
    )


def test_media_socket_binds_the_http_host(server_factory: ServerFactory) -> None:
    """The media socket listens where ``--host`` says (127.0.0.1 here), not on every interface
    (it used to bind 0.0.0.0 whatever the host)."""
    import psutil

    srv = server_factory.start()
    process = psutil.Process(srv.proc.pid)
    connections = getattr(process, "net_connections", process.connections)  # psutil < 6
    sockets = [c.laddr for c in connections(kind="udp") if c.laddr and c.laddr[1] == srv.udp_port]
    assert sockets, "no media socket on the UDP port"
    assert {addr[0] for addr in sockets} == {"127.0.0.1"}, sockets
