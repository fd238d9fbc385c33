"""Cluster pieces without a network: node-request signatures, signed records, settings, the
pull's offer and what an answer turns into."""

from __future__ import annotations

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
