"""Shared fixtures: real relaycast servers started as subprocesses.

``relaycast_server`` is one server with keys ``live=test-key`` and ``other=other-key``,
candidates pinned to 127.0.0.1.  ``server_factory.start(*extra_args, keys=...)`` starts more
(or differently configured) servers; every server is stopped with SIGTERM at teardown and
must exit cleanly (0, or -15 when it died of the signal), else the test errors with its stderr.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import settings

# CI replays the same examples on every run (a red CI lands nothing, so a new random find must
# come from a developer's run, where it is reported with its seed); no per-example deadline
# there either, since a shared machine can stall any single example.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Test the tree, not whatever copy of relaycast happens to be installed.
for _p in (str(SRC), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

DEFAULT_KEYS: Mapping[str, str] = {"live": "test-key", "other": "other-key"}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLEAN_EXIT = (0, -signal.SIGTERM)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RelaycastServer:
    """A running ``python -m relaycast serve`` subprocess."""

    http: str
    port: int
    udp_port: int
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]
    args: list[str]
    log_dir: Path
    stopped: bool = field(default=False)

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, wait up to 10 s, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.stopped = True
        assert self.proc.returncode is not None
        return self.proc.returncode


class ServerFactory:
    """Starts relaycast servers on free ports and stops them all at teardown."""

    def __init__(self) -> None:
        self.servers: list[RelaycastServer] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="relaycast-test-")

    def start(
        self,
        *extra_args: str,
        keys: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> RelaycastServer:
        """Start a server; *extra_args* are appended to the ``serve`` command line."""
        keys = dict(DEFAULT_KEYS if keys is None else keys)
        port, udp_port = free_tcp_port(), free_udp_port()
        args = [
            sys.executable,
            "-m",
            "relaycast",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--udp-port",
            str(udp_port),
            "--public-ip",
            "127.0.0.1",
            "--no-host-candidates",
        ]
        for name, secret in keys.items():
            args += ["--stream-key", f"{name}={secret}"]
        if "--workers" not in extra_args:  # one process unless a test asks for workers
            args += ["--workers", "1"]
        args += list(extra_args)

        # settings come from the arguments only; RELAYCAST_NATIVE (which fan-out path) passes
        child_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("RELAYCAST_") or k == "RELAYCAST_NATIVE"
        }
        child_env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        child_env["PYTHONUNBUFFERED"] = "1"
        if env:
            child_env.update(env)

        log_dir = Path(self._tmp.name) / f"server-{len(self.servers)}"
        log_dir.mkdir()
        with (
            open(log_dir / "stdout.txt", "wb") as out,
            open(log_dir / "stderr.txt", "wb") as err,
        ):
            proc = subprocess.Popen(args, stdout=out, stderr=err, env=child_env, cwd=ROOT)
        server = RelaycastServer(
            http=f"http://127.0.0.1:{port}",
            port=port,
            udp_port=udp_port,
            keys=keys,
            proc=proc,
            args=args,
            log_dir=log_dir,
        )
        self.servers.append(server)
        _wait_until_up(server, timeout)
        return server

    def close(self) -> list[str]:
        """Stop every server; returns a description of each unclean exit."""
        problems: list[str] = []
        for server in self.servers:
            if server.stopped:
                continue
            code = server.stop()
            if code not in CLEAN_EXIT:
                problems.append(
                    f"relaycast ({' '.join(server.args[2:])}) exited with {code}\n"
                    f"--- stderr ---\n{server.stderr()}"
                )
        self._tmp.cleanup()
        return problems


def _wait_until_up(server: RelaycastServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        code = server.proc.poll()
        if code is not None:
            pytest.fail(
                f"relaycast exited with {code} before answering HTTP\n"
                f"--- stdout ---\n{server.stdout()}\n--- stderr ---\n{server.stderr()}"
            )
        try:
            with urllib.request.urlopen(server.http + "/", timeout=1.0) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last_error = f"HTTP {exc.code}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    server.stop()
    pytest.fail(
        f"relaycast did not answer GET / within {timeout:.0f} s ({last_error})\n"
        f"--- stderr ---\n{server.stderr()}"
    )


def _finish(factory: ServerFactory) -> None:
    problems = factory.close()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """Start extra or differently configured servers: ``server_factory.start("--log-level",
    "debug", keys={"a": "b"})``."""
    factory = ServerFactory()
    yield factory
    _finish(factory)


@pytest.fixture(scope="module")
def module_server_factory() -> Iterator[ServerFactory]:
    """Like ``server_factory``, shared by the tests of one module."""
    factory = ServerFactory()
    yield factory
    _finish(factory)


@pytest.fixture
def relaycast_server(server_factory: ServerFactory) -> RelaycastServer:
    """A fresh server: keys live=test-key, other=other-key, candidates 127.0.0.1 only."""
    return server_factory.start()


def pytest_collection_modifyitems(config: pytest.Config, items: Sequence[pytest.Item]) -> None:
    """Outside CI, skip browser tests when Chromium is missing instead of failing obscurely
    (CI installs it through scripts/test.sh and must run them)."""
    if Path("/usr/bin/chromium").exists() or os.environ.get("CI"):
        return
    skip = pytest.mark.skip(reason="/usr/bin/chromium is not installed")
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(skip)
