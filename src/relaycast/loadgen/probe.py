"""The raw limit probe (``limit_probe.c``, next to this module): the floor under relaycast's
fan-out, in plain C with no relaycast code (a 12-byte RTP header rewrite, the payload copy,
AES-128-GCM through OpenSSL's EVP API, ``sendmmsg`` of up to 64 datagrams), per packet per
viewer.

It is compiled when it is used (``gcc -O2 ... -lcrypto``; it is package data, never a built
extension), so it needs gcc and libcrypto's headers (``libssl-dev``) at that moment.
``bench/fanout.py --modes ...,probe`` runs it beside the fan-out kernel; ``relaycast bench
--ramp`` runs it after the ramp on the server's core, and turns its cost into the viewers one
core could serve at the publisher's packet rate (:func:`implied_viewers_per_core`), printed
beside ``max_viewers``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PROBE_SOURCE = Path(__file__).with_name("limit_probe.c")
DEFAULT_PAYLOAD = 1150  # bytes: the mean of bench/fanout.py's 1100-1200-byte VP8 payloads
MAX_PAYLOAD = 2048 - 12 - 16  # the probe's buffer less the RTP header and the GCM tag

#: ``relaycast bench --ramp``: at least this many viewers in the probe, at most the cap.
BENCH_MIN_VIEWERS, BENCH_MAX_VIEWERS = 200, 500
BENCH_MAX_SENDS = 150_000  # packets x viewers per run (fewer packets for many viewers)
BENCH_REPEATS = 5
BENCH_RECEIVERS = 64


def build_probe(directory: Path) -> tuple[Path | None, str]:
    """Compile ``limit_probe.c`` into ``directory``: (the binary, "") or (None, why not)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, "gcc not found"
    if not PROBE_SOURCE.is_file():
        return None, f"{PROBE_SOURCE} is missing"
    binary = directory / "limit_probe"
    try:
        done = subprocess.run(
            [gcc, "-O2", "-Wall", "-o", str(binary), str(PROBE_SOURCE), "-lcrypto"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"gcc failed to run: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        why = (
            "libcrypto (OpenSSL headers or library) missing? "
            if any("openssl" in line or "lcrypto" in line for line in lines)
            else ""
        )
        return None, f"{why}gcc exited {done.returncode}: " + " / ".join(lines[-3:])
    return binary, ""


def run_probe(
    binary: Path,
    viewers: int,
    packets: int,
    repeats: int,
    receivers: int,
    payload: int = DEFAULT_PAYLOAD,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 600.0,
) -> tuple[float, float, list[float]]:
    """(median wall µs, median CPU µs, the runs) per packet per viewer from the probe.

    ``preexec_fn`` runs in the child before the probe starts (to pin it to a core, for example).
    Raises RuntimeError when the probe fails or prints nothing usable.
    """
    try:
        done = subprocess.run(
            [
                str(binary),
                *("-n", str(viewers), "-p", str(packets), "-r", str(repeats)),
                *("-k", str(receivers), "-s", str(payload)),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=preexec_fn,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"limit_probe did not run: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"limit_probe exited {done.returncode}: {done.stderr.strip()}")
    values = dict(re.findall(r"^(\w+)=(\S+)$", done.stdout, re.MULTILINE))
    try:
        runs = [float(v) for v in values["runs_us_per_packet_per_viewer"].split(",")]
        wall = float(values["probe_us_per_packet_per_viewer"])
        cpu = float(values["cpu_us_per_packet_per_viewer"])
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"limit_probe printed no result ({exc!r}): {done.stdout!r}") from exc
    return wall, cpu, runs


# -- relaycast bench --ramp -----------------------------------------------------------------------


def bench_probe_viewers(last_step_viewers: int) -> int:
    """The probe's viewer count after a ramp: the last step's, capped, and never below the floor
    (a few viewers would measure the per-packet overhead, not the per-viewer cost)."""
    return max(BENCH_MIN_VIEWERS, min(last_step_viewers, BENCH_MAX_VIEWERS))


def bench_probe_packets(viewers: int, max_packets: int = 2000) -> int:
    """Source packets per run for ``viewers``: about ``BENCH_MAX_SENDS`` sends per run."""
    return max(50, min(max_packets, BENCH_MAX_SENDS // max(1, viewers)))


def bench_probe_payload(mean_video_payload: float | None) -> int:
    """The probe's payload size (it sends one): the clip's mean video payload, within bounds."""
    if mean_video_payload is None or mean_video_payload <= 0:
        return DEFAULT_PAYLOAD
    return max(1, min(MAX_PAYLOAD, round(mean_video_payload)))


def implied_viewers_per_core(us_per_packet_per_viewer: float, packets_per_s: float) -> float | None:
    """Viewers one core could serve if fan-out cost only the probe's work: one second of CPU
    (1e6 µs) over (µs per packet per viewer x the publisher's packets per second, audio +
    video). None when either input is not positive."""
    if us_per_packet_per_viewer <= 0 or packets_per_s <= 0:
        return None
    return 1e6 / (us_per_packet_per_viewer * packets_per_s)


def max_viewers_vs_probe(max_viewers: int | None, implied: float | None) -> float | None:
    """``max_viewers`` / the probe's implied viewers per core (1.0: the server reached the floor;
    the server also receives, runs RTCP, ICE and an event loop, so expect less)."""
    if max_viewers is None or implied is None or implied <= 0:
        return None
    return max_viewers / implied
