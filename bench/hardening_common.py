"""Shared pieces of the hardening benches (soak.py, garbage_flood.py): start a relaycast server
(or use a running one), read its counters, run the load generator's publisher in a process."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from relaycast.loadgen.media_clip import load_clip  # noqa: E402
from relaycast.loadgen.publisher import PublisherConfig, publisher_process  # noqa: E402
from relaycast.loadgen.runner import LOAD_TEST_LIMITS  # noqa: E402


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m relaycast serve`` on free ports (or a running one: ``Server.running``)."""

    def __init__(self, extra: list[str] | None = None, cpus: set[int] | None = None) -> None:
        self.key = secrets.token_urlsafe(12)
        self.port, self.udp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
        self.http = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
        args = [
            sys.executable, "-m", "relaycast", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--udp-port", str(self.udp_port),
            "--public-ip", "127.0.0.1", "--no-host-candidates",
            "--stream-key", f"live={self.key}", *LOAD_TEST_LIMITS, *(extra or []),
        ]  # fmt: skip
        env = {  # settings come from the arguments; the fan-out path under test passes
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RELAYCAST_") or k == "RELAYCAST_NATIVE"
        }
        env["PYTHONPATH"] = str(SRC)
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            args, stdout=self._log, stderr=self._log, env=env, cwd=ROOT
        )
        self.pid = self.proc.pid
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.pid, cpus)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(self.http + "/api/server", timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"relaycast did not start:\n{self.output()}") from None
                time.sleep(0.1)

    @classmethod
    def running(cls, http: str, udp_port: int, pid: int, key: str) -> Server:
        self = cls.__new__(cls)
        self.http, self.udp_port, self.pid, self.key, self.proc = http, udp_port, pid, key, None
        return self

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def get_json(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def metrics(http: str) -> dict[str, float]:
    """Unlabelled and labelled samples of ``/metrics`` (``name{labels}`` -> value)."""
    with urllib.request.urlopen(http + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)", line)
        if m and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out[m.group(1)] = float(m.group(2))
    return out


def drop_counters(http: str) -> dict[str, float]:
    """Every counter that says the server threw something away or refused it."""
    return {
        k: v
        for k, v in metrics(http).items()
        if any(w in k for w in ("dropped", "rejected", "garbage", "discard"))
        and not k.endswith("_created")
    }


def rss(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


class Publisher:
    """The load generator's synthetic publisher (a real VP8 clip) in its own process."""

    def __init__(self, http: str, key: str, **clip: Any) -> None:
        self.clip_args = {
            "codec": "vp8",
            "bitrate": 1_000_000,
            "width": 640,
            "height": 360,
            "fps": 30,
            "keyframe_interval": 1.0,
            "duration": 10.0,
            **clip,
        }
        load_clip(**self.clip_args)  # encode (once, cached) before the child needs it
        self._tmp = tempfile.TemporaryDirectory(prefix="relaycast-hardening-")
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        cfg = PublisherConfig(http, "live", key, self.clip_args, f"{self._tmp.name}/send.npz")
        self._proc = ctx.Process(target=publisher_process, args=(cfg, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the publisher did not start")
        status, info = self._conn.recv()
        if status != "ready":
            raise RuntimeError(str(info))

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send("stop")
            self._conn.poll(20)
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._tmp.cleanup()
