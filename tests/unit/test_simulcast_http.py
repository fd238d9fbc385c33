"""The WHEP layer extension and the API's layer fields, on a real app: a simulcast publisher
(its packets injected into its ingress leg) and a WHEP viewer that pins layers."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaycast.app import create_app
from relaycast.config import Config
from relaycast.http.signalling import SERVER_KEY
from relaycast.media.layers import video_frame_size
from relaycast.rtp.packet import build_extensions
from relaycast.sdp import parse_sdp

Client = TestClient[web.Request, web.Application]
SAMPLES = Path(__file__).parent / "sdp_samples"
REL = 'rel="urn:ietf:params:whep:ext:core:layer"'
SIZES = {"h": (1280, 720), "m": (640, 360), "l": (320, 180)}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    config = Config(host="127.0.0.1", port=0, udp_port=0, host_candidates=False)
    test_client: Client = TestClient(TestServer(create_app(config)))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def keyframe(ssrc: int, rid: str) -> bytes:
    """A VP8 keyframe packet of layer ``rid`` with the Chrome sample's RID extension (id 10)."""
    profile, block = build_extensions([(10, rid.encode())])
    frame = bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + struct.pack("<HH", *SIZES[rid])
    return (
        struct.pack("!BBHII", 0x90, 96, 1, 1000, ssrc)
        + struct.pack("!HH", profile, len(block) // 4)
        + block
        + b"\x10"
        + frame
        + b"x" * 500
    )


async def test_the_layer_extension_pins_and_unpins(client: Client) -> None:
    server = client.app[SERVER_KEY]
    publisher = server.publish("live", parse_sdp((SAMPLES / "chrome_simulcast.sdp").read_text()))
    for n, rid in enumerate(("h", "m", "l")):
        publisher.ingress.on_rtp(keyframe(0x100 + n, rid), 0)

    offer = (SAMPLES / "chrome_view.sdp").read_text()
    answer = await client.post(
        "/whep/live", data=offer, headers={"Content-Type": "application/sdp"}
    )
    assert answer.status == 201
    location = answer.headers["Location"]
    links = answer.headers.getall("Link")
    assert f"<{location}/layer>; {REL}" in links
    url = f"{location}/layer"
    video_mid = next(m.mid for m in parse_sdp(offer).media if m.kind == "video")

    status = await (await client.get(url)).json()
    assert status["mode"] == "auto"
    assert [layer["rid"] for layer in status["layers"]] == ["l", "m", "h"]  # lowest first
    assert [(x["width"], x["height"]) for x in status["layers"]] == [
        (320, 180),
        (640, 360),
        (1280, 720),
    ]
    assert status["target"] == "h"  # no estimate yet: the top layer
    assert status["reason"] == "no bandwidth estimate yet: top layer"

    pinned = await client.post(url, json={"mediaId": video_mid, "encodingId": "l"})
    assert pinned.status == 204
    status = await (await client.get(url)).json()
    assert (status["mode"], status["target"], status["reason"]) == (
        "pinned",
        "l",
        "pinned by viewer",
    )

    for body, words in [
        ({"mediaId": video_mid, "encodingId": "zz"}, "encodingId 'zz' is not a layer"),
        ({"mediaId": "nope", "encodingId": "h"}, "mediaId 'nope' is not this session's video"),
        ({"mediaId": video_mid}, "encodingId"),
    ]:
        refused = await client.post(url, json=body)
        assert refused.status == 422
        assert refused.content_type == "application/problem+json"
        assert words in (await refused.json())["detail"]
    assert (await client.post(url, data=b"[1")).status == 400

    info = await (await client.get("/api/streams/live")).json()
    assert [layer["rid"] for layer in info["layers"]] == ["l", "m", "h"]
    (viewer,) = info["viewer_layers"]
    assert (viewer["target"], viewer["mode"]) == ("l", "pinned")
    assert viewer["id"] not in location  # not the session id (the session's capability)
    size = video_frame_size(server.streams["live"].forwarders["video"])
    assert size is not None and (size.width, size.height) == (1280, 720)  # the largest layer

    assert (await client.post(url, json={})).status == 204
    status = await (await client.get(url)).json()
    assert (status["mode"], status["target"]) == ("auto", "h")
    (listed,) = await (await client.get("/api/streams")).json()
    assert set(listed["layer_viewers"]) == {"l", "m", "h"}

    gone = await client.get(f"/whep/live/{'x' * 32}/layer")
    assert gone.status == 404
