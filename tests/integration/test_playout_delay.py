"""Server-driven buffering with a third-party-style viewer: an aiortc WHEP viewer on loopback
whose offer carries the playout-delay extension, with nftables dropping a share of the
server's packets to it. The viewer's raw RTP (after SRTP) is read where aiortc's DTLS transport
hands it on, so the extension's values are seen as the viewer gets them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from tests.integration import peers

from relaycast.media.feedback.playout_delay import decode
from relaycast.rtp.packet import RtpPacket

URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
EXT_ID = 12


def nft_usable() -> str | None:
    if shutil.which("nft") is None:
        return "nft is not installed"
    if os.geteuid() != 0:
        return "injecting loss with nftables needs root"
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"nft cannot be used: {probe.stderr.strip()}"


class Drop:
    def __init__(self) -> None:
        self.table = f"rc_playout_{os.getpid()}"

    def set(self, sport: int, dport: int, percent: int) -> None:
        self.remove()
        rule = f"udp sport {sport} udp dport {dport} numgen random mod 100 < {percent} drop"
        for command in (
            f"add table inet {self.table}",
            f"add chain inet {self.table} out {{ type filter hook output priority 0 ; }}",
            f"add rule inet {self.table} out {rule}",
        ):
            subprocess.run(["nft", command], check=True, capture_output=True, text=True)

    def remove(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)


class Capture:
    """(time, (min ms, max ms) or None) of every video packet the viewer decrypted."""

    def __init__(self) -> None:
        self.values: list[tuple[float, tuple[int, int] | None]] = []
        self.video_pts: set[int] = set()  # the answer's video payload types, RTX left out

    def since(self, start: float) -> list[tuple[int, int] | None]:
        return [v for t, v in self.values if t >= start]


async def view_with_playout_delay(base: str, stream: str) -> tuple[RTCPeerConnection, Capture]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    # a player that offers the extension (aiortc itself does not know it)
    lines = pc.localDescription.sdp.split("\r\n")
    kind = ""
    out = []
    for line in lines:
        if line.startswith("m="):
            kind = line[2:7]
        out.append(line)
        if kind == "video" and line.startswith("a=mid:"):
            out.append(f"a=extmap:{EXT_ID} {URI}")
    offer = "\r\n".join(out)
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{base}/whep/{stream}", data=offer, headers={"Content-Type": "application/sdp"}
        )
        answer = await response.text()
        assert response.status == 201, answer
    assert f"a=extmap:{EXT_ID} {URI}" in answer
    capture = Capture()
    dtls = pc.getTransceivers()[0].receiver.transport
    original = dtls._handle_rtp_data

    async def tap(data: bytes, arrival_time_ms: int) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            packet = None
        if packet is not None and packet.payload_type in capture.video_pts:
            value = packet.get_extension(EXT_ID)
            capture.values.append((time.monotonic(), decode(value) if value else None))
        await original(data, arrival_time_ms)

    dtls._handle_rtp_data = tap
    for line in answer.split("\r\n"):
        if line.startswith("m=video"):
            capture.video_pts.update(int(pt) for pt in line.split()[3:])
    for line in answer.split("\r\n"):
        if line.startswith("a=rtpmap:") and "rtx/" in line:
            capture.video_pts.discard(int(line.split(":")[1].split()[0]))
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return pc, capture


def local_port(pc: RTCPeerConnection) -> int:
    ice = pc.getTransceivers()[0].receiver.transport.transport
    connection: Any = ice._connection
    pair = connection._nominated.get(1)
    return int(pair.local_candidate.port)


async def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.25)
    return False


async def test_values_grow_with_loss(server_factory: Any) -> None:
    why = nft_usable()
    if why:
        pytest.skip(why)
    server = server_factory.start()
    base = server.http
    publisher = await peers.publish(base, "live", "test-key")
    pc, capture = await view_with_playout_delay(base, "live")
    drop = Drop()
    try:
        assert await wait_for(lambda: len(capture.values) > 100, 15), "no video"
        await asyncio.sleep(4.0)
        clean = capture.since(time.monotonic() - 3.0)
        assert clean and all(v is not None for v in clean), "video without the extension"
        assert {v for v in clean} == {(0, 10_000)}  # a clean link: no minimum, the usual max
        drop.set(server.udp_port, local_port(pc), 15)
        lossy_from = time.monotonic()
        raised = await wait_for(
            lambda: any(v is not None and v[0] >= 500 for v in capture.since(lossy_from)), 12
        )
        values = sorted({v for v in capture.since(lossy_from) if v is not None})
        print(f"[playout-delay] at 15 % loss: {values}")
        assert raised, f"the minimum did not grow under 15 % loss: {values}"
        assert all(v[1] == 10_000 for v in values)
    finally:
        drop.remove()
        await pc.close()
        await publisher.pc.close()


async def test_no_playout_delay_sends_none(server_factory: Any) -> None:
    server = server_factory.start("--no-playout-delay")
    publisher = await peers.publish(server.http, "live", "test-key")
    pc, capture = await view_with_playout_delay(server.http, "live")
    try:
        assert await wait_for(lambda: len(capture.values) > 60, 15), "no video"
        assert all(v is None for _, v in capture.values)
    finally:
        await pc.close()
        await publisher.pc.close()
