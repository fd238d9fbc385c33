"""build_answer / build_sdpfrag: our answers parse back, and aiortc accepts them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from relaycast.sdp import (
    Codec,
    LocalTransport,
    SendSsrcs,
    build_answer,
    build_sdpfrag,
    candidate_priority,
    negotiate_play,
    negotiate_publish,
    parse_sdp,
    parse_sdpfrag,
)
from relaycast.sdp.answer import candidate_lines, tcp_candidate_priority

SAMPLES = Path(__file__).parent / "sdp_samples"
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
LOCAL = LocalTransport(
    ufrag="srvU",
    pwd="serverpasswordserverpw",
    fingerprint=FINGERPRINT,
    candidates=[("127.0.0.1", 8443), ("10.0.0.5", 8443)],
)


def offer(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode()


def test_candidate_priority() -> None:
    # RFC 8445 §5.1.2.1: (2^24)*126 + (2^8)*65535 + (256 - 1)
    assert candidate_priority(0) == 2130706431
    assert candidate_priority(1) == 2130706431 - 256


def test_tcp_candidates_rank_below_every_udp_candidate() -> None:
    # RFC 6544 §4.2: host type 126, local preference 2^13 * 4 (passive) + 8191 - index
    assert tcp_candidate_priority(0) == (126 << 24) + ((4 * 8192 + 8191) << 8) + 255
    assert tcp_candidate_priority(1) == tcp_candidate_priority(0) - 256
    assert tcp_candidate_priority(0) < candidate_priority(15)


def test_ice_tcp_adds_a_passive_tcp_candidate_per_address_after_the_udp_ones() -> None:
    local = replace(LOCAL, ice_tcp=True)
    udp = [
        "a=candidate:1 1 udp 2130706431 127.0.0.1 8443 typ host",
        "a=candidate:2 1 udp 2130706175 10.0.0.5 8443 typ host",
    ]
    tcp = [
        f"a=candidate:3 1 tcp {tcp_candidate_priority(0)} 127.0.0.1 8443 typ host tcptype passive",
        f"a=candidate:4 1 tcp {tcp_candidate_priority(1)} 10.0.0.5 8443 typ host tcptype passive",
    ]
    assert candidate_lines(local) == [*udp, *tcp, "a=end-of-candidates"]
    assert candidate_lines(LOCAL) == [*udp, "a=end-of-candidates"]
    desc = parse_sdp(offer("chrome_publish.sdp"))
    answer = parse_sdp(build_answer(desc, negotiate_publish(desc), local))
    for m in answer.media:
        if m.port:  # the default candidate (m=, c=) stays the first UDP one
            assert m.port == 8443 and m.candidates == [line[2:] for line in udp + tcp]
    _, _, cands = parse_sdpfrag(build_sdpfrag(local, ["0"]))
    assert cands == [line[2:] for line in udp + tcp]


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLES.glob("*_publish*.sdp")))
def test_publish_answer_round_trips(name: str) -> None:
    desc = parse_sdp(offer(name))
    neg = negotiate_publish(desc)
    text = build_answer(desc, neg, LOCAL, session_version=3)
    assert text.endswith("\r\n") and "\n\n" not in text
    lines = text.split("\r\n")
    assert lines[:4] == ["v=0", lines[1], "s=-", "t=0 0"]
    assert lines[1].startswith("o=- ") and lines[1].endswith(" 3 IN IP4 127.0.0.1")
    answer = parse_sdp(text)
    assert answer.ice_lite
    assert answer.bundle == neg.bundle_mids
    assert len(answer.media) == len(desc.media)
    for nm, m, o in zip(neg.media, answer.media, desc.media, strict=True):
        assert m.mid == o.mid and m.kind == o.kind
        if nm.rejected:
            assert m.port == 0 and m.direction == "inactive"
            continue
        assert m.port == 8443 and m.direction == "recvonly"
        assert m.protocol == o.protocol
        assert (m.ice_ufrag, m.ice_pwd) == ("srvU", "serverpasswordserverpw")
        assert m.fingerprints == [("sha-256", FINGERPRINT)]
        assert m.setup == neg.local_setup
        assert m.rtcp_mux and m.rtcp_rsize == o.rtcp_rsize
        assert m.candidates == [
            "candidate:1 1 udp 2130706431 127.0.0.1 8443 typ host",
            "candidate:2 1 udp 2130706175 10.0.0.5 8443 typ host",
        ]
        assert m.end_of_candidates
        primary = nm.codecs[0]
        got = m.codec(primary.payload_type)
        assert got is not None and got.fmtp == primary.fmtp and got.name == primary.name
        assert got.rtcp_fb == nm.rtcp_fb
        expected_formats = [str(primary.payload_type)]
        if nm.rtx:
            rtx_pt = nm.rtx[primary.payload_type]
            expected_formats.append(str(rtx_pt))
            assert m.rtx_for(primary.payload_type) is not None
        assert m.formats == expected_formats
        assert {uri: i for i, uri in m.extmaps.items()} == nm.extensions
        assert m.ssrcs == {}


def test_ffmpeg_gets_setup_active_and_first_candidate() -> None:
    desc = parse_sdp(offer("ffmpeg_publish.sdp"))
    text = build_answer(desc, negotiate_publish(desc), LOCAL)
    assert text.count("a=setup:active") == 2 and "a=setup:passive" not in text
    # FFmpeg's whip muxer uses the first a=candidate line it sees
    first = next(line for line in text.split("\r\n") if line.startswith("a=candidate:"))
    assert " 127.0.0.1 8443 typ host" in first
    assert "m=audio 8443 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n" in text


def test_rejected_application_section() -> None:
    text = offer("aiortc_publish.sdp").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    text += (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        "a=sctp-port:5000\r\n"
    )
    desc = parse_sdp(text)
    answer = build_answer(desc, negotiate_publish(desc), LOCAL)
    assert (
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        in (answer)
    )
    assert "a=group:BUNDLE 0 1\r\n" in answer


def test_play_answer_with_send_ssrcs() -> None:
    desc = parse_sdp(offer("chrome_view.sdp"))
    vp8 = Codec(96, "VP8", 90000)
    neg = negotiate_play(desc, {"video": vp8})
    send = {
        "0": SendSsrcs(1111, 2222, "relaycast", "stream-a", "video-t"),
        "1": SendSsrcs(3333, None, "relaycast", "stream-a", "audio-t"),
    }
    text = build_answer(desc, neg, LOCAL, send)
    answer = parse_sdp(text)
    video, audio = answer.media
    assert video.direction == audio.direction == "sendonly"
    assert video.formats == ["96", "97"]
    assert video.msid == "stream-a video-t"
    assert video.ssrc_groups == [("FID", [1111, 2222])]
    assert video.ssrcs == {
        1111: {"cname": "relaycast", "msid": "stream-a video-t"},
        2222: {"cname": "relaycast", "msid": "stream-a video-t"},
    }
    assert audio.ssrcs == {3333: {"cname": "relaycast", "msid": "stream-a audio-t"}}
    assert audio.ssrc_groups == []
    # TWCC to viewers: the transport-wide sequence number extension and its feedback
    assert video.codecs[0].rtcp_fb == ["nack", "nack pli", "ccm fir", "transport-cc"]
    assert "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01" in (
        video.extmaps.values()
    )
    assert answer.extmap_allow_mixed


def test_sdpfrag() -> None:
    text = build_sdpfrag(LOCAL, ["0", "1"])
    assert text.startswith("a=ice-lite\r\na=ice-ufrag:srvU\r\na=ice-pwd:serverpasswordserverpw\r\n")
    assert "a=group:BUNDLE 0 1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 " in text
    assert text.endswith("m=audio 9 RTP/AVP 0\r\na=mid:1\r\n")
    ufrag, pwd, cands = parse_sdpfrag(text)
    assert (ufrag, pwd) == ("srvU", "serverpasswordserverpw")
    assert cands == [
        "candidate:1 1 udp 2130706431 127.0.0.1 8443 typ host",
        "candidate:2 1 udp 2130706175 10.0.0.5 8443 typ host",
    ]


# --- an independent stack (aiortc) accepts our answers ---------------------------------------


@pytest.fixture
def udp_port() -> Iterator[int]:
    """A loopback UDP socket our answers point at, so aiortc's checks stay on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no default STUN server


async def test_aiortc_publisher_accepts_our_answer(udp_port: int) -> None:
    local = LocalTransport("srvU", "serverpasswordserverpw", FINGERPRINT, [("127.0.0.1", udp_port)])
    pc = _pc()
    try:
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        desc = parse_sdp(pc.localDescription.sdp)
        neg = negotiate_publish(desc)
        await pc.setRemoteDescription(
            RTCSessionDescription(build_answer(desc, neg, local), "answer")
        )
        assert pc.signalingState == "stable"
        audio_t, video_t = pc.getTransceivers()
        assert audio_t.currentDirection == video_t.currentDirection == "sendonly"
        assert [c.mimeType for c in video_t._codecs] == ["video/VP8", "video/rtx"]
        assert [c.mimeType for c in audio_t._codecs] == ["audio/opus"]
        remote = pc.remoteDescription
        assert remote is not None and "a=ice-lite" in remote.sdp
    finally:
        await pc.close()


async def test_aiortc_viewer_accepts_our_answer(udp_port: int) -> None:
    # with TCP candidates too (aioice has no ICE-TCP: it must skip them, not fail)
    local = LocalTransport(
        "srvU", "serverpasswordserverpw", FINGERPRINT, [("127.0.0.1", udp_port)], ice_tcp=True
    )
    pc = _pc()
    tracks: list[MediaStreamTrack] = []
    pc.on("track", tracks.append)
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        desc = parse_sdp(pc.localDescription.sdp)
        h264 = Codec(
            125, "H264", 90000, fmtp={"packetization-mode": "1", "profile-level-id": "42e01f"}
        )
        neg = negotiate_play(desc, {"video": h264, "audio": Codec(111, "opus", 48000, 2)})
        send = {
            desc.media[0].mid or "": SendSsrcs(1111, 2222, "relaycast", "live", "v"),
            desc.media[1].mid or "": SendSsrcs(3333, None, "relaycast", "live", "a"),
        }
        answer = build_answer(desc, neg, local, send)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.sleep(0)
        assert pc.signalingState == "stable"
        assert sorted(t.kind for t in tracks) == ["audio", "video"]
        video_t = pc.getTransceivers()[0]
        assert video_t.currentDirection == "recvonly"
        assert [c.mimeType for c in video_t._codecs] == ["video/H264", "video/rtx"]
        assert video_t._codecs[0].parameters["profile-level-id"] == "42e01f"
    finally:
        await pc.close()
