"""Session lifecycle against an in-process server: every way a session ends frees everything.

The server runs in the test's event loop (``create_app`` + aiohttp ``AppRunner``) so the
registries of :class:`relaycast.media.server.MediaServer` can be inspected: ``sessions``,
``streams``, ``ice.by_ufrag``, ``mux.by_address``, the Forwarders' DownTracks, DTLS timers and
the asyncio tasks.  Peers are aiortc (see ``peers.py``); a session ends by WHIP/WHEP DELETE, by
``pc.close()`` (aiortc sends a DTLS close_notify) or by the peer vanishing (its sockets closed
without a word), which only the consent timeout (RFC 7675) can detect.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import aioice.ice
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from tests.integration import peers

from relaycast.app import create_app
from relaycast.config import Config
from relaycast.http.signalling import SERVER_KEY
from relaycast.media.server import MediaServer
from relaycast.media.session import Session
from relaycast.net.transport import PeerTransport

pytestmark = pytest.mark.integration

STREAMS = [f"s{i}" for i in range(24)]
KEY = "k"


@dataclass
class InProcess:
    app: web.Application
    runner: web.AppRunner
    base: str

    @property
    def media(self) -> MediaServer:
        return self.app[SERVER_KEY]


async def start_in_process(**overrides: Any) -> InProcess:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "udp_port": 0,
        "public_ips": ("127.0.0.1",),
        "host_candidates": False,
        "stream_keys": {name: KEY for name in STREAMS},
    }
    settings.update(overrides)
    app = create_app(Config(**settings))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return InProcess(app, runner, f"http://127.0.0.1:{port}")


@pytest.fixture
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc refreshes consent every ~0.5 s instead of ~5 s, so a healthy peer survives a
    3 s consent timeout (harness configuration of the peer, not of relaycast)."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)


@pytest.fixture
async def server(fast_consent: None) -> AsyncIterator[InProcess]:
    srv = await start_in_process(consent_timeout=3.0)
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


def session_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def transport_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Scheduled DTLS retransmission timers of PeerTransports still in the loop."""
    scheduled = getattr(loop, "_scheduled", [])
    return sum(
        1
        for handle in scheduled
        if not handle.cancelled()
        and isinstance(getattr(handle._callback, "__self__", None), PeerTransport)
    )


def vanish(pc: RTCPeerConnection) -> None:
    """The peer disappears: its ICE sockets close, no DTLS close_notify, no more STUN."""
    seen = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport or transceiver.sender.transport
        if dtls is None or id(dtls) in seen:
            continue
        seen.add(id(dtls))
        connection = dtls.transport._connection  # aioice.Connection
        for protocol in list(connection._protocols):
            if protocol.transport is not None:
                protocol.transport.close()


def assert_empty(media: MediaServer) -> None:
    assert media.sessions == {}, media.sessions
    assert media.streams == {}, media.streams
    assert media.ice.by_ufrag == {}, media.ice.by_ufrag
    assert media.mux.by_address == {}, media.mux.by_address
    assert media.mux.dedicated == 0  # publishers' own sockets are closed
    assert media.ice.probes == {}


async def delete(base: str, location: str, key: str | None = None) -> int:
    """DELETE a session URL (a WHIP one needs the stream's publish key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{base}{location}", headers=headers) as response,
    ):
        return response.status


async def test_many_sessions_end_every_way_and_leave_nothing(server: InProcess) -> None:
    """(a) 21 publish/view cycles ended by DELETE, by pc.close() and by vanishing."""
    media = server.media
    loop = asyncio.get_running_loop()
    baseline_tasks = len(asyncio.all_tasks())
    refs: weakref.WeakSet[Session] = weakref.WeakSet()
    streams = []
    vanished: list[RTCPeerConnection] = []
    modes = ["delete", "close", "vanish"]
    cycles = 21

    async def cycle(i: int) -> None:
        name = STREAMS[i]
        mode = modes[i % 3]
        publisher = await peers.publish(server.base, name, KEY, audio=i % 2 == 0)
        viewer = await peers.view(server.base, name)
        pub = media.sessions[session_id(publisher.location)]
        sub = media.sessions[session_id(viewer.location)]
        refs.add(pub)
        refs.add(sub)
        streams.append(media.streams[name])
        assert await viewer.wait_frames("video", 1, timeout=15) >= 1, f"cycle {i}: no video"
        assert pub.transport.addr in media.mux.by_address
        assert media.ice.by_ufrag[pub.transport.local_ufrag] is pub.transport
        for task in viewer.tasks:
            task.cancel()
        if mode == "delete":
            assert await delete(server.base, viewer.location) == 200
            assert await delete(server.base, publisher.location) == 401  # WHIP needs the key
            assert await delete(server.base, publisher.location, KEY) == 200
            assert sub.id not in media.sessions and pub.id not in media.sessions
            await viewer.pc.close()
            await publisher.pc.close()
        elif mode == "close":
            await viewer.pc.close()
            await publisher.pc.close()
            # close_notify reached the server: no waiting for the consent timeout
            assert await wait_for(lambda: sub.closed and pub.closed, 1.0), (
                "pc.close() did not end the sessions (close_notify not handled?)"
            )
            assert "close_notify" in sub.close_reason
            assert "close_notify" in pub.close_reason
        else:
            vanish(viewer.pc)
            vanish(publisher.pc)
            vanished.extend([viewer.pc, publisher.pc])

    for i in range(cycles):
        await cycle(i)

    # the vanished ones go at the consent timeout (3 s, checked every second)
    assert await wait_for(lambda: not media.sessions and not media.streams, 6.0), {
        s.id[:6]: (s.role, s.closed, s.transport.last_consent) for s in media.sessions.values()
    }
    assert_empty(media)
    for stream in streams:
        for forwarder in stream.forwarders.values():
            assert forwarder.downtracks == ()
            assert forwarder.source is None
    assert transport_timers(loop) == 0
    for pc in vanished:
        await pc.close()
    # every Session object can be freed: nothing in the server holds on to one
    streams.clear()
    assert await wait_for(lambda: (gc.collect(), len(refs))[1] == 0, 3.0), [repr(s) for s in refs]
    assert await wait_for(lambda: len(asyncio.all_tasks()) <= baseline_tasks, 5.0), [
        t.get_coro() for t in asyncio.all_tasks()
    ]
    assert media.mux.sock is not None  # the server is still up and serving
    async with aiohttp.ClientSession() as http, http.get(f"{server.base}/api/streams") as response:
        assert response.status == 200
        assert await response.json() == []


async def test_vanished_viewer_is_cleaned_after_consent_timeout(server: InProcess) -> None:
    """(b) RFC 7675: only the silent viewer goes; the healthy publisher stays."""
    media = server.media
    publisher = await peers.publish(server.base, "s0", KEY)
    stayer = await peers.view(server.base, "s0")
    leaver = await peers.view(server.base, "s0")
    try:
        for viewer in (stayer, leaver):
            assert await viewer.wait_frames("video", 5, timeout=15) >= 5
        gone = media.sessions[session_id(leaver.location)]
        assert isinstance(gone.transport, PeerTransport)
        downtracks = list(gone.downtracks)
        ufrag, addr = gone.transport.local_ufrag, gone.transport.addr
        forwarder = media.streams["s0"].forwarders["video"]
        assert any(d in forwarder.downtracks for d in downtracks)
        vanished_at = time.monotonic()
        vanish(leaver.pc)
        await asyncio.sleep(1.5)
        assert not gone.closed, "closed before the consent timeout"
        assert await wait_for(lambda: gone.closed, 5.0), "vanished viewer never cleaned up"
        elapsed = time.monotonic() - vanished_at
        assert 2.5 < elapsed < 5.5, elapsed
        assert "consent" in gone.close_reason
        assert gone.id not in media.sessions
        assert ufrag not in media.ice.by_ufrag
        assert addr not in media.mux.by_address
        assert not any(d in forwarder.downtracks for d in downtracks)
        # the others are untouched and keep playing
        assert not media.sessions[session_id(publisher.location)].closed
        before = stayer.frames["video"]
        assert await stayer.wait_frames("video", before + 15, timeout=10) >= before + 15
        async with aiohttp.ClientSession() as http:
            info = await (await http.get(f"{server.base}/api/streams/s0")).json()
        assert info["viewers"] == 1

        # now the publisher vanishes too: its Tracks leave, the stream stays for the viewer
        pub = media.sessions[session_id(publisher.location)]
        vanish(publisher.pc)
        assert await wait_for(lambda: pub.closed, 6.0)
        assert "consent" in pub.close_reason
        assert media.streams["s0"].publisher is None
        assert forwarder.source is None
        assert not media.streams["s0"].live
    finally:
        await stayer.close(server.base)
        for pc in (leaver.pc, publisher.pc):
            await pc.close()
    assert await wait_for(lambda: not media.sessions, 2.0)
    assert_empty(media)


async def test_session_that_never_connects_expires(server: InProcess) -> None:
    """A POST whose peer never sends a single STUN request is dropped at the consent timeout."""
    offer_pc = RTCPeerConnection(peers.RTCConfiguration(iceServers=[]))
    offer_pc.addTransceiver("video", direction="recvonly")
    await offer_pc.setLocalDescription(await offer_pc.createOffer())
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.base}/whep/s1",
                data=offer_pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as response,
        ):
            assert response.status == 201
            location = response.headers["Location"]
        session = server.media.sessions[session_id(location)]
        assert server.media.ice.by_ufrag[session.transport.local_ufrag] is session.transport
        assert await wait_for(lambda: session.closed, 6.0)
        assert_empty(server.media)
        assert await delete(server.base, location) == 404
    finally:
        await offer_pc.close()


async def test_delete_cleans_up_at_once(server: InProcess) -> None:
    """(c) DELETE: everything is released before the response is sent; the peer is told."""
    media = server.media
    publisher = await peers.publish(server.base, "s2", KEY)
    viewer = await peers.view(server.base, "s2")
    try:
        assert await viewer.wait_frames("video", 3, timeout=15) >= 3
        sub = media.sessions[session_id(viewer.location)]
        pub = media.sessions[session_id(publisher.location)]
        sub_ufrag, sub_addr = sub.transport.local_ufrag, sub.transport.addr
        # the viewer's SRTCP proved its handshake done: OpenSSL's connection is gone, and the
        # close_notify below is sealed with the kept record keys (net/dtls_records.py)
        assert await wait_for(lambda: sub.transport.dtls.retired, 10.0)
        assert await wait_for(lambda: pub.transport.dtls.retired, 10.0)
        downtracks = list(sub.downtracks)
        assert len(downtracks) == 2
        forwarders = media.streams["s2"].forwarders

        assert await delete(server.base, viewer.location) == 200
        assert sub.closed and sub.id not in media.sessions
        assert sub_ufrag not in media.ice.by_ufrag
        assert sub_addr not in media.mux.by_address
        for forwarder in forwarders.values():
            assert not any(d in forwarder.downtracks for d in downtracks)
        assert media.streams["s2"].subscribers == set()
        assert await delete(server.base, viewer.location) == 404
        # the viewer got a close_notify: aiortc's DTLS transport ends
        dtls = viewer.pc.getTransceivers()[0].receiver.transport
        assert await wait_for(lambda: dtls.state == "closed", 3.0), dtls.state

        pub_ufrag, pub_addr = pub.transport.local_ufrag, pub.transport.addr
        assert await delete(server.base, publisher.location, KEY) == 200
        assert pub.closed
        assert_empty(media)
        assert pub_ufrag not in media.ice.by_ufrag and pub_addr not in media.mux.by_address
        for forwarder in forwarders.values():
            assert forwarder.source is None and forwarder.downtracks == ()
        assert transport_timers(asyncio.get_running_loop()) == 0
    finally:
        for task in viewer.tasks:
            task.cancel()
        await viewer.pc.close()
        await publisher.pc.close()


async def test_server_stop_closes_every_session(fast_consent: None) -> None:
    srv = await start_in_process()
    media = srv.media
    publisher = await peers.publish(srv.base, "s3", KEY)
    viewer = await peers.view(srv.base, "s3")
    try:
        assert await viewer.wait_frames("video", 1, timeout=15) >= 1
        sessions = list(media.sessions.values())
        assert len(sessions) == 2
        await srv.runner.cleanup()
        assert all(s.closed for s in sessions)
        assert media.sessions == {} and media.streams == {} and media.ice.by_ufrag == {}
        assert media._tasks == []
    finally:
        for task in viewer.tasks:
            task.cancel()
        await viewer.pc.close()
        await publisher.pc.close()


@pytest.mark.slow
async def test_vanished_viewer_default_consent_timeout() -> None:
    """With the default 30 s consent timeout (and aiortc's normal ~5 s consent interval)."""
    srv = await start_in_process()
    media = srv.media
    assert media.config.consent_timeout == 30.0
    publisher = await peers.publish(srv.base, "s4", KEY, audio=False)
    viewer = await peers.view(srv.base, "s4")
    try:
        assert await viewer.wait_frames("video", 1, timeout=15) >= 1
        gone = media.sessions[session_id(viewer.location)]
        vanish(viewer.pc)
        started = time.monotonic()
        # consent was last refreshed 0-6 s before the peer vanished (aioice: 4-6 s interval)
        await asyncio.sleep(20)
        assert not gone.closed, "closed long before the 30 s consent timeout"
        assert await wait_for(lambda: gone.closed, 13.0, step=0.2)
        assert 23.0 < time.monotonic() - started < 32.5
        assert gone.id not in media.sessions
        assert not media.sessions[session_id(publisher.location)].closed
    finally:
        await viewer.pc.close()
        await publisher.pc.close()
        await srv.runner.cleanup()


async def test_ice_restart_credentials_are_released(server: InProcess) -> None:
    """Two ICE restarts keep at most the current and the previous ufrag; DELETE frees both."""
    media = server.media
    pc = RTCPeerConnection(peers.RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{server.base}/whep/s5",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as response:
                assert response.status == 201
                location, etag = response.headers["Location"], response.headers["ETag"]
            session = media.sessions[session_id(location)]
            first = session.transport.local_ufrag
            seen = [first]
            for n in range(2):
                frag = f"a=ice-ufrag:re{n}x\r\na=ice-pwd:{'p' * 22}{n}\r\n"
                async with http.patch(
                    f"{server.base}{location}",
                    data=frag,
                    headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag},
                ) as response:
                    assert response.status == 200, await response.text()
                    etag = response.headers["ETag"]
                seen.append(session.transport.local_ufrag)
                owned = {u for u, t in media.ice.by_ufrag.items() if t is session.transport}
                assert owned == set(seen[-2:]), (owned, seen)
            assert len(set(seen)) == 3
            async with http.delete(f"{server.base}{location}") as response:
                assert response.status == 200
        assert_empty(media)
    finally:
        await pc.close()
