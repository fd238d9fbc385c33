"""A bounded run of the datagram fuzzer (bench/fuzz_udp.py, atheris) in CI.

The harness runs a MediaServer in-process with a publisher and a viewer connected over real
loopback sockets and a viewer still waiting for DTLS, and feeds fuzzed datagrams to the UDP
entry point from validated and unvalidated addresses. Here: 40,000 inputs with a fixed seed.
It must find no crash (no exception out of the entry point, from a callback it scheduled, or
logged with a traceback), the live stream must still reach the viewer afterwards, no input may
re-route a client's address to another session, and no datagram that is not a freshly signed
nominating check (replays, tampering, garbage) may move a session's media elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.conftest import ROOT, SRC

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

RUNS = 40_000


def test_fuzz_datagram_entry_point(tmp_path) -> None:
    stats = tmp_path / "stats.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fuzz_udp.py"),
            f"-runs={RUNS}",
            "-seed=20240601",
            f"--stats-json={stats}",
            f"--crash-dir={tmp_path / 'crashes'}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert stats.exists(), f"the fuzzer did not finish (exit {proc.returncode}):\n{tail}"
    result = json.loads(stats.read_text())
    print({k: v for k, v in result.items() if not k.endswith("examples") and k != "downtracks"})
    assert result["inputs"] == RUNS, result["inputs"]
    assert result["crashes"] == 0, json.dumps(result["unique_crashes"], indent=1)
    assert result["alive"], f"the live sessions stopped working after the run: {result}"
    assert result["takeovers"] == 0, (
        f"{result['takeovers']} inputs made the mux route a connected client's address to "
        f"another session, e.g. {result['takeover_examples'][:2]}"
    )
    unauthenticated = {k: v for k, v in result["redirects_by_mode"].items() if k != "signed-stun"}
    assert not unauthenticated, (
        f"replayed, tampered or garbage datagrams moved a session's media: {unauthenticated}, "
        f"e.g. {result['redirect_examples'][:2]}"
    )
    assert proc.returncode == 0, tail
