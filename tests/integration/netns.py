"""Small networks of Linux network namespaces for tests that need real, separate hosts.

``Lab`` makes a hub namespace holding one bridge and, per node, a namespace whose ``eth0`` is
one end of a veth pair whose other end is on the bridge; every node gets an address in a
private /24 and sees the others directly. Nothing is added to the host's own network: the
addresses, interfaces and nftables tables all live inside the namespaces, which go away (with
their interfaces and tables) when the lab is closed, after the processes started in them are
killed by PID. Names are unique per lab (``rc<pid><random>-<node>``), so labs of parallel test
runs do not meet.

Needs root, ``ip`` (iproute2) and, for :meth:`Lab.block_udp`, ``nft``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["ROOT", "Lab", "Node", "lab_or_skip", "python_env"]

ROOT = Path(__file__).resolve().parents[2]


def python_env() -> dict[str, str]:
    """The environment for this checkout's Python programs (the server, the peer driver) run
    in a namespace: the tree on the path, no RELAYCAST_* setting but the fan-out path's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELAYCAST_") or k == "RELAYCAST_NATIVE"
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed"
    return None


@dataclass
class Node:
    """One host of the lab: a namespace with one address on the lab's bridge."""

    lab: Lab
    name: str  # short name inside the lab
    netns: str  # the namespace's name
    ip: str

    def exec_args(self, *args: str) -> list[str]:
        """A command line that runs ``args`` inside this node's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        return _run(*self.exec_args(*args), stdin=stdin)

    def spawn(
        self,
        args: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in this namespace, stdout and stderr to ``log``; the lab kills it."""
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                self.exec_args(*args),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.lab.processes.append(proc)
        return proc

    def relaycast(self, *args: str, port: int = 8080, udp_port: int = 8443) -> str:
        """Start a relaycast server here on this node's address, candidates that address
        only; returns its base URL once it printed its banner (its log: ``<node>.log``)."""
        log = self.lab.tmp / f"{self.name}.log"
        command = [sys.executable, "-m", "relaycast", "serve", "--host", self.ip]
        command += ["--port", str(port), "--udp-port", str(udp_port), "--public-ip", self.ip]
        if "--workers" not in args:  # one process per node unless a test asks for workers
            command += ["--workers", "1"]
        proc = self.spawn([*command, "--no-host-candidates", *args], log=log, env=python_env())
        deadline = time.monotonic() + 20
        while "relaycast listening" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"relaycast did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        return f"http://{self.ip}:{port}"

    def wrapper(self, program: str) -> Path:
        """An executable script that runs ``program`` (with its arguments) in this namespace:
        for tools that take a path to a binary, such as Playwright's ``executable_path``."""
        path = self.lab.tmp / f"{self.name}-{Path(program).name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.netns} {program} "$@"\n')
        path.chmod(0o755)
        return path


@dataclass
class Lab:
    """Namespaces on one bridge; use as a context manager (closing always cleans up)."""

    tmp: Path
    prefix: str = field(default_factory=lambda: f"rc{os.getpid() % 100000}{secrets.token_hex(2)}")
    subnet: str = field(
        default_factory=lambda: f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
    )
    nodes: dict[str, Node] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def __enter__(self) -> Lab:
        try:
            self._add_namespace(self.hub)
            _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def add(self, name: str) -> Node:
        """A new host on the bridge, with the next free address."""
        index = len(self.nodes) + 2
        node = Node(self, name, f"{self.prefix}-{name}", f"{self.subnet}.{index}")
        self._add_namespace(node.netns)
        port = f"p{index}"
        _run("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", node.netns)  # fmt: skip
        _run("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
        node.run("ip", "addr", "add", f"{node.ip}/24", "dev", "eth0")
        node.run("ip", "link", "set", "eth0", "up")
        self.nodes[name] = node
        return node

    def block_udp(self, node: Node, other: Node) -> None:
        """Drop every UDP packet between ``node`` and ``other`` (both ways), in ``node``'s
        namespace, counting what it drops (:meth:`udp_dropped`)."""
        table = f"""
        table inet relaycast_test {{
            chain output {{
                type filter hook output priority 0; policy accept;
                ip daddr {other.ip} meta l4proto udp counter drop
            }}
            chain input {{
                type filter hook input priority 0; policy accept;
                ip saddr {other.ip} meta l4proto udp counter drop
            }}
        }}
        """
        node.run("nft", "-f", "-", stdin=table)

    def udp_dropped(self, node: Node) -> int:
        """Packets the :meth:`block_udp` rules in ``node`` dropped so far."""
        out = node.run("nft", "list", "table", "inet", "relaycast_test")
        return sum(
            int(line.split("counter packets ")[1].split()[0])
            for line in out.splitlines()
            if "counter packets " in line
        )

    def close(self) -> None:
        """Kill what runs in the lab, then delete its namespaces (idempotent)."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.processes.clear()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self._namespaces.clear()


@contextlib.contextmanager
def lab_or_skip(tmp: Path) -> Iterator[Lab]:
    """A :class:`Lab`, or the test skipped (outside CI) when this machine cannot make one."""
    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with Lab(tmp) as lab:
        yield lab
