"""The supervisor of ``relaycast serve --workers N``: forks the workers, restarts one that
dies, stops them all on SIGTERM/SIGINT, passes SIGHUP (certificate reload) on.

It holds no socket of the shared ports (it would take a share of the connections and
datagrams): it checks that the HTTP port, the media UDP port (and its TCP number for ICE-TCP)
are free, fixes the numbers the kernel chose when 0 was asked, makes the TLS context once
(every worker serves the same certificate), a private run directory and a random secret for
the workers' internal requests, then forks. A worker that dies is forked again after a
back-off (0.2 s, doubling to 10 s while it keeps dying within 30 s of its start); one that
fails before it ever served stops the whole server (a port taken, a bad certificate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relaycast.config import Config, ConfigError
from relaycast.http.tls import ServerTls, server_tls
from relaycast.workers.plan import WorkerPlan

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0  # a worker that ran this long starts over with the first back-off


@dataclasses.dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    pipe: int = -1
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    info: dict[str, Any] | None = None


def _free_port(host: str, port: int, kind: int) -> int:
    """Bind ``host:port`` once without SO_REUSEPORT (so a port someone else holds fails as
    for one process); the number, the kernel's when ``port`` is 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_host = host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((bind_host, port))
        return int(probe.getsockname()[1])


def _http_bind_host(config: Config) -> str:
    host = config.host.strip().strip("[]")
    if host in ("", "0.0.0.0", "::"):
        return host
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except OSError:
        return host


class Supervisor:
    def __init__(self, config: Config, ready: Callable[[Any], None] | None) -> None:
        self.count = config.worker_count
        self.ready_callback = ready
        self.config = config
        self.workers = [_Worker(i) for i in range(self.count)]
        self.stopping = False
        self.announced = False
        self.tls: ServerTls | None = None
        self.run_dir = Path(tempfile.mkdtemp(prefix="relaycast-workers-"))
        self.secret = secrets.token_urlsafe(32)

    # -- start ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Ports checked and fixed, TLS context made (ConfigError/OSError as for one process)."""
        config = self.config
        port = _free_port(_http_bind_host(config), config.port, socket.SOCK_STREAM)
        udp_port = _free_port(config.media_bind_host(), config.udp_port, socket.SOCK_DGRAM)
        self.config = dataclasses.replace(config, port=port, udp_port=udp_port)
        self.tls = server_tls(self.config)

    def plan(self, index: int) -> WorkerPlan:
        return WorkerPlan(index, self.count, self.run_dir, self.secret)

    def spawn(self, worker: _Worker) -> None:
        from relaycast.workers.worker import worker_main

        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read_fd)
                for other in self.workers:
                    if other.pipe >= 0:
                        os.close(other.pipe)
                code = worker_main(self.config, self.plan(worker.index), self.tls, write_fd)
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker.pid, worker.pipe, worker.started = pid, read_fd, time.monotonic()
        worker.ready, worker.restart_at = False, None
        log.info("worker %d started (pid %d)", worker.index, pid)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        for worker in self.workers:
            self.spawn(worker)
        deadline = time.monotonic() + START_TIMEOUT
        code = 0
        while not self.stopping:
            self._read_pipes(0.1)
            if not self.announced:
                if all(w.ready for w in self.workers):
                    self._announce()
                elif time.monotonic() > deadline:
                    log.error("the workers did not all start within %.0f s", START_TIMEOUT)
                    code = 1
                    break
            failed = self._reap()
            if failed:
                code = 1
                break
            self._restart_due()
        self._stop_all()
        return code

    def _read_pipes(self, timeout: float) -> None:
        pipes = {w.pipe: w for w in self.workers if w.pipe >= 0}
        if not pipes:
            time.sleep(timeout)
            return
        try:
            readable, _, _ = select.select(list(pipes), [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            worker = pipes[fd]
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                os.close(fd)
                worker.pipe = -1
                continue
            for line in data.decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    worker.info = json.loads(line)
                    worker.ready = worker.ever_ready = True

    def _announce(self) -> None:
        self.announced = True
        info = self.workers[0].info or {}
        log.info("%d workers serving (pids %s)", self.count, [w.pid for w in self.workers])
        if self.ready_callback is not None:
            from relaycast.app import ServerInfo

            self.ready_callback(ServerInfo(**info))

    def _reap(self) -> bool:
        """Collect dead workers and schedule their restart; True when the server must stop
        (a worker that never started)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return False
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            worker.pid = 0
            worker.ready = False
            if self.stopping:
                continue
            if not worker.ever_ready:
                log.error("worker %d exited with %d before serving", worker.index, code)
                return True
            now = time.monotonic()
            if now - worker.started > STABLE_AFTER:
                worker.backoff = FIRST_BACKOFF
            log.warning(
                "worker %d (pid %d) exited with %d; restarting in %.1f s",
                worker.index,
                pid,
                code,
                worker.backoff,
            )
            worker.restart_at = now + worker.backoff
            worker.backoff = min(worker.backoff * 2, MAX_BACKOFF)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.pid == 0 and worker.restart_at is not None and now >= worker.restart_at:
                if worker.pipe >= 0:
                    os.close(worker.pipe)
                    worker.pipe = -1
                self.spawn(worker)

    # -- stop -----------------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def forward_hup(self, signum: int, frame: object) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGHUP)

    def _stop_all(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(w.pid for w in self.workers) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for worker in self.workers:
            if worker.pid:
                log.warning("worker %d did not stop in time: killing it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
                worker.pid = 0
            if worker.pipe >= 0:
                os.close(worker.pipe)
                worker.pipe = -1
        shutil.rmtree(self.run_dir, ignore_errors=True)


def supervise(config: Config, ready: Callable[[Any], None] | None = None) -> int:
    """Run ``config.worker_count`` workers until SIGTERM/SIGINT; the exit code."""
    supervisor = Supervisor(config, ready)
    try:
        supervisor.prepare()
    except ConfigError as exc:
        shutil.rmtree(supervisor.run_dir, ignore_errors=True)
        print(f"relaycast: error: {exc}", flush=True, file=__import__("sys").stderr)
        return 2
    except OSError as exc:
        shutil.rmtree(supervisor.run_dir, ignore_errors=True)
        print(f"relaycast: error: {exc}", flush=True, file=__import__("sys").stderr)
        return 1
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.forward_hup)
    return supervisor.run()
