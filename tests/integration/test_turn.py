"""A viewer whose UDP to the server is dropped connects through a real TURN server (coturn)
with the time-limited credentials relaycast hands out (``--turn-secret``), and decodes.

Four namespaces on one bridge (``tests/integration/netns.py``): the server, an aiortc
publisher, coturn (``use-auth-secret`` with the same secret), and the viewer, whose UDP to and
from the server is dropped by nftables in its namespace while its UDP to coturn passes. The
viewer takes its ICE servers from the WHEP ``Link`` headers and uses relayed candidates only
(iceTransportPolicy "relay"); coturn relays to the server over UDP.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.integration.netns import ROOT, Lab, Node, lab_or_skip, python_env

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"


def start_coturn(node: Node, secret: str, tmp: Path) -> None:
    config = tmp / "turnserver.conf"
    config.write_text(
        "\n".join(
            [
                f"listening-ip={node.ip}",
                f"relay-ip={node.ip}",
                "listening-port=3478",
                "min-port=49152",
                "max-port=65535",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=relaycast.test",
                "fingerprint",
                "no-tls",
                "no-dtls",
                "no-cli",
                "no-multicast-peers",
                f"pidfile={tmp / 'turnserver.pid'}",
                "log-file=stdout",
                "simple-log",
                "verbose",
                "",
            ]
        )
    )
    proc = node.spawn([TURNSERVER, "-c", str(config)], log=tmp / "coturn.log")
    deadline = time.monotonic() + 10
    while ":3478" not in node.run("ss", "-lun"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"coturn did not start:\n{(tmp / 'coturn.log').read_text()}")
        time.sleep(0.1)


def relayed_from_peer(log: Path, timeout: float = 10.0) -> int:
    """The most packets coturn relayed from a peer for one allocation of stream "live"
    (username ``<expiry>:live``: credentials made by relaycast), as logged when it ends."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        counts = [int(n) for n in re.findall(r"username=<\d+:live>, rp=(\d+)", text)]
        if (counts and max(counts) >= 60) or time.monotonic() > deadline:
            return max(counts, default=0)
        time.sleep(0.2)


def peer(node: Node, role: str, base: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.integration.netns_peer", role, "--base", base]
    return node.spawn([*command, "--ip", node.ip, *args], log=log, env=python_env(), cwd=ROOT)


def result(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> dict[str, object]:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the peer did not finish in {timeout:.0f} s:\n{log.read_text()}")
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, log.read_text()
    parsed: dict[str, object] = json.loads(lines[-1])
    return parsed


@pytest.mark.skipif(not Path(TURNSERVER).exists(), reason="coturn (turnserver) is not installed")
def test_a_viewer_without_udp_to_the_server_plays_through_turn(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(16)
    lab: Lab
    with lab_or_skip(tmp_path) as lab:
        server, publisher, turn, viewer = (lab.add(n) for n in ("srv", "pub", "turn", "view"))
        lab.block_udp(viewer, server)
        start_coturn(turn, secret, tmp_path)
        base = server.relaycast(
            "--stream-key",
            "live=test-key",
            "--ice-server",
            f"turn:{turn.ip}:3478",
            "--turn-secret",
            secret,
            "--log-level",
            "debug",
        )
        publishing = peer(publisher, "publish", base, "--seconds", "60", log=tmp_path / "pub.out")
        viewing = peer(viewer, "view", base, "--relay", "--frames", "30", "--seconds", "30",
                       log=tmp_path / "view.out")  # fmt: skip
        got = result(viewing, tmp_path / "view.out", 60)
        logs = "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(tmp_path.glob("*.log")) + sorted(tmp_path.glob("*.out"))
        )
        frames = got["frames"]
        assert isinstance(frames, dict)
        assert frames["video"] >= 30 and frames["audio"] >= 30, logs
        assert got["ice_servers"] == [f"turn:{turn.ip}:3478"]
        assert got["local"] == "relay", logs  # the nominated pair is relayed by coturn
        assert got["remote"] == [server.ip, 8443]
        # coturn checked the REST credentials relaycast made, and relayed to the server
        assert relayed_from_peer(tmp_path / "coturn.log") >= 60, logs  # logged at its end
        # the server heard the viewer from coturn's relay address only
        server_log = (tmp_path / "srv.log").read_text(errors="replace")
        assert f"'{turn.ip}'" in server_log, logs
        assert f"'{viewer.ip}'" not in server_log, logs
        assert publishing.poll() is None  # still streaming: frames came from the live stream
