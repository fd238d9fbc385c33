"""Simulcast offers (RFC 8853, RFC 8851) from Chromium, Firefox and OBS: layers, extensions,
answers.

``chrome_simulcast.sdp`` is a Chromium capture; ``firefox_simulcast.sdp`` and
``obs_simulcast.sdp`` are the captured single-encoding offers of those clients with the
simulcast lines their simulcast offers add (Firefox: directional RID extmaps, ``a=msid:-``,
``a=rid`` lines in another order than ``a=simulcast``, one FID group per layer; OBS 32
through libdatachannel: numbered rids, one ``a=ssrc`` per layer, the RID extension only).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from relaycast.sdp import (
    URI_REPAIRED_RID,
    URI_RID,
    LocalTransport,
    build_answer,
    negotiate_publish,
    parse_sdp,
)
from relaycast.sdp.simulcast import SimulcastStream, parse_simulcast, send_layers

SAMPLES = Path(__file__).parent / "sdp_samples"
LOCAL = LocalTransport("abcd", "p" * 24, "AA:" * 31 + "AA", [("127.0.0.1", 8443)])


def offer(name: str) -> str:
    return (SAMPLES / name).read_text()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("send h;m;l", [("h", False), ("m", False), ("l", False)]),
        (" send rid=hi;lo", [("hi", False), ("lo", False)]),  # draft-03 (old Firefox)
        ("send 1;2,3 recv 4", [("1", False), ("2", False)]),  # alternatives: the first
        ("send ~f;h", [("f", True), ("h", False)]),  # paused
        ("send a;a;b!;c", [("a", False), ("c", False)]),  # duplicates and bad ids dropped
        ("send pt=96;97", []),  # draft syntax by payload type: nothing to map
    ],
)
def test_simulcast_attribute_forms(value: str, expected: list[tuple[str, bool]]) -> None:
    streams = parse_simulcast(value).get("send", [])
    assert streams == [SimulcastStream(rid, paused) for rid, paused in expected]


@pytest.mark.parametrize(
    ("sample", "rids", "rid_id", "rrid_id", "pt"),
    [
        ("chrome_simulcast.sdp", ["h", "m", "l"], 10, 11, 96),
        ("firefox_simulcast.sdp", ["f", "h", "q"], 8, 9, 120),  # a=simulcast order, not a=rid
        ("obs_simulcast.sdp", ["0", "1", "2"], 1, None, 96),
    ],
)
def test_simulcast_offers_are_accepted_with_their_layers(
    sample: str, rids: list[str], rid_id: int, rrid_id: int | None, pt: int
) -> None:
    desc = parse_sdp(offer(sample))
    negotiated = negotiate_publish(desc)
    video = negotiated.by_kind("video")
    assert video is not None and video.codecs[0].payload_type == pt
    assert video.rids == rids
    assert video.extensions[URI_RID] == rid_id
    assert video.extensions.get(URI_REPAIRED_RID) == rrid_id
    answer = build_answer(desc, negotiated, LOCAL)
    video_part = answer[answer.index("m=video") :]
    assert [line for line in video_part.split("\r\n") if line.startswith("a=rid:")] == [
        f"a=rid:{rid} recv" for rid in rids
    ]
    assert f"a=simulcast:recv {';'.join(rids)}\r\n" in video_part
    assert f"a=extmap:{rid_id} {URI_RID}\r\n" in video_part
    audio = negotiated.by_kind("audio")
    assert audio is None or audio.rids == []
    # the answer parses back, and names the same layers
    back = next(m for m in parse_sdp(answer).media if m.kind == "video")
    assert back.rids == rids
    assert back.simulcast == "recv " + ";".join(rids)


def test_a_single_encoding_offer_is_answered_as_before() -> None:
    desc = parse_sdp(offer("chrome_publish.sdp"))
    negotiated = negotiate_publish(desc)
    video = negotiated.by_kind("video")
    assert video is not None and video.rids == []
    assert URI_RID not in video.extensions
    assert "a=simulcast" not in build_answer(desc, negotiated, LOCAL)


def test_layers_restricted_to_other_payload_types_or_too_many_are_left_out() -> None:
    text = offer("chrome_simulcast.sdp").replace("a=rid:m send", "a=rid:m send pt=102")
    video = negotiate_publish(parse_sdp(text)).by_kind("video")
    assert video is not None and video.rids == ["h", "l"]  # VP8 (96) is the codec taken

    text = offer("chrome_simulcast.sdp").replace(
        "a=simulcast:send h;m;l", "a=rid:a send\na=rid:b send\na=simulcast:send h;m;l;a;b"
    )
    video = negotiate_publish(parse_sdp(text)).by_kind("video")
    assert video is not None and video.rids == ["h", "m", "l", "a"]


def test_one_layer_left_is_a_single_encoding() -> None:
    text = offer("chrome_simulcast.sdp")
    text = text.replace("a=rid:m send\n", "").replace("a=rid:l send\n", "")
    text = text.replace("a=simulcast:send h;m;l", "a=simulcast:send h")
    desc = parse_sdp(text)
    negotiated = negotiate_publish(desc)
    video = negotiated.by_kind("video")
    assert video is not None and video.rids == []
    assert "a=simulcast" not in build_answer(desc, negotiated, LOCAL)


def test_recv_rids_and_rids_without_simulcast_are_not_layers() -> None:
    desc = parse_sdp(offer("chrome_simulcast.sdp").replace("a=rid:l send", "a=rid:l recv"))
    video = desc.media[0]
    assert send_layers(video, 96) == ["h", "m"]
    video.simulcast = None
    assert send_layers(video, 96) == ["h", "m"]
