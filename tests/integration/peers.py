"""aiortc as an independent WebRTC peer: a WHIP publisher and WHEP viewers that decode.

aioice gathers host candidates on every interface; these tests talk to loopback only, so the
candidate list is pinned to 127.0.0.1 (harness configuration, not a stand-in for relaycast).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.contrib.media import MediaStreamError
from aiortc.mediastreams import AudioStreamTrack

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # type: ignore[assignment]


class PatternTrack(VideoStreamTrack):
    """A moving test pattern (320x240, 30 fps): enough change for real keyframes and deltas."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        x = (self.count * 4) % self.width
        image[:, x : x + 20] = (255, 255, 0)
        image[(self.count * 2) % self.height, :] = (0, 128, 255)
        image[:20, :20] = (self.count % 256, 0, 0)
        self.count += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def prefer_codec(pc: RTCPeerConnection, kind: str, mime: str) -> None:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == mime.lower()]
    rtx = [c for c in caps if c.mimeType.lower().endswith("/rtx")]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(chosen + rtx)


@dataclass
class Publisher:
    pc: RTCPeerConnection
    location: str
    answer: str
    video: PatternTrack | None


async def publish(
    base: str,
    stream: str,
    key: str,
    *,
    video_codec: str = "video/VP8",
    audio: bool = True,
) -> Publisher:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
    video = PatternTrack()
    pc.addTransceiver(video, direction="sendonly")
    if audio:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    prefer_codec(pc, "video", video_codec)
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{base}/whip/{stream}",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        )
        answer = await response.text()
        assert response.status == 201, (response.status, answer)
        location = response.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return Publisher(pc, location, answer, video)


@dataclass
class Viewer:
    pc: RTCPeerConnection
    location: str
    answer: str
    frames: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})
    sizes: list[tuple[int, int]] = field(default_factory=list)
    first_frame_at: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait_frames(self, kind: str, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.frames[kind] < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.frames[kind]

    async def close(self, base: str) -> None:
        for task in self.tasks:
            task.cancel()
        async with aiohttp.ClientSession() as http:
            await http.delete(f"{base}{self.location}")
        await self.pc.close()


async def _consume(viewer: Viewer, track: MediaStreamTrack) -> None:
    try:
        while True:
            frame = await track.recv()
            if viewer.first_frame_at is None and track.kind == "video":
                viewer.first_frame_at = time.monotonic()
            viewer.frames[track.kind] += 1
            if track.kind == "video" and len(viewer.sizes) < 5:
                viewer.sizes.append((frame.width, frame.height))
    except MediaStreamError:
        pass


async def view(base: str, stream: str, *, expect_status: int = 201) -> Viewer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{base}/whep/{stream}",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        answer = await response.text()
        assert response.status == expect_status, (response.status, answer)
        location = response.headers.get("Location", "")
    viewer = Viewer(pc, location, answer)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.ensure_future(_consume(viewer, track)))

    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return viewer
