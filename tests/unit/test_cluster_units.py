"""Cluster pieces without a network: node-request signatures, signed records, settings, the
pull's offer and what an answer turns into."""

from __future__ import annotations

import time
from typing import Any

import pytest

from relaycast.cluster.auth import (
    HEADER_AUTH,
    NodeAuthError,
    node_headers,
    sign_record,
    verify_node,
    verify_record,
)
from relaycast.cluster.pull import build_pull_offer, negotiated_from_answer
from relaycast.config import ConfigError, load_config
from relaycast.media.layers import LayerInfo, LayerSelector
from relaycast.net.dtls import DtlsCertificate
from relaycast.sdp import LocalTransport, build_answer, negotiate_play, parse_sdp

SECRET = "s" * 20
NODE = "http://10.0.0.2:8080"


def test_node_signature_round_trip_and_refusals() -> None:
    body = b"v=0\r\n"
    headers = node_headers(SECRET, "POST", "/whep/live", NODE, body, now=1000)
    assert verify_node(SECRET, "POST", "/whep/live", headers, body, now=1010) == NODE
    assert verify_node(SECRET, "POST", "/whep/live", {}, body) is None  # not a node request
    cases = [
        (("x" * 20, "/whep/live", body, 1000), 403),  # another secret
        ((SECRET, "/whep/other", body, 1000), 403),  # another path
        ((SECRET, "/whep/live", b"v=1\r\n", 1000), 403),  # another offer
        ((SECRET, "/whep/live", body, 1000 + 61), 403),  # too old
        ((None, "/whep/live", body, 1000), 403),  # this node takes no node requests
    ]
    for (secret, path, sent, now), status in cases:
        with pytest.raises(NodeAuthError) as info:
            verify_node(secret, "POST", path, headers, sent, now=now)
        assert info.value.status == status
    with pytest.raises(NodeAuthError) as info:
        verify_node(SECRET, "POST", "/whep/live", {HEADER_AUTH: "123:abc"}, body)
    assert info.value.status == 401


def test_records_signed_with_the_secret() -> None:
    sig = sign_record(SECRET, "origin", NODE, "1.5")
    assert verify_record(SECRET, sig, "origin", NODE, "1.5")
    assert not verify_record(SECRET, sig, "origin", "http://evil:8080", "1.5")
    assert not verify_record("y" * 20, sig, "origin", NODE, "1.5")
    assert verify_record(None, None, "origin", NODE, "1.5")  # no secret: nothing is signed


def test_cluster_settings() -> None:
    config = load_config(
        {"cluster": "redis://h:6379/1", "node_url": NODE + "/", "cluster_redirect": True},
        env={},
    )
    assert config.node_url == NODE and config.cluster_redirect
    env = {"RELAYCAST_CLUSTER": "redis://h:6379", "RELAYCAST_NODE_URL": NODE}
    assert load_config({}, env=env).cluster == "redis://h:6379"
    bad = [
        {"cluster": "http://h:6379", "node_url": NODE},
        {"cluster": "redis://h:6379"},
        {"cluster": "redis://h:6379", "node_url": "http://h:8080/path"},
        {"cluster": "redis://h:6379", "node_url": NODE, "cluster_secret": "short"},
        {"node_url": NODE},
        {"cluster_redirect": True},
    ]
    for flags in bad:
        with pytest.raises(ConfigError):
            load_config(flags, env={})


def test_pull_offer_answered_by_a_live_origin() -> None:
    cert = DtlsCertificate()
    offer = build_pull_offer("ufra", "p" * 24, cert.fingerprint, ("10.0.0.3", 40000))
    parsed = parse_sdp(offer)
    source = negotiate_publish_codecs()
    negotiated = negotiate_play(parsed, source)
    local = LocalTransport("sufr", "q" * 24, cert.fingerprint, [("10.0.0.2", 8443)], False)
    answer = build_answer(parsed, negotiated, local)
    ingress = negotiated_from_answer(answer)
    video = ingress.by_kind("video")
    audio = ingress.by_kind("audio")
    assert video is not None and audio is not None
    assert [c.name for c in video.codecs] == ["H264"]
    assert video.codecs[0].fmtp["profile-level-id"] == "42e01f"
    assert video.rtx == {102: 103} and "nack" in video.rtcp_fb
    assert [c.name.lower() for c in audio.codecs] == ["opus"]


def negotiate_publish_codecs() -> dict[str, object]:
    from relaycast.sdp import Codec

    h264 = Codec(109, "H264", 90000, fmtp={"packetization-mode": "1", "profile-level-id": "42e01f"})
    return {"video": h264, "audio": Codec(111, "opus", 48000, 2)}


def test_top_mode_takes_the_highest_layer_sent_whatever_the_estimate() -> None:
    selector = LayerSelector()
    selector.follow_top()
    layers = [
        LayerInfo("l", 320, 180, 30.0, 150_000, True),
        LayerInfo("m", 640, 360, 30.0, 500_000, True),
        LayerInfo("h", 1280, 720, 30.0, 1_500_000, True),
    ]
    decision = selector.decide(layers, "l", 100_000, 0.0)  # an estimate below every layer
    assert (decision.target, selector.mode) == ("h", "top")
    layers[2] = LayerInfo("h", 1280, 720, 0.0, 0, False)  # the encoder dropped h
    assert selector.decide(layers, "h", None, 1.0).target == "m"


async def test_an_origin_gives_a_node_pull_the_top_layer_of_a_simulcast_stream() -> None:
    """A node's WHEP POST (signed with the cluster secret) is served in top mode: the layer
    extension shows it, and it stays on the top layer (a viewer's low estimate would not)."""
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from tests.unit.test_simulcast_http import SAMPLES, keyframe

    from relaycast.app import create_app
    from relaycast.cluster.http import CLUSTER_KEY
    from relaycast.config import Config
    from relaycast.http.signalling import SERVER_KEY

    config = Config(host="127.0.0.1", port=0, udp_port=0, host_candidates=False)
    app = create_app(config)
    sessions: list[tuple[str, str]] = []
    cluster: Any = SimpleNamespace(
        secret=SECRET,
        node_url="http://10.0.0.1:8080",
        node_session=lambda sid, node: sessions.append((sid, node)),
    )
    app[CLUSTER_KEY] = cluster
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        server = client.app[SERVER_KEY]
        sdp = (SAMPLES / "chrome_simulcast.sdp").read_text()
        publisher = server.publish("live", parse_sdp(sdp))
        for n, rid in enumerate(("h", "m", "l")):
            publisher.ingress.on_rtp(keyframe(0x100 + n, rid), 0)
        offer = (SAMPLES / "chrome_view.sdp").read_text().encode()
        headers = node_headers(SECRET, "POST", "/whep/live", NODE, offer)
        answer = await client.post(
            "/whep/live", data=offer, headers={"Content-Type": "application/sdp", **headers}
        )
        assert answer.status == 201, await answer.text()
        location = answer.headers["Location"]
        assert sessions == [(location.rsplit("/", 1)[1], NODE)]
        status = await (await client.get(f"{location}/layer")).json()
        assert (status["mode"], status["target"]) == ("top", "h")
        assert status["reason"] == "a cluster node pulls the top layer"
        (subscriber,) = server.streams["live"].subscribers
        subscriber.egress.estimate.on_remb(100_000, time.monotonic())  # far below every layer
        subscriber.select_layer(time.monotonic())
        assert subscriber.video is not None and subscriber.video.target_layer == "h"
    finally:
        await client.close()
