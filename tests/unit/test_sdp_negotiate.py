"""negotiate_publish / negotiate_play on real offers and on offers we must refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycast.sdp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_PLAYOUT_DELAY,
    URI_SDES_MID,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
    Codec,
    NegotiationError,
    codec_key,
    negotiate_play,
    negotiate_publish,
    parse_sdp,
)

SAMPLES = Path(__file__).parent / "sdp_samples"
PUBLISH = sorted(p.name for p in SAMPLES.glob("*_publish*.sdp"))
VIEW = sorted(p.name for p in SAMPLES.glob("*_view.sdp"))

VP8 = Codec(96, "VP8", 90000)
H264_CB = Codec(
    102,
    "H264",
    90000,
    fmtp={"packetization-mode": "1", "profile-level-id": "42e01f", "level-asymmetry-allowed": "1"},
)
H264_HIGH = Codec(
    100, "H264", 90000, fmtp={"packetization-mode": "1", "profile-level-id": "640c1f"}
)
OPUS = Codec(111, "opus", 48000, 2)


def offer(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode()


# (sample, audio pt, video codec name, video pt, rtx pt, local setup)
EXPECTED_PUBLISH = {
    "chrome_publish.sdp": (111, "VP8", 96, 97, "passive"),
    "firefox_publish.sdp": (109, "VP8", 120, 124, "passive"),
    "aiortc_publish.sdp": (96, "VP8", 97, 98, "passive"),
    "ffmpeg_publish.sdp": (111, "H264", 106, 105, "active"),
    "ffmpeg_publish_noextras.sdp": (111, "H264", 106, None, "active"),
    "gstreamer_publish.sdp": (111, "H264", 96, 97, "passive"),
    "obs_publish.sdp": (111, "H264", 96, None, "passive"),
}


def test_every_publish_sample_has_an_expectation() -> None:
    assert set(PUBLISH) == set(EXPECTED_PUBLISH)


@pytest.mark.parametrize("name", PUBLISH)
def test_publish_samples(name: str) -> None:
    apt, vname, vpt, rtx, setup = EXPECTED_PUBLISH[name]
    desc = parse_sdp(offer(name))
    neg = negotiate_publish(desc)
    audio, video = neg.by_kind("audio"), neg.by_kind("video")
    assert audio is not None and video is not None
    assert [c.payload_type for c in audio.codecs] == [apt]
    assert audio.codecs[0].name.lower() == "opus"
    assert [(c.name, c.payload_type) for c in video.codecs] == [(vname, vpt)]
    assert video.rtx == ({vpt: rtx} if rtx is not None else {})
    assert audio.direction == video.direction == "recvonly"
    assert neg.local_setup == setup
    assert neg.bundle_mids == [m.mid for m in desc.media]
    assert neg.remote_ufrag == desc.media[0].ice_ufrag
    assert neg.remote_pwd == desc.media[0].ice_pwd
    assert neg.remote_fingerprints[0][0] == "sha-256"
    for nm in (audio, video):
        m = desc.media[nm.index]
        assert nm.mid == m.mid and not nm.rejected
        assert len(nm.remote_ssrcs) == 1
        assert set(nm.extensions) <= {
            URI_SDES_MID,
            URI_TRANSPORT_CC,
            URI_ABS_SEND_TIME,
            URI_AUDIO_LEVEL,
            URI_VIDEO_ORIENTATION,
        }
        for uri, ext_id in nm.extensions.items():
            assert m.extmaps[ext_id] == uri
        assert not (URI_TRANSPORT_CC in nm.extensions and URI_ABS_SEND_TIME in nm.extensions)
        assert not ("transport-cc" in nm.rtcp_fb and "goog-remb" in nm.rtcp_fb)
        assert set(nm.rtcp_fb) <= set(nm.codecs[0].rtcp_fb)


def test_publish_chrome_feedback_and_ssrcs() -> None:
    neg = negotiate_publish(parse_sdp(offer("chrome_publish.sdp")))
    video = neg.by_kind("video")
    assert video is not None
    assert video.rtcp_fb == ["nack", "nack pli", "ccm fir", "transport-cc"]
    assert video.extensions == {
        URI_TRANSPORT_CC: 3,
        URI_SDES_MID: 4,
        URI_VIDEO_ORIENTATION: 13,
    }
    assert video.remote_ssrcs == [594926218]
    assert video.remote_rtx_ssrcs == {594926218: 1605171958}


def test_publish_remb_without_transport_cc() -> None:
    neg = negotiate_publish(parse_sdp(offer("aiortc_publish.sdp")))
    video = neg.by_kind("video")
    assert video is not None
    assert video.rtcp_fb == ["nack", "nack pli", "goog-remb"]
    assert video.extensions == {URI_SDES_MID: 1, URI_ABS_SEND_TIME: 3}


def test_publish_ffmpeg_ssrcs_from_fid_group_only() -> None:
    neg = negotiate_publish(parse_sdp(offer("ffmpeg_publish.sdp")))
    video = neg.by_kind("video")
    assert video is not None
    assert video.remote_ssrcs == [4007564119]
    assert video.remote_rtx_ssrcs == {4007564119: 4007564120}
    assert neg.remote_setup == "passive" and neg.local_setup == "active"


def test_publish_skips_unsupported_codecs_in_offer_order() -> None:
    text = offer("chrome_publish.sdp").replace(
        "m=video 59868 UDP/TLS/RTP/SAVPF 96 97 102", "m=video 59868 UDP/TLS/RTP/SAVPF 104 107 102"
    )
    neg = negotiate_publish(parse_sdp(text))
    video = neg.by_kind("video")
    assert video is not None
    # 104 is H.264 packetization-mode=0: skipped; 102 is the first usable one
    assert [c.payload_type for c in video.codecs] == [102]
    assert video.rtx == {102: 103}


def test_publish_rejects_application_and_extra_sections() -> None:
    text = offer("aiortc_publish.sdp").replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    fp = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)
    text += (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n" + fp + "\r\n"
        "a=sctp-port:5000\r\n"
    )
    neg = negotiate_publish(parse_sdp(text))
    assert [(m.kind, m.rejected) for m in neg.media] == [
        ("audio", False),
        ("video", False),
        ("application", True),
    ]
    assert neg.bundle_mids == ["0", "1"]


def test_publish_second_video_rejected() -> None:
    desc = parse_sdp(offer("chrome_publish.sdp"))
    desc.media[0].kind = "video"
    desc.media[0].codecs = list(desc.media[1].codecs)
    neg = negotiate_publish(desc)
    assert [m.rejected for m in neg.media] == [False, True]


def test_publish_errors() -> None:
    text = offer("obs_publish.sdp").replace("a=rtcp-mux\n", "")
    with pytest.raises(NegotiationError, match="rtcp-mux is required"):
        negotiate_publish(parse_sdp(text))

    text = offer("obs_publish.sdp").replace("packetization-mode=1", "packetization-mode=0")
    text = text.replace("opus/48000/2", "PCMU/8000")
    with pytest.raises(NegotiationError) as info:
        negotiate_publish(parse_sdp(text))
    msg = str(info.value)
    assert info.value.status == 422
    assert "nothing to publish" in msg
    assert "m-line 0 (audio, mid 0) offered PCMU/8000 (not supported)" in msg
    assert "H.264 with packetization-mode=0 (only packetization-mode=1 is supported)" in msg
    assert "relaycast accepts VP8, H.264 (packetization-mode=1), VP9 or AV1 video" in msg

    text = offer("obs_publish.sdp").replace("a=sendonly", "a=recvonly")
    with pytest.raises(NegotiationError, match="is recvonly; a publisher must send"):
        negotiate_publish(parse_sdp(text))

    text = offer("obs_publish.sdp").replace("UDP/TLS/RTP/SAVPF", "RTP/AVP")
    with pytest.raises(NegotiationError, match="uses protocol RTP/AVP; relaycast needs DTLS-SRTP"):
        negotiate_publish(parse_sdp(text))


def test_publish_audio_only_is_fine() -> None:
    text = offer("obs_publish.sdp").replace("H264/90000", "H265/90000")
    neg = negotiate_publish(parse_sdp(text))
    assert neg.by_kind("video") is None
    assert [m.rejected for m in neg.media] == [False, True]
    assert neg.bundle_mids == ["0"]


@pytest.mark.parametrize("name", VIEW)
def test_play_not_live_accepts_all_supported(name: str) -> None:
    desc = parse_sdp(offer(name))
    neg = negotiate_play(desc, None)
    video, audio = neg.by_kind("video"), neg.by_kind("audio")
    assert video is not None and audio is not None
    assert audio.direction == video.direction == "sendonly"
    keys = [codec_key(c) for c in video.codecs]
    assert len(keys) == len(set(keys))
    assert keys[0] == "vp8"
    assert "h264:constrained-baseline" in keys
    names = [c.name for c in video.codecs]
    assert names == sorted(names, key=["VP8", "H264", "VP9", "AV1"].index)
    assert all(c.fmtp.get("packetization-mode") == "1" for c in video.codecs if c.name == "H264")
    for c in video.codecs:
        assert c.payload_type in video.rtx  # every browser offers RTX for these
    assert [codec_key(c) for c in audio.codecs] == ["opus"]
    assert set(video.extensions) <= {
        URI_SDES_MID,
        URI_VIDEO_ORIENTATION,
        URI_AUDIO_LEVEL,
        URI_TRANSPORT_CC,
        URI_PLAYOUT_DELAY,
    }
    # TWCC to viewers: our own transport-wide numbers, with the feedback to match
    offered = set(desc.media[video.index].extmaps.values())
    assert (URI_TRANSPORT_CC in video.extensions) == (URI_TRANSPORT_CC in offered)
    assert ("transport-cc" in video.rtcp_fb) == (URI_TRANSPORT_CC in video.extensions)
    assert URI_PLAYOUT_DELAY not in audio.extensions
    assert set(video.rtcp_fb) <= {"nack", "nack pli", "ccm fir", "transport-cc"}
    assert "nack" in video.rtcp_fb
    assert audio.remote_ssrcs == []


def test_play_live_picks_the_viewers_pt() -> None:
    desc = parse_sdp(offer("chrome_view.sdp"))
    neg = negotiate_play(desc, {"video": H264_CB, "audio": OPUS})
    video, audio = neg.by_kind("video"), neg.by_kind("audio")
    assert video is not None and audio is not None
    assert [c.payload_type for c in video.codecs] == [108]  # Chrome's 42e01f pm=1
    assert video.rtx == {108: 109}
    assert [c.payload_type for c in audio.codecs] == [111]
    neg = negotiate_play(parse_sdp(offer("firefox_view.sdp")), {"video": H264_CB})
    video = neg.by_kind("video")
    assert video is not None and [c.payload_type for c in video.codecs] == [126]
    assert neg.by_kind("audio") is not None  # no audio source yet: all supported audio


def test_play_constrained_baseline_falls_back_to_baseline() -> None:
    text = offer("aiortc_view.sdp").replace("profile-level-id=42e01f", "profile-level-id=4d001f")
    neg = negotiate_play(parse_sdp(text), {"video": H264_CB})
    video = neg.by_kind("video")
    assert video is not None and [c.payload_type for c in video.codecs] == [99]  # 42001f


def test_play_codec_mismatch_explains() -> None:
    with pytest.raises(NegotiationError) as info:
        negotiate_play(parse_sdp(offer("aiortc_view.sdp")), {"video": H264_HIGH})
    assert info.value.status == 422
    assert str(info.value).startswith(
        "this stream is H.264 (constrained-high); your browser offered only VP8, "
        "H.264 (baseline), H.264 (constrained-baseline) for video"
    )
    assert "Enable H.264 or watch in another browser" in str(info.value)
    text = offer("firefox_view.sdp")
    with pytest.raises(NegotiationError, match="this stream is AV1; your browser offered only VP8"):
        negotiate_play(parse_sdp(text), {"video": Codec(45, "AV1", 90000)})


def test_play_rejects_sendonly_viewer_section() -> None:
    text = offer("aiortc_view.sdp").replace("a=recvonly", "a=sendonly")
    with pytest.raises(NegotiationError, match=r"nothing to play: .* is sendonly"):
        negotiate_play(parse_sdp(text), None)


def test_play_sendrecv_viewer_section_is_answered_sendonly() -> None:
    text = offer("aiortc_view.sdp").replace("a=recvonly", "a=sendrecv")
    neg = negotiate_play(parse_sdp(text), {"video": VP8})
    video = neg.by_kind("video")
    assert video is not None and video.direction == "sendonly"
    assert [c.payload_type for c in video.codecs] == [97]
