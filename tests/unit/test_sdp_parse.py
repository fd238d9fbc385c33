"""parse_sdp / parse_sdpfrag on real offers and on broken input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from relaycast.sdp import MAX_SDP_BYTES, SdpError, parse_sdp, parse_sdpfrag
from relaycast.sdp.parse import (
    MAX_MEDIA_SECTIONS,
    MAX_SDPFRAG_LINES,
    MAX_SECTION_LINES,
    MAX_SESSION_LINES,
    SdpLimitError,
)

SAMPLES = Path(__file__).parent / "sdp_samples"
ALL = sorted(p.name for p in SAMPLES.glob("*.sdp"))


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode()


def test_samples_present() -> None:
    for client in ("chrome", "firefox", "aiortc", "ffmpeg", "gstreamer", "obs"):
        assert any(name.startswith(client) for name in ALL), client


@pytest.mark.parametrize("name", ALL)
def test_every_sample_parses(name: str) -> None:
    desc = parse_sdp(sample(name))
    assert desc.media
    for m in desc.media:
        assert m.ice_ufrag and m.ice_pwd
        assert any(algo == "sha-256" and len(fp) == 95 for algo, fp in m.fingerprints)
        assert m.rtcp_mux
        assert m.mid is not None
        assert m.kind in ("audio", "video")


@pytest.mark.parametrize("name", ALL)
def test_lf_and_crlf_parse_the_same(name: str) -> None:
    text = sample(name)
    lf = parse_sdp(text.replace("\r\n", "\n"))
    crlf = parse_sdp(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    assert lf == crlf


def test_chrome_publish_details() -> None:
    desc = parse_sdp(sample("chrome_publish.sdp"))
    assert desc.bundle == ["0", "1"]
    assert desc.extmap_allow_mixed and not desc.ice_lite
    audio, video = desc.media
    assert (audio.kind, audio.direction, audio.setup) == ("audio", "sendonly", "actpass")
    opus = audio.codecs[0]
    assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (111, "opus", 48000, 2)
    assert opus.fmtp == {"minptime": "10", "useinbandfec": "1"}
    assert opus.rtcp_fb == ["transport-cc"]
    assert opus.mime == "audio/opus"
    assert audio.extmaps[4] == "urn:ietf:params:rtp-hdrext:sdes:mid"
    assert audio.candidates[0].startswith("candidate:") and " typ host" in audio.candidates[0]
    vp8 = video.codecs[0]
    assert (vp8.payload_type, vp8.mime) == (96, "video/vp8")
    assert vp8.rtcp_fb == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    rtx = video.rtx_for(96)
    assert rtx is not None and rtx.payload_type == 97 and rtx.fmtp == {"apt": "96"}
    h264 = video.codec(108)
    assert h264 is not None and h264.fmtp["profile-level-id"] == "42e01f"
    assert list(h264.fmtp) == ["level-asymmetry-allowed", "packetization-mode", "profile-level-id"]
    assert video.fid_pairs() == {594926218: 1605171958}
    assert video.ssrcs[594926218]["cname"] == "6AZAdlo9Y02ejLl6"
    assert video.ssrcs[594926218]["msid"].count(" ") == 1
    assert video.msid is not None and video.msid.startswith("531d686e")
    assert video.ice_options == ["trickle"]
    assert video.rtcp_rsize


def test_session_level_transport_is_folded_into_media() -> None:
    # libdatachannel (OBS) writes ICE/DTLS attributes at session level only
    desc = parse_sdp(sample("obs_publish.sdp"))
    for m in desc.media:
        assert m.ice_ufrag == "Hh7c"
        assert m.ice_pwd == "Nq7Cv9dBOcH5wEEuXzKb/1"
        assert m.setup == "actpass"
        assert m.ice_options == ["ice2", "trickle"]
        assert m.fingerprints[0][0] == "sha-256"
    assert ("LS", ["0", "1"]) in desc.groups
    # Firefox: fingerprint at session level, fmtp before rtpmap
    ff = parse_sdp(sample("firefox_publish.sdp"))
    assert ff.media[1].fingerprints == ff.media[0].fingerprints != []
    assert ff.media[1].codec(126) is not None
    assert ff.media[1].codec(126).fmtp["packetization-mode"] == "1"  # type: ignore[union-attr]
    assert ff.media[1].extmaps[6] == "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"


def test_ffmpeg_offer() -> None:
    desc = parse_sdp(sample("ffmpeg_publish.sdp"))
    audio, video = desc.media
    assert audio.setup == video.setup == "passive"
    assert audio.extmaps == {} and not audio.codecs[0].rtcp_fb
    assert video.codecs[0].payload_type == 106
    assert video.codecs[0].fmtp["packetization-mode"] == "1"
    # FFmpeg 8.1 names an RTX SSRC in the FID group without a=ssrc lines for it
    assert video.fid_pairs() == {4007564119: 4007564120}
    assert 4007564120 not in video.ssrcs


def test_gstreamer_bundle_only_and_uppercase_opus() -> None:
    desc = parse_sdp(sample("gstreamer_publish.sdp"))
    video, audio = desc.media
    assert desc.bundle == ["video0", "audio1"]
    assert audio.port == 0 and audio.bundle_only
    assert audio.codecs[0].name == "OPUS" and audio.codecs[0].mime == "audio/opus"
    assert video.rtx_for(96) is not None  # fmtp apt after the ssrc lines
    assert video.codecs[0].fmtp["sprop-parameter-sets"].endswith("aMuDyyA=")
    assert video.end_of_candidates


def test_bundled_section_inherits_tag_transport() -> None:
    text = sample("chrome_view.sdp").replace("\r\n", "\n")
    head, _, second = text.partition("m=audio")
    kept = [
        line
        for line in second.split("\n")
        if not line.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"))
    ]
    desc = parse_sdp(head + "m=audio" + "\n".join(kept))
    assert desc.media[1].ice_ufrag == desc.media[0].ice_ufrag == "2qCM"
    assert desc.media[1].fingerprints == desc.media[0].fingerprints


def test_static_payload_types_without_rtpmap() -> None:
    desc = parse_sdp(sample("aiortc_publish.sdp").replace("a=rtpmap:0 PCMU/8000\r\n", ""))
    pcmu = desc.media[0].codec(0)
    assert pcmu is not None and pcmu.name == "PCMU" and pcmu.clock_rate == 8000


def test_rtcp_fb_wildcard() -> None:
    text = sample("obs_publish.sdp").replace("a=rtcp-fb:96 nack\n", "a=rtcp-fb:* ccm fir\n")
    video = parse_sdp(text).media[1]
    assert video.codecs[0].rtcp_fb == ["nack pli", "goog-remb", "ccm fir"]


MINIMAL = (
    "v=0\n"
    "o=- 1 1 IN IP4 0.0.0.0\n"
    "s=-\n"
    "t=0 0\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\n"
    "a=mid:0\n"
    "a=ice-ufrag:abcd\n"
    "a=ice-pwd:abcdefghijklmnopqrstuv\n"
    "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\n"
    "a=setup:actpass\n"
    "a=sendonly\n"
    "a=rtcp-mux\n"
    "a=rtpmap:96 VP8/90000\n"
)


def test_minimal_offer_parses() -> None:
    desc = parse_sdp(MINIMAL)
    assert desc.media[0].codecs[0].name == "VP8"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SDP is empty"),
        ("hello world", "line 1: an SDP description must start with 'v=0', got 'hello world'"),
        ("v=1\n", "must start with 'v=0'"),
        ("\x00\x01\x02binary", "line 1: contains control character 0x00"),
        (MINIMAL.split("m=")[0], "SDP has no m= line"),
        (
            MINIMAL.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:VP8/90000"),
            "line 13: a=rtpmap without payload type: 'a=rtpmap:VP8/90000'",
        ),
        (
            MINIMAL.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8"),
            "line 13: a=rtpmap must be '<pt> <name>/<clock rate>[/<channels>]'",
        ),
        (
            MINIMAL.replace("a=rtpmap:96 VP8/90000", "a=rtpmap:200 VP8/90000"),
            "line 13: payload type must be an integer 0-127",
        ),
        (
            MINIMAL.replace("a=ice-ufrag:abcd\n", ""),
            "line 5: m-line 0 (video, mid 0) has no a=ice-ufrag at session or media level",
        ),
        (MINIMAL.replace("a=ice-pwd:abcdefghijklmnopqrstuv\n", ""), "has no a=ice-pwd"),
        (
            MINIMAL.replace("a=ice-pwd:abcdefghijklmnopqrstuv", "a=ice-pwd:short"),
            "line 8: a=ice-pwd must be 22-256 characters",
        ),
        (
            "\n".join(x for x in MINIMAL.split("\n") if not x.startswith("a=fingerprint")),
            "line 5: m-line 0 (video, mid 0) has no a=fingerprint",
        ),
        (
            MINIMAL.replace("sha-256 " + ":".join(["AA"] * 32), "sha-1 " + ":".join(["AA"] * 20)),
            "has no a=fingerprint:sha-256 (found sha-1)",
        ),
        (
            MINIMAL.replace(":".join(["AA"] * 32), "AA:BB"),
            "line 9: a=fingerprint:sha-256 must be 32 hex bytes",
        ),
        (MINIMAL.replace("a=setup:actpass", "a=setup:sideways"), "line 10: a=setup must be one of"),
        (
            MINIMAL.replace("m=video 9 UDP", "m=video nine UDP"),
            "line 5: m= port must be an integer",
        ),
        (MINIMAL.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9"), "line 5: m= line must be"),
        (
            MINIMAL + "this is not sdp\n",
            "line 14: expected '<letter>=<value>', got 'this is not sdp'",
        ),
        (MINIMAL + "a=ssrc:abc cname:x\n", "line 14: SSRC must be an integer"),
        (MINIMAL + "a=extmap:0 urn:x\n", "line 14: extmap id must be an integer 1-255"),
        (MINIMAL + "a=candidate:1 1 udp 5 1.2.3.4\n", "line 14: a=candidate must be"),
        (MINIMAL + "v=0\n", "line 14: a second 'v=' line"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert message in str(info.value)


def test_oversize_rejected() -> None:
    text = MINIMAL + "a=x-pad:" + "x" * MAX_SDP_BYTES + "\n"
    with pytest.raises(SdpError, match=r"bytes; the limit is 65536 bytes"):
        parse_sdp(text)
    with pytest.raises(SdpError, match="limit"):
        parse_sdpfrag(text)


def test_offerer_rejected_section_needs_no_transport() -> None:
    text = MINIMAL + "m=audio 0 UDP/TLS/RTP/SAVPF 111\na=mid:1\na=rtpmap:111 opus/48000/2\n"
    text = text.replace("a=ice-ufrag:abcd\n", "").replace("m=video", "a=ice-ufrag:abcd\nm=video")
    desc = parse_sdp(text)
    assert desc.media[1].port == 0


def test_sdpfrag_media_level() -> None:
    body = (
        "a=ice-options:trickle ice2\r\n"
        "m=audio 9 RTP/AVP 0\r\n"
        "a=mid:0\r\n"
        "a=ice-ufrag:EsAw\r\n"
        "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n"
        "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
        "a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n"
        "a=end-of-candidates\r\n"
    )
    ufrag, pwd, cands = parse_sdpfrag(body)
    assert (ufrag, pwd) == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert cands == [
        "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0",
        "candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0",
    ]


def test_sdpfrag_session_level_and_empty() -> None:
    ufrag, pwd, cands = parse_sdpfrag("a=ice-ufrag:abcd\na=ice-pwd:abcdefghijklmnopqrstuv\n")
    assert (ufrag, pwd, cands) == ("abcd", "abcdefghijklmnopqrstuv", [])
    assert parse_sdpfrag("") == (None, None, [])
    with pytest.raises(SdpError, match="line 1: expected"):
        parse_sdpfrag("candidate:1 1 udp 1 1.2.3.4 5 typ host")
    with pytest.raises(SdpError, match="line 2: a=candidate must be"):
        parse_sdpfrag("a=ice-ufrag:abcd\na=candidate:garbage\n")


# -- caps: an offer is refused at the first line past a cap ---------------------------------


def _sections(count: int) -> str:
    """MINIMAL plus offerer-rejected audio sections up to *count* m= sections in all."""
    return MINIMAL + "m=audio 0 UDP/TLS/RTP/SAVPF 0\n" * (count - 1)


def test_sixteen_sections_parse_seventeen_are_refused() -> None:
    assert len(parse_sdp(_sections(MAX_MEDIA_SECTIONS)).media) == MAX_MEDIA_SECTIONS
    with pytest.raises(SdpLimitError) as info:
        parse_sdp(_sections(MAX_MEDIA_SECTIONS + 1))
    assert info.value.limit == "m-sections" and info.value.maximum == 16
    assert "more than 16 m= sections" in str(info.value)
    assert isinstance(info.value, SdpError)  # callers that only know SdpError still refuse


def test_three_thousand_sections_fail_fast() -> None:
    """The offer of the review (~3,000 m= sections in 64 KiB) took 85-145 ms and ~2.5 MiB."""
    text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + "m=audio 0 X 0\r\n" * 3000
    assert len(text.encode()) < MAX_SDP_BYTES
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        with pytest.raises(SdpLimitError, match="line 21: more than 16 m= sections"):
            parse_sdp(text)
        best = min(best, time.perf_counter() - start)
    assert best < 0.01, f"{best * 1000:.1f} ms"  # measured ~0.1 ms


def test_lines_per_section_capped() -> None:
    ok = MINIMAL + "a=x-pad\n" * (MAX_SECTION_LINES - 10)
    assert parse_sdp(ok).media[0].kind == "video"
    with pytest.raises(
        SdpLimitError, match=r"m= section of line 5 has more than 512 lines"
    ) as info:
        parse_sdp(MINIMAL + "a=ssrc:1 cname:x\n" * MAX_SECTION_LINES)
    assert info.value.limit == "section-lines"
    # The cap counts per section: two sections of 300 lines each are fine.
    two = MINIMAL + "a=x-pad\n" * 290 + "m=audio 0 UDP/TLS/RTP/SAVPF 0\n" + "a=x-pad\n" * 300
    assert len(parse_sdp(two).media) == 2


def test_session_level_lines_capped() -> None:
    head, _, rest = MINIMAL.partition("m=video")
    text = head + "a=x-pad\n" * MAX_SESSION_LINES + "m=video" + rest
    with pytest.raises(SdpLimitError, match="lines before the first m= line") as info:
        parse_sdp(text)
    assert info.value.limit == "session-lines"


def test_sdpfrag_lines_capped() -> None:
    frag = "a=ice-ufrag:abcd\n" + "a=end-of-candidates\n" * MAX_SDPFRAG_LINES
    with pytest.raises(SdpLimitError, match="at most 1024 lines"):
        parse_sdpfrag(frag)
    assert parse_sdpfrag("a=ice-ufrag:abcd\n" + "a=x\n" * 100)[0] == "abcd"


def test_every_sample_is_well_inside_the_caps() -> None:
    for name in ALL:
        lines = [line for line in sample(name).splitlines() if line]
        sections = sum(line.startswith("m=") for line in lines)
        assert sections <= MAX_MEDIA_SECTIONS // 4, name
        assert len(lines) <= MAX_SECTION_LINES // 2, name
