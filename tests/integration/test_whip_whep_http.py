"""The WHIP (RFC 9725) / WHEP HTTP contract of design.md, against the real server process.

Offers come from aiortc (``iceServers=[]``: it never contacts a STUN server); STUN checks in
the ICE-restart test are built with aioice's own STUN code, independent of relaycast's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioice import stun as aioice_stun
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration import peers

from relaycast import native

pytestmark = pytest.mark.integration

SDP = "application/sdp"
PROBLEM = "application/problem+json"
SDPFRAG = "application/trickle-ice-sdpfrag"
ORIGIN = "https://player.example.com"
#: WHIP PATCH and DELETE need the stream's publish key, as the POST does.
LIVE_KEY = {"Authorization": "Bearer test-key"}
OTHER_KEY = {"Authorization": "Bearer other-key"}


@pytest.fixture(scope="module")
def srv(module_server_factory: ServerFactory) -> RelaycastServer:
    return module_server_factory.start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- offers -------------------------------------------------------------------------------------


async def make_offer(
    *,
    send: bool,
    video: str | None = "video/VP8",
    audio: str | None = "audio/opus",
) -> str:
    """An aiortc offer (sendonly for WHIP, recvonly for WHEP) with the given codecs only."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if video is not None:
            pc.addTransceiver(
                peers.PatternTrack() if send else "video",
                direction="sendonly" if send else "recvonly",
            )
            peers.prefer_codec(pc, "video", video)
        if audio is not None:
            pc.addTransceiver(
                AudioStreamTrack() if send else "audio",
                direction="sendonly" if send else "recvonly",
            )
            caps = [
                c
                for c in peers.RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType.lower() == audio.lower()
            ]
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio":
                    transceiver.setCodecPreferences(caps)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def sdp_value(sdp: str, attribute: str) -> str:
    match = re.search(rf"^a={attribute}:(\S+)\r?$", sdp, re.M)
    assert match, f"no a={attribute} in\n{sdp}"
    return match.group(1)


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: str | bytes,
    *,
    key: str | None = None,
    content_type: str = SDP,
    headers: dict[str, str] | None = None,
) -> tuple[aiohttp.ClientResponse, str]:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    async with http.post(url, data=body, headers=all_headers) as response:
        return response, await response.text()


def problem_of(response: aiohttp.ClientResponse, text: str, status: int) -> dict[str, object]:
    """Assert an RFC 9457 problem document with this status and a real sentence."""
    assert response.status == status, (response.status, text)
    assert response.content_type == PROBLEM, response.content_type
    doc = json.loads(text)
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and len(doc["detail"]) > 15, doc
    return doc


async def wait_live(http: aiohttp.ClientSession, base: str, stream: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/streams/{stream}") as response:
            if response.status == 200 and (await response.json())["live"]:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{stream} never went live")


# -- WHIP success -------------------------------------------------------------------------------


async def test_whip_post_201_headers_and_answer(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    offer = await make_offer(send=True)
    response, answer = await post(http, f"{srv.http}/whip/live", offer, key="test-key")
    try:
        assert response.status == 201, answer
        assert response.content_type == SDP
        location = response.headers["Location"]
        assert re.fullmatch(r"/whip/live/[A-Za-z0-9_-]{20,}", location), location
        etag = response.headers["ETag"]
        assert re.fullmatch(r'"[^"]+"', etag), etag  # a strong entity tag (RFC 9110 §8.8.3)
        assert SDPFRAG in response.headers["Accept-Patch"]
        assert "Link" not in response.headers  # no ICE servers configured
        # the answer: ICE-lite, passive DTLS, our candidate on the media port
        assert answer.startswith("v=0\r\n")
        assert "a=ice-lite" in answer
        assert "a=setup:passive" in answer
        assert re.search(r"a=fingerprint:sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", answer)
        assert f"127.0.0.1 {srv.udp_port} typ host" in answer
        assert "VP8/90000" in answer and "opus/48000/2" in answer
        assert "a=recvonly" in answer
        assert sdp_value(answer, "ice-ufrag") != sdp_value(offer, "ice-ufrag")
    finally:
        location = response.headers.get("Location", "/x")
        async with http.delete(f"{srv.http}{location}", headers=LIVE_KEY) as d:
            assert d.status == 200


async def test_slowly_sent_offer_is_read_whole(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    """A body arriving in several TCP segments is read to its end, not to the first chunk."""
    offer = (await make_offer(send=True)).encode()

    async def dribble() -> AsyncIterator[bytes]:
        for start in range(0, len(offer), 300):
            yield offer[start : start + 300]
            await asyncio.sleep(0.02)

    async with http.post(
        f"{srv.http}/whip/live",
        data=dribble(),
        headers={"Content-Type": SDP, "Authorization": "Bearer test-key"},
    ) as response:
        text = await response.text()
        assert response.status == 201, text
        location = response.headers["Location"]
    async with http.delete(f"{srv.http}{location}", headers=LIVE_KEY) as d:
        assert d.status == 200


# -- WHIP errors --------------------------------------------------------------------------------


async def test_wrong_content_type_415(srv: RelaycastServer, http: aiohttp.ClientSession) -> None:
    offer = await make_offer(send=True)
    for content_type in ("text/plain", "application/json", "application/sdpx"):
        response, text = await post(
            http, f"{srv.http}/whip/live", offer, key="test-key", content_type=content_type
        )
        doc = problem_of(response, text, 415)
        assert "application/sdp" in str(doc["detail"])
    response, text = await post(http, f"{srv.http}/whep/live", offer, content_type="text/plain")
    problem_of(response, text, 415)


async def test_malformed_sdp_400_names_the_problem(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    offer = await make_offer(send=True)
    cases = {
        "not sdp at all": "hello",
        "no fingerprint": re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", offer),
        "no ice-ufrag": re.sub(r"a=ice-ufrag:[^\r\n]*\r\n", "", offer),
        "bad m-line": offer.replace("m=video ", "m=video x"),
    }
    details = {}
    for name, body in cases.items():
        response, text = await post(http, f"{srv.http}/whip/live", body, key="test-key")
        details[name] = str(problem_of(response, text, 400)["detail"])
    assert "fingerprint" in details["no fingerprint"]
    assert "ice-ufrag" in details["no ice-ufrag"] or "ice" in details["no ice-ufrag"]
    assert "m=" in details["bad m-line"] or "line" in details["bad m-line"]
    assert "line" in details["not sdp at all"] or "v=" in details["not sdp at all"]


async def test_publish_key_checks(srv: RelaycastServer, http: aiohttp.ClientSession) -> None:
    offer = await make_offer(send=True)
    url = f"{srv.http}/whip/live"
    response, text = await post(http, url, offer)
    doc = problem_of(response, text, 401)
    assert response.headers["WWW-Authenticate"].lower().startswith("bearer")
    assert "Authorization: Bearer" in str(doc["detail"])
    for bad in ("Basic dXNlcjpwYXNz", "Bearer ", "test-key"):
        response, text = await post(http, url, offer, headers={"Authorization": bad})
        problem_of(response, text, 401)
    response, text = await post(http, url, offer, key="wrong-key")
    problem_of(response, text, 403)
    # the key of another stream does not publish this one
    response, text = await post(http, url, offer, key="other-key")
    problem_of(response, text, 403)
    # a stream without any configured key cannot be published
    response, text = await post(http, f"{srv.http}/whip/nokey", offer, key="test-key")
    assert response.status in (403, 404), text
    assert response.content_type == PROBLEM
    # no session was created by any of these
    async with http.get(f"{srv.http}/api/streams") as r:
        assert [s["name"] for s in await r.json()] == []


async def test_invalid_stream_name_404(srv: RelaycastServer, http: aiohttp.ClientSession) -> None:
    offer = await make_offer(send=True)
    for name in ("a" * 65, "bad.name", "sp%20ace", "%C3%A9t%C3%A9"):
        response, text = await post(http, f"{srv.http}/whip/{name}", offer, key="test-key")
        problem_of(response, text, 404)
        response, text = await post(http, f"{srv.http}/whep/{name}", offer)
        problem_of(response, text, 404)


async def test_unknown_session_patch_delete_404(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    frag = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    for role, key in (("whip", LIVE_KEY), ("whep", {})):
        url = f"{srv.http}/{role}/live/doesnotexist"
        async with http.delete(url, headers=key) as response:
            problem_of(response, await response.text(), 404)
        async with http.patch(
            url, data=frag, headers={"Content-Type": SDPFRAG, "If-Match": "*", **key}
        ) as response:
            problem_of(response, await response.text(), 404)
    # Without the key, WHIP says 401 before it looks for the session (no session oracle).
    url = f"{srv.http}/whip/live/doesnotexist"
    async with http.delete(url) as response:
        problem_of(response, await response.text(), 401)
    async with http.patch(url, data=frag, headers={"Content-Type": SDPFRAG}) as response:
        problem_of(response, await response.text(), 401)


@pytest.mark.parametrize(
    ("video", "audio", "edit"),
    [
        (None, "audio/PCMU", None),  # only PCMU audio
        ("video/H264", None, "pmode0"),  # H.264 packetization-mode=0 only
    ],
)
async def test_unsupported_offer_422(
    srv: RelaycastServer,
    http: aiohttp.ClientSession,
    video: str | None,
    audio: str | None,
    edit: str | None,
) -> None:
    offer = await make_offer(send=True, video=video, audio=audio)
    if edit == "pmode0":
        offer = offer.replace("packetization-mode=1", "packetization-mode=0")
        assert "packetization-mode=1" not in offer
    response, text = await post(http, f"{srv.http}/whip/live", offer, key="test-key")
    doc = problem_of(response, text, 422)
    detail = str(doc["detail"])
    if audio == "audio/PCMU":
        assert "PCMU" in detail or "opus" in detail.lower(), detail
    else:
        assert "H264" in detail or "H.264" in detail or "packetization" in detail, detail
    async with http.get(f"{srv.http}/api/streams") as r:
        assert await r.json() == []


async def test_second_publisher_409_while_live_then_201_after_delete(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    first = await peers.publish(srv.http, "live", "test-key")
    try:
        await wait_live(http, srv.http, "live", 15)
        offer = await make_offer(send=True)
        response, text = await post(http, f"{srv.http}/whip/live", offer, key="test-key")
        doc = problem_of(response, text, 409)
        assert "live" in str(doc["detail"])
        # another stream is independent
        response, text = await post(http, f"{srv.http}/whip/other", offer, key="other-key")
        assert response.status == 201, text
        async with http.delete(f"{srv.http}{response.headers['Location']}", headers=OTHER_KEY) as d:
            assert d.status == 200
    finally:
        async with http.delete(f"{srv.http}{first.location}", headers=LIVE_KEY) as d:
            assert d.status == 200
        await first.pc.close()
    response, text = await post(http, f"{srv.http}/whip/live", offer, key="test-key")
    assert response.status == 201, text
    async with http.delete(f"{srv.http}{response.headers['Location']}", headers=LIVE_KEY) as d:
        assert d.status == 200


# -- WHEP ---------------------------------------------------------------------------------------


async def test_whep_viewer_lacking_live_codec_422(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    publisher = await peers.publish(srv.http, "live", "test-key", video_codec="video/VP8")
    try:
        await wait_live(http, srv.http, "live", 15)
        offer = await make_offer(send=False, video="video/H264", audio="audio/opus")
        response, text = await post(http, f"{srv.http}/whep/live", offer)
        doc = problem_of(response, text, 422)
        assert "VP8" in str(doc["detail"]), doc
        # a viewer that offers VP8 is welcome and gets VP8 only
        offer = await make_offer(send=False)
        response, text = await post(http, f"{srv.http}/whep/live", offer)
        assert response.status == 201, text
        assert response.headers["Location"].startswith("/whep/live/")
        assert response.headers["ETag"]
        assert "VP8/90000" in text and "H264" not in text
        assert "a=sendonly" in text
        async with http.delete(f"{srv.http}{response.headers['Location']}") as d:
            assert d.status == 200
    finally:
        async with http.delete(f"{srv.http}{publisher.location}", headers=LIVE_KEY) as d:
            assert d.status == 200
        await publisher.pc.close()


async def test_whep_before_live_and_session_roles(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    """A viewer may come first; a WHEP session is not reachable under /whip and vice versa."""
    offer = await make_offer(send=False)
    response, text = await post(http, f"{srv.http}/whep/live", offer)
    assert response.status == 201, text
    location = response.headers["Location"]
    session = location.rsplit("/", 1)[1]
    async with http.delete(f"{srv.http}/whip/live/{session}", headers=LIVE_KEY) as d:
        problem_of(d, await d.text(), 404)
    async with http.delete(f"{srv.http}/whep/other/{session}") as d:
        problem_of(d, await d.text(), 404)
    async with http.get(f"{srv.http}/api/streams/live") as r:
        info = await r.json()
        assert info["live"] is False and info["viewers_connecting"] == 1
    async with http.delete(f"{srv.http}{location}") as d:
        assert d.status == 200
    async with http.delete(f"{srv.http}{location}") as d:
        problem_of(d, await d.text(), 404)


# -- CORS ---------------------------------------------------------------------------------------


async def test_cors_preflight_and_post(srv: RelaycastServer, http: aiohttp.ClientSession) -> None:
    for path in ("/whip/live", "/whep/live", "/whip/live/abc"):
        async with http.options(
            f"{srv.http}{path}",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, if-match",
            },
        ) as response:
            assert response.status in (200, 204)
            h = response.headers
            assert h["Access-Control-Allow-Origin"] in ("*", ORIGIN)
            methods = {m.strip() for m in h["Access-Control-Allow-Methods"].split(",")}
            assert {"POST", "PATCH", "DELETE"} <= methods
            allowed = {m.strip().lower() for m in h["Access-Control-Allow-Headers"].split(",")}
            assert {"authorization", "content-type", "if-match"} <= allowed
            exposed = {m.strip().lower() for m in h["Access-Control-Expose-Headers"].split(",")}
            assert {"location", "etag"} <= exposed
    offer = await make_offer(send=True)
    response, text = await post(
        http, f"{srv.http}/whip/live", offer, key="test-key", headers={"Origin": ORIGIN}
    )
    assert response.status == 201, text
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert "location" in response.headers["Access-Control-Expose-Headers"].lower()
    async with http.delete(
        f"{srv.http}{response.headers['Location']}", headers={"Origin": ORIGIN, **LIVE_KEY}
    ) as d:
        assert d.status == 200
        assert d.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    # errors are readable from another origin too
    response, text = await post(http, f"{srv.http}/whip/live", offer, headers={"Origin": ORIGIN})
    problem_of(response, text, 401)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


async def test_ice_server_link_header(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory.start("--ice-server", "stun:stun.example.org:3478")
    link = '<stun:stun.example.org:3478>; rel="ice-server"'
    offer = await make_offer(send=True)
    response, text = await post(http, f"{server.http}/whip/live", offer, key="test-key")
    assert response.status == 201, text
    assert response.headers.getall("Link") == [link]
    async with http.delete(f"{server.http}{response.headers['Location']}", headers=LIVE_KEY) as d:
        assert d.status == 200
    response, text = await post(http, f"{server.http}/whep/live", await make_offer(send=False))
    assert response.status == 201, text
    layer = f'<{response.headers["Location"]}/layer>; rel="urn:ietf:params:whep:ext:core:layer"'
    assert response.headers.getall("Link") == [link, layer]  # + the WHEP layer extension
    async with http.delete(f"{server.http}{response.headers['Location']}") as d:
        assert d.status == 200
    async with http.options(f"{server.http}/whip/live", headers={"Origin": ORIGIN}) as r:
        assert link in r.headers.getall("Link", [])


# -- PATCH: trickle and ICE restart -------------------------------------------------------------


def _trickle_frag(ufrag: str, pwd: str) -> str:
    return (
        f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"
    )


def _binding(local: str, remote: str, pwd: str, *, use_candidate: bool = False) -> bytes:
    request = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = f"{local}:{remote}"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = struct.unpack("!Q", os.urandom(8))[0]
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(pwd.encode())  # adds FINGERPRINT too
    return bytes(request)


def stun_exchange(port: int, datagram: bytes, pwd: str, timeout: float = 0.7) -> object | None:
    """Send one Binding request from a fresh socket; the verified response or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(datagram, ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            return None
        message = aioice_stun.parse_message(data)
        assert message.check_message_integrity(pwd.encode()), "response integrity is wrong"
        assert message.message_class == aioice_stun.Class.RESPONSE
        assert message.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", sock.getsockname()[1])
        return message


async def test_patch_trickle_restart_and_delete(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    publisher = await peers.publish(srv.http, "live", "test-key")
    viewer = await peers.view(srv.http, "live")
    purl = ""
    try:
        assert await viewer.wait_frames("video", 5, timeout=20) >= 5
        url = f"{srv.http}{publisher.location}"
        offer = publisher.pc.localDescription.sdp
        remote_ufrag = sdp_value(offer, "ice-ufrag")
        async with http.options(url, headers={"Origin": ORIGIN}) as r:
            assert r.status in (200, 204)
        # an ETag from the POST response: the resource's current one
        offer2 = await make_offer(send=False)
        response, _text = await post(http, f"{srv.http}/whep/live", offer2)
        assert response.status == 201
        probe_location, probe_etag = response.headers["Location"], response.headers["ETag"]
        purl = f"{srv.http}{probe_location}"

        frag = _trickle_frag(sdp_value(offer2, "ice-ufrag"), sdp_value(offer2, "ice-pwd"))
        async with http.patch(
            purl, data=frag, headers={"Content-Type": SDPFRAG, "If-Match": probe_etag}
        ) as r:
            assert r.status == 204, await r.text()
        async with http.patch(
            purl, data=frag, headers={"Content-Type": SDPFRAG, "If-Match": '"stale"'}
        ) as r:
            problem_of(r, await r.text(), 412)
        async with http.patch(purl, data=frag, headers={"Content-Type": SDP}) as r:
            problem_of(r, await r.text(), 415)
        async with http.patch(
            purl, data="garbage\r\n", headers={"Content-Type": SDPFRAG, "If-Match": "*"}
        ) as r:
            problem_of(r, await r.text(), 400)

        # ICE restart of the live publisher: new ufrag/pwd from the client, If-Match: "*"
        old_server_ufrag = sdp_value(publisher.answer, "ice-ufrag")
        old_server_pwd = sdp_value(publisher.answer, "ice-pwd")
        restart = _trickle_frag("rstA", "restartpasswordrestart12")
        async with http.patch(
            url, data=restart, headers={"Content-Type": SDPFRAG, "If-Match": '"stale"', **LIVE_KEY}
        ) as r:
            problem_of(r, await r.text(), 412)
        async with http.patch(
            url, data=restart, headers={"Content-Type": SDPFRAG, "If-Match": "*", **LIVE_KEY}
        ) as r:
            body = await r.text()
            assert r.status == 200, body
            assert r.content_type == SDPFRAG
            new_etag = r.headers["ETag"]
        new_ufrag, new_pwd = sdp_value(body, "ice-ufrag"), sdp_value(body, "ice-pwd")
        assert new_ufrag != old_server_ufrag and new_pwd != old_server_pwd
        assert len(new_ufrag) >= 4 and len(new_pwd) >= 22  # RFC 8839 §5.4
        assert "a=ice-lite" in body
        assert f"127.0.0.1 {srv.udp_port} typ host" in body
        assert new_etag != '"stale"'
        # the old credentials keep working until the peer moves: the aiortc viewer and the
        # publisher (which cannot restart) keep streaming
        before = viewer.frames["video"]
        assert await viewer.wait_frames("video", before + 15, timeout=10) >= before + 15
        # STUN with the new credentials is answered (integrity keyed with the new pwd)...
        loop = asyncio.get_running_loop()
        port = srv.udp_port
        wrong = await loop.run_in_executor(
            None, stun_exchange, port, _binding(new_ufrag, "rstA", "x" * 24), "x" * 24
        )
        assert wrong is None, "a request with a wrong password was answered"
        answered = await loop.run_in_executor(
            None, stun_exchange, port, _binding(new_ufrag, "rstA", new_pwd), new_pwd
        )
        assert answered is not None
        # ...and once the peer used them, the old credentials are gone
        stale = await loop.run_in_executor(
            None,
            stun_exchange,
            port,
            _binding(old_server_ufrag, remote_ufrag, old_server_pwd),
            old_server_pwd,
        )
        assert stale is None
        # a restart needs the ETag it was given, not the one before
        restart2 = _trickle_frag("rstB", "restartpasswordrestart34")
        async with http.patch(
            url, data=restart2, headers={"Content-Type": SDPFRAG, "If-Match": new_etag, **LIVE_KEY}
        ) as r:
            assert r.status == 200, await r.text()
            assert r.headers["ETag"] != new_etag

        async with http.delete(purl) as d:
            assert d.status == 200
        async with http.delete(purl) as d:
            problem_of(d, await d.text(), 404)
        async with http.patch(
            purl, data=frag, headers={"Content-Type": SDPFRAG, "If-Match": "*"}
        ) as r:
            problem_of(r, await r.text(), 404)
    finally:
        if purl:
            async with http.delete(purl):
                pass  # already gone when the test got that far
        await viewer.close(srv.http)
        async with http.delete(f"{srv.http}{publisher.location}", headers=LIVE_KEY) as d:
            assert d.status == 200
        async with http.delete(f"{srv.http}{publisher.location}", headers=LIVE_KEY) as d:
            assert d.status == 404
        await publisher.pc.close()


# -- API ------------------------------------------------------------------------------------------


async def test_api_streams_and_metrics(srv: RelaycastServer, http: aiohttp.ClientSession) -> None:
    publisher = await peers.publish(srv.http, "live", "test-key")
    viewer = await peers.view(srv.http, "live")
    try:
        assert await viewer.wait_frames("video", 30, timeout=20) >= 30
        await asyncio.sleep(2.2)  # two slow ticks: bitrates are measured
        async with http.get(f"{srv.http}/api/streams", headers={"Origin": ORIGIN}) as r:
            assert r.status == 200
            assert r.content_type == "application/json"
            assert r.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
            streams = await r.json()
        assert [s["name"] for s in streams] == ["live"]
        async with http.get(f"{srv.http}/api/streams/live") as r:
            info = await r.json()
        per_stream = ("ingress_bps", "egress_bps", "uptime_s", "layers", "viewer_layers")
        assert info == streams[0] | {k: info[k] for k in per_stream}
        assert info["layers"] == info["viewer_layers"] == [] and info["layer_viewers"] == {}
        # the viewer's audio and video tracks, both LIVE: in the C kernel when it is on
        expected_native = 2 if native.enabled() else 0
        assert info["fanout_paths"] == {"native": expected_native, "python": 2 - expected_native}
        assert info["live"] is True
        assert info["viewers"] == 1 and info["viewers_connecting"] == 0
        assert info["video_codec"] == "VP8" and info["audio_codec"] == "opus"
        assert info["ingress_bps"] > 10_000 and info["egress_bps"] > 10_000
        assert info["uptime_s"] >= 2
        assert info["watch_url"] == "/watch/live"
        async with http.get(f"{srv.http}/api/streams/nobody") as r:
            problem_of(r, await r.text(), 404)
        async with http.get(f"{srv.http}/api/streams/bad.name") as r:
            problem_of(r, await r.text(), 404)

        async with http.get(f"{srv.http}/metrics") as r:
            assert r.status == 200
            assert r.content_type == "text/plain"
            text = await r.text()
        values = parse_metrics(text)
        assert values["relaycast_streams"] == 1
        assert values["relaycast_sessions"] == 2
        assert values['relaycast_viewers{stream="live"}'] == 1
        assert values["relaycast_udp_bytes_in_total"] > 20_000
        assert values['relaycast_stream_ingress_bytes_total{stream="live"}'] > 20_000
        for line in text.splitlines():
            assert line.startswith("#") or re.fullmatch(
                r"[a-z_]+(\{[^}]*\})? -?\d+(\.\d+)?(e[+-]?\d+)?", line
            )
    finally:
        await viewer.close(srv.http)
        async with http.delete(f"{srv.http}{publisher.location}", headers=LIVE_KEY) as d:
            assert d.status == 200
        await publisher.pc.close()
    async with http.get(f"{srv.http}/api/streams") as r:
        assert await r.json() == []
    async with http.get(f"{srv.http}/metrics") as r:
        values = parse_metrics(await r.text())
    assert values["relaycast_streams"] == 0 and values["relaycast_sessions"] == 0


async def test_metrics_udp_bytes_out_counts_forwarded_media(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    publisher = await peers.publish(srv.http, "live", "test-key", audio=False)
    viewer = await peers.view(srv.http, "live")
    try:
        assert await viewer.wait_frames("video", 45, timeout=20) >= 45
        async with http.get(f"{srv.http}/metrics") as r:
            values = parse_metrics(await r.text())
        # one viewer: about as many bytes go out as come in
        bytes_in = values["relaycast_udp_bytes_in_total"]
        bytes_out = values["relaycast_udp_bytes_out_total"]
        assert bytes_out > 0.5 * bytes_in, (bytes_in, bytes_out)
    finally:
        await viewer.close(srv.http)
        async with http.delete(f"{srv.http}{publisher.location}", headers=LIVE_KEY) as d:
            assert d.status == 200
        await publisher.pc.close()


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
