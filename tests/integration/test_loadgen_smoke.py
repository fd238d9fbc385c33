"""Smoke run of ``relaycast bench``'s machinery: a synthetic publisher and three lightweight
viewers against a real relaycast server for a few seconds. Asserts delivery and correctness
(SRTP authentication, untouched payloads, keyframes), never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import SRC

from relaycast.loadgen import receiver as native_receiver
from relaycast.loadgen.report import format_table
from relaycast.loadgen.runner import BenchOptions, run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

REQUIRED_KEYS = {
    "viewers",
    "delivered_ratio_min",
    "delivered_ratio_mean",
    "delay_ms_p50",
    "delay_ms_p99",
    "first_packet_ms_p50",
    "first_keyframe_ms_p50",
    "server_cpu_percent",
    "server_rss_bytes",
    "egress_mbps",
    "publisher_send_mbps",
    "load_cpu_percent",
    "load_core_percent",
    "load_headroom",
    "server_to_load_cost",
    "load_receive_path",
}


@pytest.fixture
def clip_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.parametrize("path", ["native", "python"])
def test_three_viewers_receive_everything(relaycast_server, clip_cache, monkeypatch, path) -> None:
    """On both receive paths of the viewers (the worker processes inherit the switch)."""
    if path == "native" and not native_receiver.available():
        pytest.skip("native receive path not built")
    monkeypatch.setenv(native_receiver.ENV, "1" if path == "native" else "0")
    opts = BenchOptions(
        viewers=3,
        duration=4.0,
        bitrate=400_000,
        codec="vp8",
        target=relaycast_server.http,
        key=relaycast_server.keys["live"],
        server_pid=relaycast_server.proc.pid,
        width=320,
        height=240,
        verbose=False,
    )
    result = run_bench(opts)
    assert result.keys() >= REQUIRED_KEYS
    assert result["viewers"] == 3
    assert result["viewers_measured"] == 3
    assert result["viewer_errors"] == []
    assert result["delivered_ratio_min"] > 0.95
    assert result["srtp_auth_failures"] == 0
    assert result["viewers_without_keyframe"] == 0
    assert result["joins_without_keyframe"] == 0
    # relaycast forwards payloads untouched: (nearly) every arrival matches a sent packet
    assert result["delay_mode"] == "absolute"
    assert result["untouched_payload_ratio"] > 0.99
    assert result["first_keyframe_ms_p50"] is not None
    assert result["first_packet_ms_p50"] <= result["first_keyframe_ms_p50"]
    assert 0 < result["delay_ms_p50"] <= result["delay_ms_p99"]
    assert result["server_cpu_percent"] is not None
    assert result["server_rss_bytes"] > 0
    # three viewers each get about what the publisher sends
    assert result["egress_mbps"] > 2 * result["publisher_send_mbps"]
    assert result["load_receive_path"] == path
    assert 0 < result["load_core_percent"] <= result["load_cpu_percent"]
    assert result["load_headroom"] == pytest.approx(100 / result["load_core_percent"])
    assert result["server_to_load_cost"] > 0
    assert "load core %" in format_table(result)
    json.dumps(result)  # serialisable as the CLI writes it


def test_cli_writes_json(relaycast_server, clip_cache) -> None:
    out = clip_cache / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "relaycast",
            "bench",
            "--viewers",
            "1",
            "--duration",
            "2",
            "--bitrate",
            "300k",
            "--resolution",
            "320x240",
            "--codec",
            "h264",
            "--target",
            relaycast_server.http,
            "--key",
            relaycast_server.keys["live"],
            "--json",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={
            **os.environ,
            "XDG_CACHE_HOME": str(clip_cache / "cache"),
            "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result.keys() >= REQUIRED_KEYS
    assert result["codec"] == "h264"
    assert result["delivered_ratio_min"] > 0.95
    assert result["srtp_auth_failures"] == 0
    assert "deliv min %" in proc.stdout


def test_gcm_receiver_matches_libsrtp_across_rollover() -> None:
    """The viewers' AES-GCM fast path decrypts what libsrtp protects (RFC 7714), across a
    sequence-number wrap (ROC 0 -> 1), and rejects a flipped bit."""
    import struct as _struct

    from cryptography.exceptions import InvalidTag

    from relaycast.loadgen.client_transport import GcmRtpReceiver
    from relaycast.net.dtls import SrtpKeys
    from relaycast.net.srtp import SrtpContext

    key = bytes(range(28))
    sender = SrtpContext(SrtpKeys("SRTP_AEAD_AES_128_GCM", key, key))
    receiver = GcmRtpReceiver(key)
    for i in range(600):
        seq = (65300 + i) & 0xFFFF
        plain = _struct.pack("!BBHII", 0x80, 96, seq, i * 3000, 0x01020304) + bytes([i % 256]) * 50
        assert receiver.unprotect(sender.protect(plain)) == plain
    tampered = bytearray(
        sender.protect(_struct.pack("!BBHII", 0x80, 96, 400, 0, 0x01020304) + b"x")
    )
    tampered[-20] ^= 1
    with pytest.raises(InvalidTag):
        receiver.unprotect(bytes(tampered))
