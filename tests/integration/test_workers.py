"""``relaycast serve --workers 2``: one stream's viewers on both workers, signalling and STUN
that reach the wrong worker, ICE-TCP connections handed over, a worker killed and restarted,
garbage on the shared port. Real processes, real UDP and TCP on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from tests.integration import peers

from relaycast.net import stun

pytestmark = pytest.mark.integration

KEY = "test-key"


async def _get(base: str, path: str) -> Any:
    # a new connection each time: either worker may answer
    async with aiohttp.ClientSession() as http, http.get(f"{base}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _workers(base: str) -> list[dict[str, Any]]:
    server = await _get(base, "/api/server")
    workers: list[dict[str, Any]] = server["workers"]
    return workers


async def _both_workers_up(base: str) -> dict[int, int]:
    """{worker: pid} once every worker has started (a worker still starting has no pid in
    the list yet, and datagrams the kernel gives its socket wait until it reads them)."""
    pids: dict[int, int] = {}
    for _ in range(40):
        pids = {w["worker"]: w["pid"] for w in await _workers(base)}
        if len(pids) == 2 and all(pids.values()):
            return pids
        await asyncio.sleep(0.25)
    raise AssertionError(f"the workers did not all start: {pids}")


async def _viewers_on_both(base: str, stream: str, at_most: int = 12) -> list[peers.Viewer]:
    """Open viewers (each POST on a new connection, which the kernel gives to either worker)
    until both workers have some."""
    viewers: list[peers.Viewer] = []
    while len(viewers) < at_most:
        viewers.append(await peers.view(base, stream))
        owners = {v.location.rsplit("/", 1)[1].split(".", 1)[0] for v in viewers}
        if len(viewers) >= 4 and owners == {"0", "1"}:
            return viewers
    pytest.fail(f"{at_most} viewers all landed on worker(s) {owners}")


@pytest.fixture
def workers2(server_factory):  # type: ignore[no-untyped-def]
    return server_factory.start("--workers", "2")


async def test_one_stream_viewers_on_both_workers_decode(workers2) -> None:
    base = workers2.http
    publisher = await peers.publish(base, "live", KEY)
    viewers = await _viewers_on_both(base, "live")
    try:
        for viewer in viewers:
            assert await viewer.wait_frames("video", 30, timeout=30) >= 30, viewer.location
            assert await viewer.wait_frames("audio", 40, timeout=10) >= 40, viewer.location
            assert viewer.sizes[0] == (320, 240)
        info = await _get(base, "/api/streams/live")
        assert info["live"] is True
        assert info["viewers"] == len(viewers)
        per_worker = {w["worker"]: w for w in info["workers"]}
        assert set(per_worker) == {0, 1}
        assert all(w["viewers"] > 0 for w in per_worker.values()), info["workers"]
        holder = info["publisher_worker"]
        assert holder in (0, 1) and per_worker[holder]["publisher"] is True
        assert publisher.location.split("/")[-1].startswith(f"{holder}.")
        listed = await _get(base, "/api/streams")
        assert [s["name"] for s in listed] == ["live"] and listed[0]["viewers"] == len(viewers)
        workers = await _workers(base)
        other = workers[1 - holder]
        assert other["relay_packets_in"] > 0  # the other worker's viewers were fed by the relay
        assert workers[holder]["relay_packets_out"] > 0
        async with aiohttp.ClientSession() as http:
            text = await (await http.get(f"{base}/metrics")).text()
        assert re.search(r'relaycast_sessions_created_total\{worker="0"\} ', text), text[:2000]
        assert re.search(r'relaycast_sessions_created_total\{worker="1"\} ', text)
    finally:
        for viewer in viewers:
            await viewer.close(base)
        await publisher.pc.close()


async def test_patch_and_delete_reach_the_owner(workers2) -> None:
    base = workers2.http
    # sessions on both workers, which shows both accept HTTP (a worker still starting is not
    # in the kernel's group yet: once all 25 requests went to one worker in CI)
    viewers = await _viewers_on_both(base, "live")
    publisher = await peers.publish(base, "live", KEY)
    try:
        sessions = [v.location for v in viewers] + [publisher.location]
        auth = {"Authorization": f"Bearer {KEY}"}
        for location in sessions:
            for _ in range(4):  # new connections: some land on the other worker
                async with aiohttp.ClientSession() as http:
                    response = await http.patch(
                        f"{base}{location}",
                        data="a=end-of-candidates\r\n",
                        headers={"Content-Type": "application/trickle-ice-sdpfrag", **auth},
                    )
                    assert response.status == 204, (location, await response.text())
        workers = await _workers(base)
        assert sum(w["http_proxied"] for w in workers) > 0, workers
        for location in sessions:
            async with aiohttp.ClientSession() as http:
                deleted = await http.delete(f"{base}{location}", headers=auth)
                assert deleted.status == 200, (location, await deleted.text())
            async with aiohttp.ClientSession() as http:
                again = await http.delete(f"{base}{location}", headers=auth)
                assert again.status == 404
        wrong = publisher.location.replace("/whip/live/", "/whip/live/9.")
        async with aiohttp.ClientSession() as http:
            assert (await http.delete(f"{base}{wrong}", headers=auth)).status == 404
    finally:
        for viewer in viewers:
            await viewer.pc.close()
        await publisher.pc.close()


async def _server_credentials(base: str) -> tuple[str, str, str]:
    """A viewer session made from an aiortc offer that never connects: (location, our ufrag,
    our pwd) from the answer."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{base}/whep/live",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        answer = await response.text()
        assert response.status == 201, answer
        location = response.headers["Location"]
    await pc.close()
    ufrag = re.search(r"a=ice-ufrag:(\S+)", answer)
    pwd = re.search(r"a=ice-pwd:(\S+)", answer)
    assert ufrag is not None and pwd is not None
    return location, ufrag.group(1), pwd.group(1)


def _binding(ufrag: str, pwd: str) -> tuple[bytes, bytes]:
    transaction = os.urandom(12)
    request = stun.StunMessage(
        stun.BINDING,
        stun.REQUEST,
        transaction,
        [
            (stun.USERNAME, f"{ufrag}:peer".encode()),
            (stun.PRIORITY, struct.pack("!I", 0x6E0001FF)),
            (stun.ICE_CONTROLLING, os.urandom(8)),
        ],
    )
    return request.encode(pwd.encode()), transaction


async def test_stun_and_ice_tcp_reach_the_owner(workers2) -> None:
    """Binding requests from fresh UDP ports and on fresh ICE-TCP connections are all
    answered by the session's worker, wherever the kernel delivered them."""
    base = workers2.http
    port = workers2.udp_port
    await _both_workers_up(base)
    location, ufrag, pwd = await _server_credentials(base)
    owner = int(location.rsplit("/", 1)[1].split(".", 1)[0])
    assert ufrag[0] == "ab"[owner]  # the ufrag names the worker too
    for _ in range(6):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(1.0)
            request, transaction = _binding(ufrag, pwd)
            for attempt in range(3):  # ICE retransmits an unanswered check (RFC 8445 §14.3)
                sock.sendto(request, ("127.0.0.1", port))
                try:
                    answer, source = sock.recvfrom(2048)
                    break
                except TimeoutError:
                    if attempt == 2:
                        raise
            assert source == ("127.0.0.1", port)  # from the shared port
            message = stun.StunMessage.parse(answer)
            assert message.msg_class == stun.SUCCESS and message.transaction_id == transaction
    for _ in range(6):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request, transaction = _binding(ufrag, pwd)
        writer.write(struct.pack("!H", len(request)) + request)
        await writer.drain()
        (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 3.0))
        message = stun.StunMessage.parse(await asyncio.wait_for(reader.readexactly(length), 3.0))
        assert message.msg_class == stun.SUCCESS and message.transaction_id == transaction
        writer.close()
    workers = await _workers(base)
    handed = sum(w["stun_handed_over"] for w in workers)
    tcp_handed = sum(w["tcp_handed_over"] for w in workers)
    # 6 fresh ports and 6 fresh connections each miss the owner with probability 1/2
    assert handed + tcp_handed > 0, workers
    assert workers[owner]["pinned_sockets"] >= 1


async def test_garbage_and_unknown_ufrags_on_the_shared_port(workers2) -> None:
    base = workers2.http
    port = workers2.udp_port
    before = await _both_workers_up(base)
    _, ufrag, _pwd = await _server_credentials(base)
    junk: list[bytes] = [b"", b"\x00", b"\x01\x01\x00\x00", os.urandom(200), b"\xff" * 1200]
    for prefix in ("a", "b", "c", "Z", "/", "é"):
        junk.append(_binding(prefix + "xyzxyz", "wrong-password-000000000")[0])
    junk.append(_binding(ufrag, "not-the-password-0000000")[0])  # right worker, bad MI
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(20):
            for data in junk:
                sock.sendto(data, ("127.0.0.1", port))
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing unauthenticated is answered
            sock.recvfrom(2048)
    for data in junk[5:]:
        with socket.create_connection(("127.0.0.1", port), timeout=3.0) as conn:
            conn.sendall(struct.pack("!H", len(data)) + data)
            conn.settimeout(3.0)
            assert conn.recv(2048) == b""  # closed, no answer
    publisher = await peers.publish(base, "live", KEY)
    viewer = await peers.view(base, "live")
    try:
        assert await viewer.wait_frames("video", 20, timeout=30) >= 20
    finally:
        await viewer.close(base)
        await publisher.pc.close()
    after = {w["worker"]: w["pid"] for w in await _workers(base)}
    assert after == before  # nobody crashed


async def test_killed_worker_is_restarted_and_service_is_back(workers2) -> None:
    """SIGKILL the worker that does not hold the publisher: viewers on the other worker keep
    playing, the supervisor forks a new one, and viewers that come back (aiortc viewers do not
    reconnect by themselves: the test opens new sessions, as the watch page's retry does) play
    within 10 s of the kill."""
    base = workers2.http
    publisher = await peers.publish(base, "live", KEY)
    viewers = await _viewers_on_both(base, "live")
    try:
        for viewer in viewers:
            assert await viewer.wait_frames("video", 20, timeout=30) >= 20
        holder = int(publisher.location.rsplit("/", 1)[1].split(".", 1)[0])
        victim = 1 - holder
        workers = await _workers(base)
        victim_pid = workers[victim]["pid"]
        survivors = [v for v in viewers if v.location.rsplit("/", 1)[1].startswith(f"{holder}.")]
        lost = len(viewers) - len(survivors)
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        back: list[peers.Viewer] = []
        while len(back) < lost:  # the watch page's retry: POST again until answered
            try:
                back.append(await peers.view(base, "live"))
            except (AssertionError, aiohttp.ClientError):
                await asyncio.sleep(0.2)
        for viewer in back:
            remaining = 10.0 - (time.monotonic() - killed_at)
            assert await viewer.wait_frames("video", 10, timeout=max(remaining, 0.1)) >= 10
        assert time.monotonic() - killed_at < 10.0
        for viewer in survivors:
            frames = viewer.frames["video"]
            assert await viewer.wait_frames("video", frames + 15, timeout=10) >= frames + 15
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = await _workers(base)
            if workers[victim]["up"] and workers[victim]["pid"] != victim_pid:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"worker {victim} was not restarted: {workers}")
        viewers += back
        newcomers = await _viewers_on_both(base, "live")  # the restarted worker serves again
        viewers += newcomers
        for viewer in newcomers:
            assert await viewer.wait_frames("video", 10, timeout=15) >= 10, viewer.location
    finally:
        for viewer in viewers:
            await viewer.close(base)
        await publisher.pc.close()


async def test_publisher_reconnect_on_other_worker_keeps_viewers(workers2) -> None:
    """Viewers on both workers keep playing when the streamer comes back (the new WHIP POST
    lands on either worker)."""
    base = workers2.http
    auth = {"Authorization": f"Bearer {KEY}"}
    first = await peers.publish(base, "live", KEY)
    viewers = await _viewers_on_both(base, "live")
    try:
        for viewer in viewers:
            assert await viewer.wait_frames("video", 20, timeout=30) >= 20
        async with aiohttp.ClientSession() as http:
            assert (await http.delete(f"{base}{first.location}", headers=auth)).status == 200
        await first.pc.close()
        before = {v.location: v.frames["video"] for v in viewers}
        second = await peers.publish(base, "live", KEY)
        try:
            for viewer in viewers:
                goal = before[viewer.location] + 20
                assert await viewer.wait_frames("video", goal, timeout=30) >= goal
        finally:
            await second.pc.close()
    finally:
        for viewer in viewers:
            await viewer.close(base)
