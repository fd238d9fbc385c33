"""The limit probe in ``relaycast bench --ramp``: the implied-viewers arithmetic, the report line,
and that the probe builds and runs here (CI installs gcc and libssl-dev: scripts/test.sh)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from relaycast.cli import build_parser
from relaycast.loadgen import probe, report, runner

EXAMPLE = (
    "limit probe: 2.91 µs per packet per viewer on the server's core -> 1,070 viewers per "
    "core at 321 packets/s; max_viewers / probe = 0.56"
)


def _probed(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "publisher_packets_per_s": 321.0,
        "max_viewers": 600,
        "limit_probe_us_per_packet_per_viewer": 2.91,
        "probe_implied_viewers_per_core": 1070.4,
        "max_viewers_vs_probe": 600 / 1070.4,
        "limit_probe": {"cpus": [0], "packets_per_s": 321.0},
    }
    result.update(changes)
    return result


# -- arithmetic ----------------------------------------------------------------------------------


def test_implied_viewers_per_core() -> None:
    # one second of CPU over the cost of one viewer's second of packets
    assert probe.implied_viewers_per_core(2.91, 321.0) == pytest.approx(1070.5, abs=0.1)
    assert probe.implied_viewers_per_core(1.0, 1e6) == pytest.approx(1.0)
    assert probe.implied_viewers_per_core(2.0, 250.0) == pytest.approx(2000.0)
    assert probe.implied_viewers_per_core(0.0, 321.0) is None
    assert probe.implied_viewers_per_core(2.91, 0.0) is None


def test_max_viewers_vs_probe() -> None:
    assert probe.max_viewers_vs_probe(600, 1070.5) == pytest.approx(0.5605, abs=1e-4)
    assert probe.max_viewers_vs_probe(0, 1070.5) == 0.0
    assert probe.max_viewers_vs_probe(None, 1070.5) is None
    assert probe.max_viewers_vs_probe(600, None) is None
    assert probe.max_viewers_vs_probe(600, 0.0) is None


def test_bench_probe_parameters() -> None:
    # max(200, the last step's viewers capped at 500)
    assert probe.bench_probe_viewers(4) == 200
    assert probe.bench_probe_viewers(0) == 200
    assert probe.bench_probe_viewers(350) == 350
    assert probe.bench_probe_viewers(2000) == 500
    assert probe.bench_probe_packets(200) == 750
    assert probe.bench_probe_packets(500) == 300
    assert probe.bench_probe_packets(1) == 2000
    # the clip's mean video payload, rounded, within what the probe's buffers take
    assert probe.bench_probe_payload(1103.6) == 1104
    assert probe.bench_probe_payload(None) == probe.DEFAULT_PAYLOAD
    assert probe.bench_probe_payload(0.0) == probe.DEFAULT_PAYLOAD
    assert probe.bench_probe_payload(5000.0) == probe.MAX_PAYLOAD


# -- the report ----------------------------------------------------------------------------------


def test_probe_line() -> None:
    assert report.probe_line(_probed()) == EXAMPLE
    unpinned = report.probe_line(_probed(limit_probe={"cpus": None, "packets_per_s": 321.0}))
    assert unpinned is not None and "viewer (not pinned) -> 1,070 viewers" in unpinned
    no_ratio = report.probe_line(_probed(max_viewers_vs_probe=None))
    assert no_ratio is not None and no_ratio.endswith("max_viewers / probe = -")
    assert report.probe_line({"max_viewers": 3}) is None  # --no-probe, --target, no ramp
    skipped = {"max_viewers": 3, "limit_probe_skipped": "cannot build limit_probe.c: gcc not found"}
    assert report.probe_line(skipped) == (
        "limit probe skipped: cannot build limit_probe.c: gcc not found"
    )


def test_table_prints_the_probe_line_after_max_viewers() -> None:
    step = {"viewers": 600, "delivered_ratio_min": 1.0, "delay_ms_p99": 3.0}
    lines = report.format_table(_probed(steps=[step])).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("max viewers"))
    assert lines[at + 1] == EXAMPLE
    plain = report.format_table({"steps": [step], "max_viewers": 600}).splitlines()
    assert plain[-1].startswith("max viewers")


def test_no_probe_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["bench", "--ramp"]).no_probe is False
    assert parser.parse_args(["bench", "--ramp", "--no-probe"]).no_probe is True
    assert runner.BenchOptions().probe is True


# -- the probe on this machine -------------------------------------------------------------------


def test_probe_source_ships_with_the_package() -> None:
    assert probe.PROBE_SOURCE.is_file()
    assert probe.PROBE_SOURCE.parent == Path(probe.__file__).parent
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert '"loadgen/*.c"' in pyproject.read_text()


def test_build_and_run_probe(tmp_path: Path) -> None:
    binary, why = probe.build_probe(tmp_path)
    assert binary is not None, f"limit_probe.c did not build (gcc, libssl-dev?): {why}"
    assert why == ""
    cpu = min(os.sched_getaffinity(0))
    wall, cpu_us, runs = probe.run_probe(
        binary, 20, 40, 2, 4, payload=1000, preexec_fn=runner.pinner((cpu,), 0)
    )
    assert len(runs) == 2
    assert all(r > 0 for r in runs)
    assert min(runs) <= wall <= max(runs)
    assert cpu_us > 0
    assert probe.implied_viewers_per_core(wall, 321.0) is not None


def test_build_probe_without_gcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.shutil, "which", lambda name: None)
    assert probe.build_probe(tmp_path) == (None, "gcc not found")


def test_run_probe_failure_is_a_runtime_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited 1"):
        probe.run_probe(Path("/bin/false"), 1, 1, 1, 1)
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\necho nothing\n")
    silent.chmod(0o755)
    with pytest.raises(RuntimeError, match="no result"):
        probe.run_probe(silent, 1, 1, 1, 1)


def test_run_limit_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bench adds to its result after a ramp (a short probe here)."""
    monkeypatch.setattr(probe, "BENCH_REPEATS", 2)
    monkeypatch.setattr(probe, "bench_probe_packets", lambda viewers: 20)
    opts = runner.BenchOptions(
        ramp=True, server_cpus=(min(os.sched_getaffinity(0)),), server_nice=0, verbose=False
    )
    result: dict[str, Any] = {
        "steps": [{"viewers": 2}, {"viewers": 4}],
        "publisher_packets_per_s": 300.0,
        "max_viewers": 4,
    }
    out = runner.run_limit_probe(opts, result, 1103.6)
    us = out["limit_probe_us_per_packet_per_viewer"]
    assert us > 0
    implied = out["probe_implied_viewers_per_core"]
    assert implied == pytest.approx(1e6 / (us * 300.0))
    assert out["max_viewers_vs_probe"] == pytest.approx(4 / implied)
    details = out["limit_probe"]
    assert details["viewers"] == 200 and details["payload_bytes"] == 1104
    assert details["packets"] == 20 and details["repeats"] == 2
    assert details["cpus"] == list(opts.server_cpus or ())
    assert len(details["runs_us_per_packet_per_viewer"]) == 2
    line = report.probe_line({**result, **out})
    assert line is not None
    assert re.fullmatch(
        r"limit probe: \d+\.\d\d µs per packet per viewer on the server's core -> [\d,]+ viewers "
        r"per core at 300 packets/s; max_viewers / probe = \d+\.\d\d",
        line,
    ), line


def test_run_limit_probe_skips_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "build_probe", lambda directory: (None, "gcc not found"))
    opts = runner.BenchOptions(ramp=True, verbose=False)
    out = runner.run_limit_probe(opts, {"viewers": 4, "publisher_packets_per_s": 300.0}, None)
    assert out["limit_probe_skipped"] == "cannot build limit_probe.c: gcc not found"
    assert out["limit_probe_us_per_packet_per_viewer"] is None
    assert out["probe_implied_viewers_per_core"] is None
    assert out["max_viewers_vs_probe"] is None
    assert report.probe_line(out) == f"limit probe skipped: {out['limit_probe_skipped']}"
