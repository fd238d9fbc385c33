"""Orchestrates a benchmark run: the server under test (started here, pinned to its own core, or
a running one by URL, or the aiortc baseline), one publisher process, a few viewer worker
processes pinned to the load core(s), measurement windows (one, or one per ramp step), then the
join of send and arrival logs (:mod:`analysis`). After a ramp against a relaycast it started, the
raw limit probe (:mod:`probe`) runs on the server's core for comparison with ``max_viewers``."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from relaycast.loadgen import analysis
from relaycast.loadgen import probe as limit_probe
from relaycast.loadgen.media_clip import load_clip
from relaycast.loadgen.publisher import PublisherConfig, publisher_process
from relaycast.loadgen.viewer import WorkerConfig, worker_process

AIORTC_TARGET = "aiortc-relay"


@dataclass
class BenchOptions:
    viewers: int = 10
    duration: float = 10.0
    bitrate: int = 2_500_000
    codec: str = "vp8"
    ramp: bool = False
    ramp_steps: list[int] = field(default_factory=list)
    target: str | None = None  # None: start relaycast; URL; or "aiortc-relay"
    stream: str = "live"
    key: str = ""
    workers: int = 0  # 0: automatic
    server_cpus: tuple[int, ...] | None = None
    load_cpus: tuple[int, ...] | None = None
    width: int = 1280
    height: int = 720
    fps: int = 30
    keyframe_interval: float = 2.0
    join_rate: float = 50.0
    settle: float = 1.0
    stop_after_failures: int = 2
    server_args: list[str] = field(default_factory=list)
    server_pid: int | None = None
    keep_dir: str | None = None  # copy the raw logs (send/arrivals .npz, server logs) here
    server_nice: int = -5  # the machine is shared: keep other tenants off the server's core
    verbose: bool = True
    probe: bool = True  # after a ramp against our own relaycast: the limit probe on its core


def parse_bitrate(text: str) -> int:
    """``2.5M``, ``800k``, ``2500000`` -> bits per second."""
    t = text.strip().lower().removesuffix("bps").removesuffix("b")
    mult = 1
    if t.endswith("m"):
        mult, t = 1_000_000, t[:-1]
    elif t.endswith("k"):
        mult, t = 1_000, t[:-1]
    value = float(t) * mult
    if value <= 0:
        raise ValueError(f"bitrate must be positive: {text!r}")
    return int(value)


def default_cpus() -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """Server on the first allowed CPU, load on the others (None when there is only one)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return (cpus[0],), tuple(cpus[1:])


def pinner(cpus: tuple[int, ...] | None, nice: int) -> Callable[[], None]:
    """A ``preexec_fn`` that pins the child to ``cpus`` and renices it by ``nice`` (when
    allowed: lowering it needs privileges)."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        if nice:
            with contextlib.suppress(OSError):
                os.nice(nice)

    return pin


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict[str, str]:
    import relaycast

    # the server takes its settings from the command line; RELAYCAST_NATIVE (the fan-out path
    # under test) passes
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELAYCAST_") or k == "RELAYCAST_NATIVE"
    }
    src = str(Path(relaycast.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: A load test's viewers all come from one loopback address, faster than any real audience:
#: lift the per-address admission limits (docs/security.md) for the server under test.
LOAD_TEST_LIMITS = (
    "--max-sessions", "100000",
    "--max-sessions-per-ip", "100000",
    "--max-viewers-per-stream", "100000",
    "--whep-rate", "100000",
    "--whep-burst", "100000",
)  # fmt: skip


class ServerUnderTest:
    """A server subprocess pinned to ``cpus``; ``base_url`` and ``pid`` for the runner."""

    def __init__(self, target: str | None, opts: BenchOptions, log_dir: Path) -> None:
        self.kind = "relaycast" if target is None else "aiortc-relay"
        port = _free_port(socket.SOCK_STREAM)
        self.base_url = f"http://127.0.0.1:{port}"
        if target is None:
            args = [
                sys.executable, "-m", "relaycast", "serve",
                "--host", "127.0.0.1", "--port", str(port),
                "--udp-port", str(_free_port(socket.SOCK_DGRAM)),
                "--public-ip", "127.0.0.1", "--no-host-candidates",
                "--stream-key", f"{opts.stream}={opts.key}",
                "--log-level", "warning",
                *LOAD_TEST_LIMITS,
                *opts.server_args,
            ]  # fmt: skip
        else:
            args = [
                sys.executable, "-m", "relaycast.loadgen.baseline_aiortc",
                "--port", str(port), "--key", opts.key,
            ]  # fmt: skip
        self.args = args
        self.log_dir = log_dir
        self._out = open(log_dir / f"{self.kind}.stdout", "wb")  # noqa: SIM115
        self._err = open(log_dir / f"{self.kind}.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=self._err,
            env=_child_env(),
            preexec_fn=pinner(opts.server_cpus, opts.server_nice),
        )
        self.pid = self.proc.pid
        self._wait_up(30.0)

    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited early:\n{self.stderr()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/", timeout=1.0):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer HTTP within {timeout:.0f} s")

    def stderr(self) -> str:
        return (self.log_dir / f"{self.kind}.stderr").read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()
        self._err.close()
        return self.proc.returncode


def udp_sockets() -> list[tuple[int, int, int]]:
    """(local port, inode, receive-buffer drops) of every UDP socket (``/proc/net/udp``)."""
    out: list[tuple[int, int, int]] = []
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 13:
            continue
        out.append((int(parts[1].split(":")[1], 16), int(parts[9]), int(parts[-1])))
    return out


def _sample_queues(ports: set[int], server_pid: int | None, duration: float) -> tuple[int, int]:
    """Sleep ``duration`` s while sampling receive queues every 0.25 s; returns the largest
    single viewer-socket queue and the largest server-socket queue (bytes) seen."""
    inodes = socket_inodes(server_pid)
    client = server = 0
    end = time.monotonic() + duration
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return client, server
        time.sleep(min(0.25, left))
        try:
            lines = Path("/proc/net/udp").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 13:
                continue
            rx = int(parts[4].split(":")[1], 16)
            if int(parts[9]) in inodes:
                server = max(server, rx)
            elif int(parts[1].split(":")[1], 16) in ports:
                client = max(client, rx)


def socket_inodes(pid: int | None) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    found: set[int] = set()
    if not pid:
        return found
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def drops_snapshot(ports: set[int], server_pid: int | None) -> tuple[int, int]:
    """Receive-buffer drops so far on the viewers' ports and on the server's UDP sockets."""
    inodes = socket_inodes(server_pid)
    client = server = 0
    for port, inode, drops in udp_sockets():
        if inode in inodes:
            server += drops
        elif port in ports:
            client += drops
    return client, server


class _ServerProbe:
    def __init__(self, pid: int | None) -> None:
        self.proc = psutil.Process(pid) if pid else None

    def _processes(self) -> list[psutil.Process]:
        """The server and its worker processes (relaycast serve --workers N)."""
        if self.proc is None:
            return []
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

    def per_process(self) -> dict[int, float]:
        """CPU seconds so far of each of the server's processes, by PID."""
        out: dict[int, float] = {}
        for proc in self._processes():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            out[proc.pid] = float(t.user + t.system)
        return out

    def cpu_seconds(self) -> float | None:
        if self.proc is None:
            return None
        times = self.per_process()
        return sum(times.values()) if times else None

    def rss(self) -> int | None:
        total = 0
        for proc in self._processes():
            try:
                total += int(proc.memory_info().rss)
            except psutil.Error:
                continue
        return total or None


def _load_cpu_seconds(procs: list[Any]) -> float:
    """CPU seconds used so far by the publisher and viewer worker processes."""
    total = 0.0
    for p in procs:
        try:
            t = psutil.Process(p.pid).cpu_times()
            total += t.user + t.system
        except (psutil.Error, ValueError):
            pass
    return total


def load_core_count(opts: BenchOptions) -> int:
    """The cores the load (publisher + viewer workers) may run on."""
    if opts.load_cpus:
        return len(opts.load_cpus)
    return len(os.sched_getaffinity(0)) or 1


def _log(opts: BenchOptions, msg: str) -> None:
    if opts.verbose:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _steps(opts: BenchOptions) -> list[int]:
    if not opts.ramp:
        return [opts.viewers]
    if opts.ramp_steps:
        return sorted(set(opts.ramp_steps))
    n = opts.viewers
    count = min(8, n)
    return sorted({max(1, round(n * (k + 1) / count)) for k in range(count)})


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described by ``opts`` and return the result dictionary."""
    if not opts.key:
        opts.key = secrets.token_urlsafe(12)
    starts_server = opts.target is None or opts.target == AIORTC_TARGET
    if starts_server and opts.server_cpus is None and opts.load_cpus is None:
        opts.server_cpus, opts.load_cpus = default_cpus()
    clip_args = {
        "codec": opts.codec,
        "bitrate": opts.bitrate,
        "width": opts.width,
        "height": opts.height,
        "fps": opts.fps,
        "keyframe_interval": opts.keyframe_interval,
        "duration": 10.0,
    }
    _log(
        opts,
        f"preparing the {opts.codec} clip ({opts.width}x{opts.height}@{opts.fps}, "
        f"{opts.bitrate / 1e6:g} Mbps; cached after the first run)",
    )
    clip = load_clip(**clip_args)  # type: ignore[arg-type]
    steps = _steps(opts)
    tmp = tempfile.TemporaryDirectory(prefix="relaycast-bench-")
    work = Path(tmp.name)
    server: ServerUnderTest | None = None
    server_pid: int | None
    target = opts.target
    if target is None or target == AIORTC_TARGET:
        server = ServerUnderTest(None if target is None else AIORTC_TARGET, opts, work)
        base_url, server_pid, target_name = server.base_url, server.pid, server.kind
        _log(opts, f"started {server.kind} pid {server.pid} on CPUs {opts.server_cpus}")
    else:
        base_url, server_pid, target_name = target.rstrip("/"), opts.server_pid, target
    own_cpus = os.sched_getaffinity(0)
    if opts.load_cpus:
        os.sched_setaffinity(0, set(opts.load_cpus))
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    try:
        result = _run(
            opts, ctx, procs, base_url, server_pid, work, steps, clip_args, clip.video_bitrate
        )
        result["target"] = target_name
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        os.sched_setaffinity(0, own_cpus)
        if server is not None:
            code = server.stop()
            if code not in (0, -signal.SIGTERM):
                _log(opts, f"server exited with {code}: {server.stderr()[-1500:]}")
        if opts.keep_dir:
            import shutil

            shutil.copytree(work, opts.keep_dir, dirs_exist_ok=True)
        tmp.cleanup()
    if opts.ramp and opts.probe and target is None:
        # the server has stopped: its core is the probe's alone
        sizes = [len(p) for frame in clip.video for p in frame.payloads]
        try:
            result.update(run_limit_probe(opts, result, sum(sizes) / len(sizes) if sizes else None))
        except Exception as exc:  # the probe is a reference: never fail the bench for it
            _log(opts, f"limit probe skipped: {exc!r}")
            result["limit_probe_skipped"] = f"limit probe failed: {exc!r}"
    return result


def run_limit_probe(
    opts: BenchOptions, result: dict[str, Any], mean_video_payload: float | None
) -> dict[str, Any]:
    """Compile and run the limit probe pinned to the server's CPUs (with the server's nice) and
    compare: ``limit_probe_us_per_packet_per_viewer``, ``probe_implied_viewers_per_core`` (at
    the publisher's packets per second, audio + video, of the last step) and
    ``max_viewers_vs_probe``, plus ``limit_probe`` (its parameters and runs); or
    ``limit_probe_skipped`` with the reason (no gcc, no libcrypto headers, a failed run)."""
    out: dict[str, Any] = {
        "limit_probe_us_per_packet_per_viewer": None,
        "probe_implied_viewers_per_core": None,
        "max_viewers_vs_probe": None,
    }
    steps = result.get("steps") or [result]
    viewers = limit_probe.bench_probe_viewers(int(steps[-1].get("viewers") or 0))
    packets = limit_probe.bench_probe_packets(viewers)
    payload = limit_probe.bench_probe_payload(mean_video_payload)
    receivers = min(limit_probe.BENCH_RECEIVERS, viewers)
    repeats = limit_probe.BENCH_REPEATS
    with tempfile.TemporaryDirectory(prefix="relaycast-probe-") as directory:
        binary, why = limit_probe.build_probe(Path(directory))
        if binary is None:
            out["limit_probe_skipped"] = f"cannot build {limit_probe.PROBE_SOURCE.name}: {why}"
            _log(opts, f"limit probe skipped: {out['limit_probe_skipped']}")
            return out
        _log(
            opts,
            f"limit probe: {viewers} viewers, {payload}-byte payloads, {repeats} runs of "
            f"{packets} packets on CPUs {opts.server_cpus}",
        )
        try:
            wall, cpu, runs = limit_probe.run_probe(
                binary,
                viewers,
                packets,
                repeats,
                receivers,
                payload,
                preexec_fn=pinner(opts.server_cpus, opts.server_nice),
            )
        except RuntimeError as exc:
            out["limit_probe_skipped"] = str(exc)
            _log(opts, f"limit probe skipped: {exc}")
            return out
    packets_per_s = float(result.get("publisher_packets_per_s") or 0.0)
    implied = limit_probe.implied_viewers_per_core(wall, packets_per_s)
    out["limit_probe_us_per_packet_per_viewer"] = wall
    out["probe_implied_viewers_per_core"] = implied
    out["max_viewers_vs_probe"] = limit_probe.max_viewers_vs_probe(
        result.get("max_viewers"), implied
    )
    out["limit_probe"] = {
        "viewers": viewers,
        "packets": packets,
        "repeats": repeats,
        "receivers": receivers,
        "payload_bytes": payload,
        "cpus": list(opts.server_cpus) if opts.server_cpus else None,
        "nice": opts.server_nice,
        "packets_per_s": packets_per_s,
        "cpu_us_per_packet_per_viewer": cpu,
        "runs_us_per_packet_per_viewer": runs,
    }
    return out


def _run(
    opts: BenchOptions,
    ctx: Any,
    procs: list[Any],
    base_url: str,
    server_pid: int | None,
    work: Path,
    steps: list[int],
    clip_args: dict[str, Any],
    video_bitrate: float,
) -> dict[str, Any]:
    probe = _ServerProbe(server_pid)
    rss_idle = probe.rss()
    # publisher
    pub_conn, child = ctx.Pipe()
    pub_cfg = PublisherConfig(
        base_url, opts.stream, opts.key, clip_args, str(work / "send.npz"), opts.load_cpus
    )
    pub = ctx.Process(target=publisher_process, args=(pub_cfg, child), daemon=True)
    pub.start()
    procs.append(pub)
    if not pub_conn.poll(60):
        raise RuntimeError("the publisher did not start within 60 s")
    status, info = pub_conn.recv()
    if status != "ready":
        raise RuntimeError(str(info))
    _log(opts, f"publisher sending ({video_bitrate / 1e6:.2f} Mbps video payload)")
    time.sleep(max(opts.settle, opts.keyframe_interval + 0.2))  # the server has a keyframe
    rss_publisher = probe.rss()
    # workers
    n_workers = opts.workers or max(1, min(4, (max(steps) + 99) // 100))
    conns = []
    for w in range(n_workers):
        a, b = ctx.Pipe()
        cfg = WorkerConfig(
            w,
            base_url,
            opts.stream,
            opts.codec,
            str(work / f"arrivals-{w}.npz"),
            opts.load_cpus,
            opts.server_nice if opts.load_cpus else 0,
        )
        p = ctx.Process(target=worker_process, args=(cfg, b), daemon=True)
        p.start()
        procs.append(p)
        conns.append(a)
    viewers: dict[int, dict[str, Any]] = {}
    windows: list[dict[str, Any]] = []
    present: list[int] = []
    failures_in_row = 0
    next_index = 0
    for target_count in steps:
        new = list(range(next_index, target_count))
        next_index = max(next_index, target_count)
        per_worker: list[list[int]] = [[] for _ in conns]
        for k, idx in enumerate(new):
            per_worker[k % len(conns)].append(idx)
        interval = len(conns) / opts.join_rate
        t_join = time.monotonic()
        for c, idxs in zip(conns, per_worker, strict=True):
            c.send(("join", idxs, interval))
        joined: list[int] = []
        for c, idxs in zip(conns, per_worker, strict=True):
            if not c.poll(120 + len(idxs) * interval):
                raise RuntimeError("a viewer worker did not finish joining within its time")
            _, summaries = c.recv()
            for s in summaries:
                viewers[s["index"]] = s
                joined.append(s["index"])
        join_s = time.monotonic() - t_join
        present.extend(joined)
        errors = [viewers[i]["error"] for i in joined if viewers[i]["error"]]
        _log(
            opts,
            f"{len(present)} viewers ({len(joined)} joined in {join_s:.1f} s"
            + (f", {len(errors)} failed: {errors[0]}" if errors else "")
            + ")",
        )
        time.sleep(opts.settle)
        ports = {int(viewers[i]["port"]) for i in present}
        drops0 = drops_snapshot(ports, server_pid)
        load0, viewers0 = _load_cpu_seconds(procs), _load_cpu_seconds(procs[1:])
        per0 = probe.per_process()
        cpu0, t0 = probe.cpu_seconds(), time.time_ns()
        queues = _sample_queues(ports, server_pid, opts.duration)
        cpu1, t1 = probe.cpu_seconds(), time.time_ns()
        per1 = probe.per_process()
        span_s = (t1 - t0) / 1e9
        per_process = {
            pid: round((per1[pid] - per0[pid]) / span_s * 100, 1) for pid in per1 if pid in per0
        }
        load1, viewers1 = _load_cpu_seconds(procs), _load_cpu_seconds(procs[1:])
        drops1 = drops_snapshot(ports, server_pid)
        rss = probe.rss()
        cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / ((t1 - t0) / 1e9) * 100
        window: dict[str, Any] = {
            "window": (t0, t1),
            "present": list(present),
            "joined": joined,
            "join_s": join_s,
            "server_cpu_percent": cpu,
            "server_process_cpu_percent": per_process,
            "load_cpu_percent": (load1 - load0) / ((t1 - t0) / 1e9) * 100,
            "viewer_cpu_percent": (viewers1 - viewers0) / ((t1 - t0) / 1e9) * 100,
            "server_rss_bytes": rss,
            "drops": (drops0, drops1),
            "queues": queues,
        }
        windows.append(window)
        load_core = window["load_cpu_percent"] / load_core_count(opts)
        _log(
            opts,
            f"  window done: server CPU {cpu if cpu is None else round(cpu, 1)} % "
            f"(per process {per_process}), "
            f"load core {load_core:.0f} %",
        )
        if cpu is not None and cpu > 97 and opts.ramp:
            failures_in_row += 1
        else:
            failures_in_row = 0
        if opts.ramp and failures_in_row >= opts.stop_after_failures:
            _log(opts, "server saturated for consecutive steps: ending the ramp")
            break
    time.sleep(0.5)  # packets of the last window still in flight
    for c in conns:
        c.send(("stop",))
    lag_by_s: dict[int, int] = {}
    for c in conns:
        if not c.poll(120):
            raise RuntimeError("a viewer worker did not stop")
        _, summaries, lags = c.recv()
        for s in summaries:
            viewers[s["index"]] = s
        for sec, lag in lags.items():
            lag_by_s[sec] = max(lag, lag_by_s.get(sec, 0))
    for win in windows:
        w0, w1 = win["window"]
        lags = [v for k, v in lag_by_s.items() if w0 // 10**9 <= k <= w1 // 10**9]
        win["load_loop_lag_ms_max"] = max(lags) / 1e6 if lags else None
    pub_conn.send("stop")
    if not pub_conn.poll(60):
        raise RuntimeError("the publisher did not stop")
    _, pub_summary = pub_conn.recv()
    return _analyse(
        opts,
        work,
        len(conns),
        viewers,
        windows,
        pub_summary,
        rss_idle,
        rss_publisher,
        video_bitrate,
    )


def load_metrics(window: dict[str, Any], cores: int) -> dict[str, Any]:
    """The load side's own CPU in a window: ``load_cpu_percent`` (publisher + viewer workers,
    100 = one core), ``viewer_cpu_percent`` (the workers alone), ``load_core_percent`` (how
    busy the load cores are, 100 = all saturated), ``load_headroom`` (100 / that: how many
    times this step's load the load cores could take) and ``server_to_load_cost`` (server CPU /
    load CPU for the same packets: how many times what one server core can send one load core
    can take; the bench measures the server while this is > 1 and the load cores have headroom).
    """
    load = window["load_cpu_percent"]
    server = window.get("server_cpu_percent")
    core = load / max(1, cores)
    return {
        "load_cpu_percent": load,
        "viewer_cpu_percent": window.get("viewer_cpu_percent"),
        "load_core_percent": core,
        "load_headroom": 100.0 / core if core > 0 else None,
        "server_to_load_cost": server / load if server is not None and load > 0 else None,
    }


def receive_path(viewers: dict[int, dict[str, Any]]) -> str:
    """ "native", "python" or "mixed": which receive path the viewers that connected used."""
    paths = {bool(v.get("native")) for v in viewers.values() if v.get("connected_ns")}
    if paths == {True}:
        return "native"
    if paths == {False}:
        return "python"
    return "mixed" if paths else "none"


def _load(path: Path) -> dict[str, Any]:
    import numpy as np

    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _analyse(
    opts: BenchOptions,
    work: Path,
    n_workers: int,
    viewers: dict[int, dict[str, Any]],
    windows: list[dict[str, Any]],
    pub_summary: dict[str, Any],
    rss_idle: int | None,
    rss_publisher: int | None,
    video_bitrate: float,
) -> dict[str, Any]:
    import numpy as np

    send = _load(work / "send.npz")
    parts = [_load(work / f"arrivals-{w}.npz") for w in range(n_workers)]
    arrivals = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    matched = analysis.match(send, arrivals)
    frames = {k: arrivals[k] for k in ("frame_viewer", "frame_t", "frame_ts")}
    steps = []
    for w in windows:
        m = analysis.step_metrics(
            send=send,
            matched=matched,
            frames=frames,
            viewers=viewers,
            present=w["present"],
            joined=w["joined"],
            window=w["window"],
            fps=opts.fps,
        )
        m["server_cpu_percent"] = w["server_cpu_percent"]
        m["server_rss_bytes"] = w["server_rss_bytes"]
        base = rss_publisher if rss_publisher is not None else rss_idle
        if w["server_rss_bytes"] is not None and base is not None and m["viewers"]:
            m["server_bytes_per_viewer"] = (w["server_rss_bytes"] - base) / m["viewers"]
        else:
            m["server_bytes_per_viewer"] = None
        m["join_rate_per_s"] = len(w["joined"]) / w["join_s"] if w["join_s"] > 0 else None
        d0, d1 = w["drops"]
        m["client_socket_drops"] = d1[0] - d0[0]
        m["client_rx_queue_max_bytes"], m["server_rx_queue_max_bytes"] = w["queues"]
        m["load_loop_lag_ms_max"] = w.get("load_loop_lag_ms_max")
        m.update(load_metrics(w, load_core_count(opts)))
        m["server_socket_drops"] = d1[1] - d0[1]
        steps.append(m)
    last = steps[-1]
    result: dict[str, Any] = dict(last)
    result.update(
        {
            "codec": opts.codec,
            "bitrate": opts.bitrate,
            "video_payload_mbps": video_bitrate / 1e6,
            "resolution": f"{opts.width}x{opts.height}",
            "fps": opts.fps,
            "keyframe_interval_s": opts.keyframe_interval,
            "duration_s": opts.duration,
            "server_cpus": list(opts.server_cpus) if opts.server_cpus else None,
            "load_cpus": list(opts.load_cpus) if opts.load_cpus else None,
            "workers": n_workers,
            "load_cores": load_core_count(opts),
            "load_receive_path": receive_path(viewers),
            "untouched_payload_ratio": matched.matched_fraction,
            "srtp_auth_failures": sum(v.get("auth_failures", 0) for v in viewers.values()),
            "srtp_replays": sum(v.get("replays", 0) for v in viewers.values()),
            "viewers_without_keyframe": sum(
                1 for v in viewers.values() if not v.get("first_key_ns")
            ),
            "viewer_errors": sorted({v["error"] for v in viewers.values() if v.get("error")}),
            "server_rss_idle_bytes": rss_idle,
            "server_rss_publisher_bytes": rss_publisher,
            "publisher": pub_summary,
        }
    )
    if opts.ramp:
        result["steps"] = steps
        result["max_viewers"] = analysis.max_viewers(steps)
    return result
