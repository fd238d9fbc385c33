"""Robustness of the real server: garbage on the media port and nasty SDP bodies.

While an aiortc publisher streams to two aiortc viewers, datagrams of every RFC 7983 range
(STUN, DTLS, RTP/RTCP, the unassigned ones), random bytes, truncated and empty datagrams hit
the one UDP port; the viewers must keep decoding, the server must stay up and ``/metrics``
must count what it threw away. Malformed offers must never produce a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aioice import stun as aioice_stun
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration import peers
from tests.integration.test_whip_whep_http import make_offer, parse_metrics, sdp_value

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


# -- datagram factories -------------------------------------------------------------------------


def binding_request(username: str, pwd: str | None, *, fingerprint: bool = True) -> bytes:
    """A Binding request built with aioice's STUN code (independent of relaycast's)."""
    request = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = random.getrandbits(64)
    if pwd is not None:
        request.add_message_integrity(pwd.encode())  # also adds FINGERPRINT
    elif fingerprint:
        request.add_fingerprint()
    return bytes(request)


def corrupt_last(data: bytes, back: int) -> bytes:
    out = bytearray(data)
    out[-back] ^= 0xFF
    return bytes(out)


def dtls_record(content_type: int, epoch: int, body: bytes) -> bytes:
    """RFC 6347 §4.1: type, version 1.2, epoch, 48-bit sequence, length, fragment."""
    seq = random.getrandbits(48).to_bytes(6, "big")
    return (
        struct.pack("!BHH", content_type, 0xFEFD, epoch) + seq + struct.pack("!H", len(body)) + body
    )


def fake_client_hello() -> bytes:
    hello = struct.pack("!H", 0xFEFD) + os.urandom(32) + b"\x00" + b"\x00" + b"\x00\x02\xc0\x2b"
    hello += b"\x01\x00"
    handshake = struct.pack("!B", 1) + len(hello).to_bytes(3, "big") + b"\x00\x00"
    handshake += b"\x00\x00\x00" + len(hello).to_bytes(3, "big") + hello
    return dtls_record(22, 0, handshake)


def fake_rtp(pt: int = 96) -> bytes:
    header = struct.pack(
        "!BBHII", 0x80, pt, random.getrandbits(16), random.getrandbits(32), random.getrandbits(32)
    )
    return header + os.urandom(random.randint(0, 1200))


def garbage(known_ufrag: str, known_remote: str) -> Iterator[tuple[str, bytes]]:
    """One round of every kind of bad datagram, labelled."""
    yield "empty", b""
    yield "one byte", bytes([random.randint(0, 255)])
    yield "random", os.urandom(random.randint(1, 1400))
    for first in range(0, 4):  # STUN range
        yield f"stun-range {first}", bytes([first]) + os.urandom(random.randint(0, 300))
    yield "stun unknown ufrag", binding_request("nobody:x", "p" * 24)
    yield "stun no integrity", binding_request(f"{known_ufrag}:{known_remote}", None)
    yield "stun wrong password", binding_request(f"{known_ufrag}:{known_remote}", "w" * 24)
    valid_shape = binding_request(f"{known_ufrag}:{known_remote}", "w" * 24)
    yield "stun bad fingerprint", corrupt_last(valid_shape, 1)
    yield "stun truncated header", valid_shape[:12]
    yield "stun truncated attrs", valid_shape[:-5]
    yield "stun length lies", valid_shape[:2] + b"\xff\xfc" + valid_shape[4:]
    yield "stun no username", binding_request("", None)
    yield "stun username without colon", binding_request(known_ufrag, "w" * 24)
    yield (
        "stun binary username",
        (
            b"\x00\x01\x00\x08\x21\x12\xa4\x42"
            + os.urandom(12)
            + b"\x00\x06\x00\x04\xff\xfe\xfd\xfc"
        ),
    )
    for first in (20, 21, 22, 23, 47, 63):  # DTLS range
        yield f"dtls-range {first}", bytes([first]) + os.urandom(random.randint(0, 300))
    yield "dtls client hello", fake_client_hello()
    yield "dtls alert", dtls_record(21, 0, b"\x02\x00")
    yield "dtls app data", dtls_record(23, 1, os.urandom(64))
    yield "dtls truncated", fake_client_hello()[:20]
    for first in (64, 79, 80, 127):  # TURN channels / unassigned
        yield f"range {first}", bytes([first]) + os.urandom(random.randint(0, 300))
    yield "rtp unknown source", fake_rtp()
    yield "rtcp unknown source", struct.pack("!BBHI", 0x81, 201, 7, 1) + os.urandom(24)
    yield "rtp truncated", fake_rtp()[:5]
    for first in (192, 255):
        yield f"range {first}", bytes([first]) + os.urandom(random.randint(0, 300))


def blast(port: int, ufrag: str, remote: str, seconds: float) -> dict[str, int]:
    """Send garbage rounds from several sockets for *seconds*; count by label."""
    counts: dict[str, int] = {}
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            for label, datagram in garbage(ufrag, remote):
                socks[i % len(socks)].sendto(datagram, ("127.0.0.1", port))
                counts[label] = counts.get(label, 0) + 1
                i += 1
            time.sleep(0.01)
        # the server never answers any of it
        for sock in socks:
            sock.setblocking(False)
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                continue
            raise AssertionError(f"the server answered garbage with {data[:40]!r}")
    finally:
        for sock in socks:
            sock.close()
    return counts


def exchange(port: int, datagram: bytes, timeout: float = 0.7) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        sock.sendto(datagram, ("127.0.0.1", port))
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None


async def metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        return parse_metrics(await response.text())


# -- UDP garbage --------------------------------------------------------------------------------


async def test_garbage_on_media_port_while_streaming(relaycast_server: RelaycastServer) -> None:
    srv = relaycast_server
    loop = asyncio.get_running_loop()
    publisher = await peers.publish(srv.http, "live", "test-key")
    viewers = [await peers.view(srv.http, "live") for _ in range(2)]
    try:
        for viewer in viewers:
            assert await viewer.wait_frames("video", 10, timeout=20) >= 10
        ufrag = sdp_value(viewers[0].answer, "ice-ufrag")
        pwd = sdp_value(viewers[0].answer, "ice-pwd")
        remote = sdp_value(viewers[0].pc.localDescription.sdp, "ice-ufrag")
        async with aiohttp.ClientSession() as http:
            before = await metrics(http, srv.http)
            frames = [v.frames["video"] for v in viewers]
            audio = [v.frames["audio"] for v in viewers]

            counts = await loop.run_in_executor(None, blast, srv.udp_port, ufrag, remote, 4.0)

            assert srv.proc.poll() is None, srv.stderr()
            for viewer, start, start_audio in zip(viewers, frames, audio, strict=True):
                # ~120 frames were sent during the blast; all must have been decodable
                assert await viewer.wait_frames("video", start + 60, timeout=5) >= start + 60
                assert viewer.frames["audio"] > start_audio + 50
            after = await metrics(http, srv.http)
            dropped = (
                after["relaycast_udp_garbage_dropped_total"]
                - before["relaycast_udp_garbage_dropped_total"]
            )
            rejected = (
                after["relaycast_stun_rejected_total"] - before["relaycast_stun_rejected_total"]
            )
            # every non-STUN datagram from an unknown address is dropped and counted (the
            # random ones may start with a STUN byte, so they are left out of the sum)
            non_stun = sum(
                n
                for label, n in counts.items()
                if not label.startswith("stun") and label not in ("empty", "one byte", "random")
            )
            assert dropped >= non_stun, (dropped, non_stun)
            # every STUN request that names a session but fails authentication is rejected
            must_reject = sum(
                counts[label]
                for label in (
                    "stun unknown ufrag",
                    "stun no integrity",
                    "stun wrong password",
                    "stun bad fingerprint",
                    "stun truncated header",
                    "stun truncated attrs",
                    "stun length lies",
                    "stun no username",
                    "stun username without colon",
                    "stun binary username",
                )
            )
            assert rejected >= must_reject, (rejected, must_reject)
            assert after["relaycast_sessions"] == 3
            assert after['relaycast_viewers{stream="live"}'] == 2
            async with http.get(f"{srv.http}/api/streams/live") as response:
                info = await response.json()
            assert info["live"] is True and info["viewers"] == 2

            # a Binding request with the right ufrag but a wrong password gets no answer...
            bad = binding_request(f"{ufrag}:{remote}", "wrong-password-0123456789")
            assert await loop.run_in_executor(None, exchange, srv.udp_port, bad) is None
            # ...while the right password is answered (so the silence above means something)
            good = binding_request(f"{ufrag}:{remote}", pwd)
            reply = await loop.run_in_executor(None, exchange, srv.udp_port, good)
            assert reply is not None
            message = aioice_stun.parse_message(reply)
            assert message.message_class == aioice_stun.Class.RESPONSE
            assert message.check_message_integrity(pwd.encode())
        for viewer in viewers:
            start = viewer.frames["video"]
            assert await viewer.wait_frames("video", start + 15, timeout=5) >= start + 15
    finally:
        for viewer in viewers:
            await viewer.close(srv.http)
        async with aiohttp.ClientSession() as http:
            await http.delete(
                f"{srv.http}{publisher.location}", headers={"Authorization": "Bearer test-key"}
            )
        await publisher.pc.close()


async def test_garbage_from_a_validated_address(relaycast_server: RelaycastServer) -> None:
    """Datagrams from an address that passed ICE (it knows the ice-pwd) but is not the
    peer's DTLS/SRTP endpoint: SRTP that fails authentication and stray DTLS records are
    dropped; the session and its viewer keep going."""
    srv = relaycast_server
    loop = asyncio.get_running_loop()
    publisher = await peers.publish(srv.http, "live", "test-key")
    viewer = await peers.view(srv.http, "live")
    try:
        assert await viewer.wait_frames("video", 10, timeout=20) >= 10
        ufrag = sdp_value(viewer.answer, "ice-ufrag")
        pwd = sdp_value(viewer.answer, "ice-pwd")
        remote = sdp_value(viewer.pc.localDescription.sdp, "ice-ufrag")

        def attack() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(1.0)
                sock.sendto(binding_request(f"{ufrag}:{remote}", pwd), ("127.0.0.1", srv.udp_port))
                assert sock.recv(2048)  # validated (no USE-CANDIDATE: media path unchanged)
                for _ in range(50):
                    for datagram in (
                        fake_rtp(),
                        struct.pack("!BBHI", 0x81, 201, 7, 1) + os.urandom(24),
                        fake_client_hello(),
                        dtls_record(21, 0, b"\x02\x00"),  # plaintext fatal alert, epoch 0
                        dtls_record(21, 1, os.urandom(40)),
                        dtls_record(23, 1, os.urandom(100)),
                        b"\x17\xfe\xfd",
                        b"\x80",
                    ):
                        sock.sendto(datagram, ("127.0.0.1", srv.udp_port))
                    time.sleep(0.02)

        start = viewer.frames["video"]
        await loop.run_in_executor(None, attack)
        assert await viewer.wait_frames("video", start + 40, timeout=5) >= start + 40
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{srv.http}/api/streams/live") as response,
        ):
            info = await response.json()
        assert info["viewers"] == 1 and info["live"]
        assert srv.proc.poll() is None
    finally:
        await viewer.close(srv.http)
        async with aiohttp.ClientSession() as http:
            await http.delete(
                f"{srv.http}{publisher.location}", headers={"Authorization": "Bearer test-key"}
            )
        await publisher.pc.close()


# -- nasty SDP ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdp_server(module_server_factory: ServerFactory) -> RelaycastServer:
    # Dozens of offers from one address in a row: these tests are about parsing, not the
    # WHEP rate limit (tests/integration/test_limits.py).
    return module_server_factory.start("--whep-rate", "1000", "--whep-burst", "1000")


def nasty_bodies(offer: str) -> list[tuple[str, bytes]]:
    lines = offer.split("\r\n")
    rng = random.Random(7)

    def without(prefix: str) -> str:
        return "\r\n".join(line for line in lines if not line.startswith(prefix))

    m_index = next(i for i, line in enumerate(lines) if line.startswith("m="))
    media_block = "\r\n".join(lines[m_index:]).rstrip("\r\n") + "\r\n"
    bodies: list[tuple[str, str | bytes]] = [
        ("empty", b""),
        ("whitespace", "   \r\n\r\n\t"),
        ("binary", bytes(rng.getrandbits(8) for _ in range(3000))),
        ("nul bytes", b"\x00" * 2048),
        ("not utf-8", offer.encode()[:200] + b"\xff\xfe\xc3\x28" + offer.encode()[200:]),
        ("huge", "a=x:" + "y" * 200_000),
        ("many lines", "v=0\r\n" + "a=foo:bar\r\n" * 8000),
        ("one very long line", offer + "a=ssrc:1 cname:" + "z" * 60_000 + "\r\n"),
        ("no v=", without("v=")),
        ("only v=0", "v=0\r\n"),
        ("no m=", "\r\n".join(lines[:m_index]) + "\r\n"),
        ("LF only", offer.replace("\r\n", "\n")),
        ("CR only", offer.replace("\r\n", "\r")),
        ("no trailing newline", offer.rstrip("\r\n")),
        ("no rtpmap", without("a=rtpmap")),
        ("no fingerprint", without("a=fingerprint")),
        ("no ice-pwd", without("a=ice-pwd")),
        ("no setup", without("a=setup")),
        ("no mid", without("a=mid")),
        ("no rtcp-mux", without("a=rtcp-mux")),
        ("setup holdconn", re.sub(r"a=setup:\w+", "a=setup:holdconn", offer)),
        ("bad fingerprint hex", re.sub(r"(a=fingerprint:sha-256 )\S+", r"\1ZZ:YY", offer)),
        ("ufrag with spaces", re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:a b c", offer)),
        ("m-line without formats", re.sub(r"(m=video \d+ UDP/TLS/RTP/SAVPF)[ \d]*", r"\1", offer)),
        (
            "m-line 2000 formats",
            re.sub(r"(m=video \d+ UDP/TLS/RTP/SAVPF)", r"\1" + " 96" * 2000, offer),
        ),
        ("bad port", re.sub(r"m=video \d+", "m=video 999999", offer)),
        ("unknown protocol", offer.replace("UDP/TLS/RTP/SAVPF", "TCP/MSRP")),
        ("payload type 300", re.sub(r"a=rtpmap:(\d+) VP8", "a=rtpmap:300 VP8", offer)),
        ("rtpmap without clock", re.sub(r"VP8/90000", "VP8", offer)),
        ("rtpmap clock text", re.sub(r"VP8/90000", "VP8/abc", offer)),
        ("rtx apt garbage", re.sub(r"apt=\d+", "apt=abc", offer)),
        ("rtx apt nowhere", re.sub(r"apt=\d+", "apt=55", offer)),
        ("fmtp garbage", offer.replace("a=rtcp-mux", "a=rtcp-mux\r\na=fmtp:\r\na=fmtp:96 ;;==;")),
        ("extmap id 300", re.sub(r"a=extmap:\d+ ", "a=extmap:300 ", offer)),
        ("extmap id 0", re.sub(r"a=extmap:\d+ ", "a=extmap:0 ", offer)),
        ("extmap no uri", re.sub(r"a=extmap:(\d+) \S+", r"a=extmap:\1", offer)),
        (
            "ssrc garbage",
            offer.replace("a=rtcp-mux", "a=rtcp-mux\r\na=ssrc:abc\r\na=ssrc-group:FID x"),
        ),
        (
            "simulcast",
            offer.replace(
                "a=rtcp-mux", "a=rtcp-mux\r\na=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l"
            ),
        ),
        ("bundle unknown mid", offer.replace("a=group:BUNDLE 0", "a=group:BUNDLE 7 8")),
        ("duplicate mids", offer + media_block),
        ("500 m-sections", offer + media_block * 500),
        ("mid 5000 chars", re.sub(r"a=mid:\S+", "a=mid:" + "m" * 5000, offer)),
        ("candidate garbage", offer.replace("a=rtcp-mux", "a=rtcp-mux\r\na=candidate:x y z")),
        ("c= garbage", re.sub(r"c=IN IP4 \S+", "c=IN IP9 ::::", offer)),
        ("inactive", re.sub(r"a=(sendonly|recvonly|sendrecv)", "a=inactive", offer)),
        ("recvonly to whip", re.sub(r"a=sendonly", "a=recvonly", offer)),
        ("lines with nul", offer.replace("a=rtcp-mux", "a=rtcp-mux\x00\x00")),
        ("random line shuffle", "\r\n".join(rng.sample(lines, len(lines)))),
    ]
    return [(name, b if isinstance(b, bytes) else b.encode()) for name, b in bodies]


@pytest.mark.parametrize("endpoint", ["whip", "whep"])
async def test_malformed_sdp_never_5xx(sdp_server: RelaycastServer, endpoint: str) -> None:
    srv = sdp_server
    offer = await make_offer(send=endpoint == "whip")
    results: dict[str, int] = {}
    async with aiohttp.ClientSession() as http:
        for name, body in nasty_bodies(offer):
            headers = {"Content-Type": "application/sdp"}
            if endpoint == "whip":
                headers["Authorization"] = "Bearer test-key"
            async with http.post(f"{srv.http}/{endpoint}/live", data=body, headers=headers) as r:
                text = await r.text()
                results[name] = r.status
                assert r.status < 500, (name, r.status, text)
                if r.status >= 400:
                    assert r.content_type == PROBLEM, (name, r.content_type)
                    doc = json.loads(text)
                    assert doc["status"] == r.status and doc["detail"], (name, doc)
                else:
                    assert r.status == 201, (name, r.status)
                    async with http.delete(
                        f"{srv.http}{r.headers['Location']}",
                        headers={"Authorization": "Bearer test-key"} if endpoint == "whip" else {},
                    ) as d:
                        assert d.status == 200
        # the server is intact: a clean offer still works, nothing was left behind
        async with http.get(f"{srv.http}/api/streams") as r:
            assert await r.json() == []
    assert srv.proc.poll() is None, srv.stderr()
    errors = {name for name, status in results.items() if status >= 400}
    for must_fail in (
        "empty",
        "binary",
        "nul bytes",
        "not utf-8",
        "huge",
        "no v=",
        "only v=0",
        "no fingerprint",
        "no ice-pwd",
        "setup holdconn",
        "unknown protocol",
    ):
        assert must_fail in errors, (must_fail, results[must_fail])
    assert results["huge"] == 413
    assert results["500 m-sections"] == 413  # more than 16 m= sections (sdp/parse.py)
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]


async def test_malformed_patch_and_delete_never_5xx(sdp_server: RelaycastServer) -> None:
    srv = sdp_server
    offer = await make_offer(send=False)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{srv.http}/whep/live", data=offer, headers={"Content-Type": "application/sdp"}
        ) as r:
            assert r.status == 201
            url = f"{srv.http}{r.headers['Location']}"
        frags = [
            b"",
            b"\xff\xfe",
            os.urandom(500),
            b"a=ice-ufrag:\r\n",
            b"a=ice-ufrag:new1\r\n",  # restart without pwd
            b"a=ice-pwd:short\r\na=ice-ufrag:x\r\n",
            b"a=candidate:garbage\r\n",
            b"m=audio\r\nx=y=z\r\n",
            b"a=ice-ufrag:" + b"u" * 70_000 + b"\r\n",
        ]
        for body in frags:
            for if_match in ("*", '"nope"', None):
                headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
                if if_match is not None:
                    headers["If-Match"] = if_match
                async with http.patch(url, data=body, headers=headers) as r:
                    text = await r.text()
                    assert r.status < 500, (body[:40], if_match, r.status, text)
                    if r.status >= 400:
                        assert r.content_type == PROBLEM
        for method in ("GET", "PUT", "POST"):
            async with http.request(method, url) as r:
                assert 400 <= r.status < 500 and r.content_type == PROBLEM, (method, r.status)
        async with http.delete(url) as r:
            assert r.status == 200
    assert "Traceback" not in srv.stderr(), srv.stderr()[-3000:]


async def test_whep_offer_with_oversized_mid_is_refused(sdp_server: RelaycastServer) -> None:
    offer = await make_offer(send=False)
    long_mid = "m" * 300
    offer = offer.replace("a=mid:0", f"a=mid:{long_mid}").replace("BUNDLE 0", f"BUNDLE {long_mid}")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{sdp_server.http}/whep/live", data=offer, headers={"Content-Type": "application/sdp"}
        ) as r,
    ):
        if r.status == 201:
            async with http.delete(f"{sdp_server.http}{r.headers['Location']}") as d:
                assert d.status == 200
        assert 400 <= r.status < 500
