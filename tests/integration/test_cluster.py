"""The cluster (``--cluster``) with nodes as separate hosts: network namespaces on one bridge
(``tests/integration/netns.py``), a real ``redis-server`` in a namespace of its own, every
relaycast node a ``relaycast serve`` process in its namespace.

One scenario, in order (each step starts from the state the previous one left):

1. publish on node A (aiortc), watch through B (two aiortc viewers) and C (Chromium's watch
   page): frames decoded; A serves one session per edge, not per viewer;
2. an outsider claiming to be a node is refused by A (401 without a proof, 403 with a wrong
   secret), and a node with the wrong secret cannot find the origin (signed registry);
3. the publisher reconnects on B: B becomes the origin, C switches its pull, and the viewers on
   B and C keep decoding without reloading;
4. node B (the origin now) is killed: C reports the stream offline and retries; a publisher on
   A brings it back to C's same viewer;
5. Redis is killed: the running stream goes on, a new cross-node pull gets a 503 problem; Redis
   restarted: the same request works and its viewer decodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright
from tests.chromium import ARGS, CHROMIUM
from tests.integration.netns import ROOT, Lab, Node, lab_or_skip, python_env
from tests.integration.test_ice_tcp import PATH_JS

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
SECRET = "cluster-secret-for-tests-0123456789"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
    pytest.mark.skipif(not Path(REDIS).exists(), reason="redis-server is not installed"),
    pytest.mark.timeout(420),
]


def serve_extra() -> list[str]:
    """``--workers 1`` when this tree's relaycast has workers (the cluster runs per process)."""
    out = subprocess.run(
        [sys.executable, "-m", "relaycast", "serve", "--help"],
        capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=30,
    ).stdout  # fmt: skip
    return ["--workers", "1"] if "--workers" in out else []


class Cluster:
    """The lab's Redis and nodes, and helpers to look at them from inside the lab."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.redis_node = lab.add("redis")
        self.client = lab.add("client")  # aiortc viewers and raw HTTP requests
        self.redis: subprocess.Popen[bytes] | None = None
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.extra = serve_extra()

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_node.ip}:6379/0"

    def start_redis(self) -> None:
        data = self.tmp / "redis"
        data.mkdir(exist_ok=True)
        self.redis = self.redis_node.spawn(
            [REDIS, "--port", "6379", "--bind", self.redis_node.ip, "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", str(data)],
            log=self.tmp / "redis.log",
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "Ready to accept connections" not in (self.tmp / "redis.log").read_text():
            assert time.monotonic() < deadline, (self.tmp / "redis.log").read_text()
            time.sleep(0.1)

    def kill_redis(self) -> None:
        assert self.redis is not None
        os.killpg(self.redis.pid, signal.SIGKILL)
        self.redis.wait(10)

    def start_node(self, node: Node, secret: str = SECRET) -> str:
        base = node.relaycast(
            "--stream-key", "live=test-key", "--cluster", self.redis_url,
            "--node-url", f"http://{node.ip}:8080", "--cluster-secret", secret, *self.extra,
        )  # fmt: skip
        self.servers[node.name] = self.lab.processes[-1]
        return base

    def kill_node(self, node: Node) -> None:
        proc = self.servers.pop(node.name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def http(self, method: str, url: str, *args: str) -> dict[str, Any]:
        out = self.client.run(
            sys.executable, "-m", "tests.integration.test_cluster_peer", "http", method, url,
            *args,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def get(self, url: str) -> Any:
        answer = self.http("GET", url)
        assert answer["status"] == 200, answer
        return json.loads(answer["body"])

    def publish(self, base: str, seconds: float = 400) -> subprocess.Popen[bytes]:
        node = self.lab.nodes.get("pub") or self.lab.add("pub")
        command = [sys.executable, "-m", "tests.integration.netns_peer", "publish"]
        command += ["--base", base, "--ip", node.ip, "--seconds", str(seconds)]
        return node.spawn(
            command, log=self.tmp / f"pub-{time.monotonic():.0f}.out", env=python_env(), cwd=ROOT
        )

    def watch(self, base: str, name: str) -> Path:
        out = self.tmp / f"{name}.out"
        command = [sys.executable, "-m", "tests.integration.test_cluster_peer", "watch"]
        command += ["--base", base, "--ip", self.client.ip, "--seconds", "400"]
        self.client.spawn(command, log=out, env=python_env(), cwd=ROOT)
        return out

    def logs(self) -> str:
        parts = []
        for path in sorted(self.tmp.glob("*.log")) + sorted(self.tmp.glob("*.out")):
            parts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts)


def frames(out: Path) -> int:
    """The video frames an aiortc ``watch`` viewer has decoded so far."""
    lines = [line for line in out.read_text().splitlines() if line.startswith("{")]
    if not lines:
        return 0
    last = json.loads(lines[-1])
    assert "error" not in last, last
    return int(last["video"])


async def until(
    what: str, check: Callable[[], Any], timeout: float, logs: Callable[[], str]
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs()}")
        await asyncio.sleep(0.5)


async def page_frames(page: Page) -> int:
    sample = await page.evaluate(PATH_JS)
    return int(sample["frames"]) if sample else 0


async def test_cluster_publish_watch_reconnect_failures(tmp_path: Path) -> None:
    with lab_or_skip(tmp_path) as lab:
        cluster = Cluster(lab, tmp_path)
        a, b, c = lab.add("a"), lab.add("b"), lab.add("c")
        browser_node = lab.add("browser")
        cluster.start_redis()
        base_a, base_b, base_c = (cluster.start_node(n) for n in (a, b, c))
        logs = cluster.logs

        # 1. publish on A, watch through B (aiortc x2) and C (Chromium)
        publisher = cluster.publish(base_a)
        await until("A is live", lambda: cluster.get(f"{base_a}/api/streams")
                    and cluster.get(f"{base_a}/api/streams")[0]["live"], 30, logs)  # fmt: skip
        on_b = cluster.watch(base_b, "viewer-b1")
        on_b2 = cluster.watch(base_b, "viewer-b2")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(browser_node.wrapper(str(CHROMIUM))), headless=True, args=ARGS
            )
            try:
                page = await (await browser.new_context()).new_page()
                await page.goto(f"{base_c}/watch/live")
                await page.evaluate("() => { window.__sameDocument = true; }")
                await until(
                    "B's viewers decode",
                    lambda: frames(on_b) >= 30 and frames(on_b2) >= 30,
                    45,
                    logs,
                )
                deadline = time.monotonic() + 45
                while await page_frames(page) < 30:
                    assert time.monotonic() < deadline, f"Chromium on C decodes nothing\n{logs()}"
                    await asyncio.sleep(0.5)
                # A serves one session per edge node, whatever the viewers behind it
                origin = cluster.get(f"{base_a}/api/streams/live")
                assert origin["viewers"] == 2, origin
                state_b = cluster.get(f"{base_b}/api/cluster")
                assert [p["source"] for p in state_b["pulls"]] == [base_a], state_b
                assert cluster.get(f"{base_b}/api/streams/live")["viewers"] == 2
                nodes = {n["url"]: n for n in cluster.get(f"{base_c}/api/cluster")["nodes"]}
                assert set(nodes) == {base_a, base_b, base_c}, nodes
                assert nodes[base_a]["streams"] == ["live"], nodes
                # the dashboard shows the cluster
                dashboard = await (await browser.new_context()).new_page()
                await dashboard.goto(f"{base_a}/")
                await dashboard.wait_for_function(
                    "() => document.querySelectorAll('#cluster-nodes tr').length === 3"
                )
                assert await dashboard.is_visible("#cluster")
                await dashboard.close()

                # 2. outsiders: a claim without proof, a wrong secret, a node with a wrong secret
                whep_a = f"{base_a}/whep/live"
                unproven = cluster.http(
                    "POST", whep_a, "--offer", "--header", f"Relaycast-Node:{base_b}"
                )
                assert unproven["status"] == 401, unproven
                assert unproven["headers"]["Content-Type"].startswith("application/problem+json")
                forged = cluster.http("POST", whep_a, "--offer", "--sign", "not-the-cluster-secret")
                assert forged["status"] == 403, forged
                assert "secret" in json.loads(forged["body"])["detail"]
                signed = cluster.http("POST", whep_a, "--offer", "--sign", SECRET, "--node", base_b)
                assert signed["status"] == 201, signed  # the same request with the secret
                cluster.http("DELETE", base_a + signed["headers"]["Location"])
                d = lab.add("d")
                base_d = cluster.start_node(d, secret="a-wrong-cluster-secret-0000")
                outsider = cluster.watch(base_d, "viewer-d")
                await asyncio.sleep(6)
                assert frames(outsider) == 0, logs()
                assert cluster.get(f"{base_d}/api/cluster")["pulls"] == []
                assert "bad signature" in (tmp_path / "d.log").read_text(), logs()
                cluster.kill_node(d)

                # 3. the publisher reconnects on B
                os.killpg(publisher.pid, signal.SIGKILL)
                publisher.wait(10)
                before_b, before_c = frames(on_b), await page_frames(page)
                publisher = cluster.publish(base_b)
                await until("B is the origin", lambda: any(
                    p["source"] == base_b for p in cluster.get(f"{base_c}/api/cluster")["pulls"]
                ), 30, logs)  # fmt: skip
                await until("B's viewer decodes the new publisher",
                            lambda: frames(on_b) >= before_b + 60, 45, logs)  # fmt: skip
                deadline = time.monotonic() + 45
                while await page_frames(page) < before_c + 60:
                    assert time.monotonic() < deadline, f"C's viewer froze\n{logs()}"
                    await asyncio.sleep(0.5)
                assert await page.evaluate("() => window.__sameDocument === true")

                # 4. the origin (B) dies: C reports the stream offline and retries
                cluster.kill_node(b)
                await until("C reports the stream offline",
                            lambda: not cluster.get(f"{base_c}/api/streams/live")["live"],
                            30, logs)  # fmt: skip
                attempts = cluster.get(f"{base_c}/api/cluster")["pull_attempts"]
                os.killpg(publisher.pid, signal.SIGKILL)
                publisher.wait(10)
                publisher = cluster.publish(base_a)
                stalled_at = await page_frames(page)
                deadline = time.monotonic() + 60
                while await page_frames(page) < stalled_at + 30:
                    assert time.monotonic() < deadline, f"C's viewer did not come back\n{logs()}"
                    await asyncio.sleep(0.5)
                assert cluster.get(f"{base_c}/api/cluster")["pull_attempts"] > attempts
                assert await page.evaluate("() => window.__sameDocument === true")

                # 5. Redis goes away: running streams run, new cross-node pulls get 503
                base_b = cluster.start_node(b)
                cluster.kill_redis()
                running = await page_frames(page)
                await asyncio.sleep(5)
                assert await page_frames(page) >= running + 60, logs()
                refused = cluster.http("POST", f"{base_b}/whep/live", "--offer")
                assert refused["status"] == 503, refused
                problem = json.loads(refused["body"])
                assert refused["headers"]["Content-Type"].startswith("application/problem+json")
                assert "Redis" in problem["detail"] and refused["headers"].get("Retry-After")
                cluster.start_redis()
                await until("B sees the registry again",
                            lambda: cluster.get(f"{base_b}/api/cluster")["registry"] == "ok",
                            20, logs)  # fmt: skip
                await asyncio.sleep(2)  # A's next heartbeat names it the origin again
                after = cluster.watch(base_b, "viewer-b3")
                await until("a viewer of B decodes after Redis came back",
                            lambda: frames(after) >= 30, 45, logs)  # fmt: skip
            finally:
                await browser.close()
