"""Small networks of Linux network namespaces for tests that need real, separate hosts.

``Lab`` makes a hub namespace holding one bridge and, per node, a namespace whose ``eth0`` is
one end of a veth pair whose other end is on the bridge; every node gets an address in a
private /24 and sees the others directly. Nothing is added to the host's own network: the
addresses, interfaces and nftables tables all live inside the namespaces, which go away (with
their interfaces and tables) when the lab is closed, after the processes started in them are
killed by PID. Names are unique per lab (``rc<pid><random>-<node>``), so labs of parallel test
runs do not meet.

Links can be made worse at runtime: :meth:`Lab.limit` shapes what a node receives with a
``tc tbf`` rate limit on its port of the bridge (the hub's end of its veth, so the server ->
node direction), :meth:`Lab.random_loss` drops a share of the UDP packets toward a node with
nftables (``numgen random``), and :meth:`Lab.udp_rate` measures what a link really carries.

Needs root, ``ip`` (iproute2), ``tc`` for :meth:`Lab.limit` and, for :meth:`Lab.block_udp` and
:meth:`Lab.random_loss`, ``nft``.
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
    port: str = ""  # its veth's end on the hub's bridge (what it receives leaves there)

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

    def relaycast(
        self,
        *args: str,
        port: int = 8080,
        udp_port: int = 8443,
        log_name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Start a relaycast server here on this node's address, candidates that address
        only; returns its base URL once it printed its banner (its log: ``<node>.log``, or
        ``<log_name>.log`` for a second server on the node). ``env`` is added to the
        environment, which otherwise has no RELAYCAST_* variable (:func:`python_env`)."""
        log = self.lab.tmp / f"{log_name or self.name}.log"
        command = [sys.executable, "-m", "relaycast", "serve", "--host", self.ip]
        command += ["--port", str(port), "--udp-port", str(udp_port), "--public-ip", self.ip]
        if "--workers" not in args:  # one process per node unless a test asks for workers
            command += ["--workers", "1"]
        proc = self.spawn(
            [*command, "--no-host-candidates", *args], log=log, env={**python_env(), **(env or {})}
        )
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
        port = f"p{index}"
        node = Node(self, name, f"{self.prefix}-{name}", f"{self.subnet}.{index}", port)
        self._add_namespace(node.netns)
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

    def limit(self, node: Node, kbit: int | None, *, queue_ms: int = 200) -> None:
        """Shape what ``node`` receives to ``kbit`` kbit/s (``tc tbf`` on its port of the
        bridge: packets toward it queue there, up to ``queue_ms`` of them, then drop); None
        lifts the limit. Changeable at any time (``tc qdisc replace``)."""
        hub = ("ip", "netns", "exec", self.hub)
        if kbit is None:
            subprocess.run([*hub, "tc", "qdisc", "del", "dev", node.port, "root"],
                           capture_output=True, timeout=30)  # fmt: skip
            return
        # the bucket: at least two full-size packets, else ~20 ms at the rate
        burst = max(3200, kbit * 1000 // 8 // 50)
        _run(*hub, "tc", "qdisc", "replace", "dev", node.port, "root", "tbf",
             "rate", f"{kbit}kbit", "burst", str(burst), "latency", f"{queue_ms}ms")  # fmt: skip

    def shaped(self, node: Node) -> tuple[int, int]:
        """(bytes sent, packets dropped) by the :meth:`limit` on ``node`` so far ((0, 0)
        without one)."""
        out = _run("ip", "netns", "exec", self.hub, "tc", "-s", "qdisc", "show", "dev", node.port)
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["Sent"] and "dropped" in line:
                dropped = line.split("dropped ")[1].split(",")[0]
                return int(words[1]), int(dropped)
        return 0, 0

    def random_loss(
        self,
        node: Node,
        percent: int,
        *,
        source: Node | None = None,
        sport: int | None = None,
        dport: int | None = None,
    ) -> None:
        """Drop ``percent`` % of the UDP packets ``node`` receives (from ``source``, from its
        port ``sport``, to ``node``'s port ``dport``, each when given), at random
        (``numgen random``), counted (:meth:`loss_dropped`). Rules add up; :meth:`clear_loss`
        removes them all."""
        match = "meta l4proto udp"
        if source is not None:
            match = f"ip saddr {source.ip} {match}"
        if sport is not None:
            match += f" udp sport {sport}"
        if dport is not None:
            match += f" udp dport {dport}"
        table = f"""
        table inet relaycast_loss {{
            chain input {{
                type filter hook input priority -10; policy accept;
                {match} numgen random mod 100 < {percent} counter drop
            }}
        }}
        """
        node.run("nft", "-f", "-", stdin=table)

    def loss_dropped(self, node: Node) -> int:
        """Packets the :meth:`random_loss` rules in ``node`` dropped so far."""
        out = node.run("nft", "list", "table", "inet", "relaycast_loss")
        return sum(
            int(line.split("counter packets ")[1].split()[0])
            for line in out.splitlines()
            if "counter packets " in line
        )

    def clear_loss(self, node: Node) -> None:
        subprocess.run(node.exec_args("nft", "delete", "table", "inet", "relaycast_loss"),
                       capture_output=True, timeout=30)  # fmt: skip

    def udp_rate(self, src: Node, dst: Node, kbit: int, seconds: float = 1.5) -> float:
        """Send UDP from ``src`` to ``dst`` at ``kbit`` kbit/s for ``seconds``; the rate (kbit/s)
        ``dst`` received it at, over the time it arrived in."""
        receive = (
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],9))\n"
            "s.settimeout(float(sys.argv[2]));print('ready',flush=True);n=0;t0=t1=None\n"
            "while True:\n"
            " try: d=s.recv(2048)\n"
            " except socket.timeout: break\n"
            " t1=time.monotonic();t0=t0 or t1;n+=len(d)\n"
            "print(n,(t1 or 0)-(t0 or 0))\n"
        )
        send = (
            "import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);p=b'x'*1200\n"
            "gap=1200*8/(float(sys.argv[2])*1000);end=time.monotonic()+float(sys.argv[3])\n"
            "t=time.monotonic()\n"
            "while t<end:\n"
            " s.sendto(p,(sys.argv[1],9));t+=gap;time.sleep(max(t-time.monotonic(),0))\n"
        )
        receiver = subprocess.Popen(
            dst.exec_args(sys.executable, "-c", receive, dst.ip, "1.0"),
            stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None
            receiver.stdout.readline()  # ready
            src.run(sys.executable, "-c", send, dst.ip, str(kbit), str(seconds))
            out, _ = receiver.communicate(timeout=30)
        finally:
            if receiver.poll() is None:
                os.killpg(receiver.pid, signal.SIGKILL)
                receiver.wait(10)
        received, span = out.split()
        # 28 bytes of IP and UDP header per 1200-byte datagram go over the link too
        return int(received) * 1228 / 1200 * 8 / 1000 / max(float(span), 0.001)

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
