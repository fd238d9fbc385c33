"""A diagnostic recorder of one viewer's estimator inputs (``RELAYCAST_BWE_TRACE``).

When the environment variable ``RELAYCAST_BWE_TRACE`` names a directory, every viewer's
:class:`relaycast.media.feedback.congestion.ViewerCongestion` gets a
:class:`RecordingEstimator` instead of a plain :class:`BandwidthEstimator`: the same
estimator, which appends one JSON line per input to ``<dir>/bwe-<pid>-<n>.jsonl`` (one file a
viewer session). Unset (the default) nothing changes: the choice is made once, when the viewer
session is set up, and the plain estimator has no hook at all.

Lines (times in seconds on the server's monotonic clock, as the estimator gets them; ``est``:
the estimate in bit/s after the input, ``delay`` / ``loss``: its two halves)::

    {"in": "start", "t": ..., "start_bps": ..., "transport_cc": true}
    {"in": "fb", "t": now, "p": [[send s, wire size, arrival s on the viewer's clock | null],
     ...], "est": ..., "delay": ..., "loss": ...}
    {"in": "rr", "t": now, "lost": fraction 0..1, "rtt": s | null, "est": ...}
    {"in": "remb", "t": now, "bps": ..., "est": ...}
    {"in": "want", "t": now, "bps": target | null, "est": ...}   (only when it changes)
    {"in": "probe", "t": now, "bytes": granted, "est": ...}

``fb`` carries exactly what :meth:`BandwidthEstimator.on_transport_feedback` takes: the packets
one feedback message reported, in transport sequence order, joined with our send history (the
sequence numbers themselves are not an input). ``want`` and ``probe`` are recorded because they
drive the probe state the feedback is judged with. :func:`replay` feeds such lines to a fresh
estimator. ``bench/record_bwe_trace.py`` records a trace from a real Chromium viewer.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from relaycast.media.bwe.estimator import START_BPS, BandwidthEstimator, SentPacket

ENV = "RELAYCAST_BWE_TRACE"
_files = itertools.count()
_INPUTS = frozenset(("fb", "rr", "remb", "want", "probe"))


def trace_dir() -> Path | None:
    """The directory ``RELAYCAST_BWE_TRACE`` names (created), or None when unset."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


class RecordingEstimator(BandwidthEstimator):
    """A :class:`BandwidthEstimator` that writes every input it gets to a JSON-lines file."""

    def __init__(
        self, directory: Path, *, start_bps: int = START_BPS, transport_cc: bool = True
    ) -> None:
        super().__init__(start_bps=start_bps, transport_cc=transport_cc)
        self.path = directory / f"bwe-{os.getpid()}-{next(_files)}.jsonl"
        # line-buffered: a killed server leaves whole lines behind
        self._out: IO[str] | None = open(self.path, "a", buffering=1)  # noqa: SIM115
        self._want: float | None = None
        self._write({"in": "start", "start_bps": start_bps, "transport_cc": transport_cc})

    def _write(self, line: dict[str, Any]) -> None:
        out = self._out
        if out is None:
            return
        try:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
        except (OSError, ValueError):  # a full disk, a closed file: stop recording
            self._out = None

    def _after(self, line: dict[str, Any]) -> None:
        line["est"] = self.estimate_bps
        self._write(line)

    def on_transport_feedback(self, packets: Sequence[SentPacket], now: float) -> None:
        super().on_transport_feedback(packets, now)
        if packets:
            p = [[send, size, arrival] for send, size, arrival in packets]
            stats = self.stats()
            line = {"in": "fb", "t": now, "p": p, "delay": int(stats["delay_bps"])}
            line["loss"] = int(min(stats["loss_bps"], 1e12))
            self._after(line)

    def on_receiver_report(self, fraction_lost: float, rtt_s: float | None, now: float) -> None:
        super().on_receiver_report(fraction_lost, rtt_s, now)
        self._after({"in": "rr", "t": now, "lost": fraction_lost, "rtt": rtt_s})

    def on_remb(self, bps: int, now: float) -> None:
        super().on_remb(bps, now)
        self._after({"in": "remb", "t": now, "bps": bps})

    def want_probe(self, target_bps: int | None) -> None:
        super().want_probe(target_bps)
        if target_bps != self._want:
            self._want = target_bps
            self._after({"in": "want", "bps": target_bps})

    def probe(self, now: float) -> int:
        granted = super().probe(now)
        self._after({"in": "probe", "t": now, "bytes": granted})
        return granted

    def close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            out.close()


def new_estimator(*, transport_cc: bool) -> BandwidthEstimator:
    """A viewer's estimator: a :class:`RecordingEstimator` when ``RELAYCAST_BWE_TRACE`` is
    set, else the plain one."""
    directory = trace_dir()
    if directory is None:
        return BandwidthEstimator(transport_cc=transport_cc)
    return RecordingEstimator(directory, transport_cc=transport_cc)


def read(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        for text in f:
            if text.strip():
                yield json.loads(text)


def replay(
    lines: Iterable[dict[str, Any]], estimator: BandwidthEstimator | None = None
) -> Iterator[tuple[dict[str, Any], BandwidthEstimator]]:
    """Feed recorded lines (the format above) to ``estimator`` (default: a fresh one, from the
    ``start`` line's settings); yields each line with the estimator after it."""
    est = estimator
    for line in lines:
        kind = line["in"]
        if kind == "start":
            if est is None:
                est = BandwidthEstimator(
                    start_bps=int(line.get("start_bps", START_BPS)),
                    transport_cc=bool(line.get("transport_cc", True)),
                )
            continue
        if kind not in _INPUTS:
            continue  # a header, a comment
        if est is None:
            est = BandwidthEstimator()
        if kind == "fb":
            packets = [(float(s), int(n), None if a is None else float(a)) for s, n, a in line["p"]]
            est.on_transport_feedback(packets, float(line["t"]))
        elif kind == "rr":
            rtt = line["rtt"]
            est.on_receiver_report(float(line["lost"]), None if rtt is None else float(rtt),
                                   float(line["t"]))  # fmt: skip
        elif kind == "remb":
            est.on_remb(int(line["bps"]), float(line["t"]))
        elif kind == "want":
            bps = line["bps"]
            est.want_probe(None if bps is None else int(bps))
        else:
            est.probe(float(line["t"]))
        yield line, est


# -- a compact form for traces kept in the repository (tests/unit/bwe_traces) -----------------
#
# One JSON array a line (a header line may stay an object with "in": "header"):
#
#     ["start", start_bps, transport_cc]
#     ["fb", t, [send delta, size, arrival delta | null, ...], estimate after]
#     ["rr", t, fraction lost x 256, rtt x 65536 | null]
#     ["remb", t, bps]   ["want", bps | null]   ["probe", t, bytes granted]
#
# Times are integer microseconds: ``t`` and the send times from the first input, the arrivals
# from the first arrival (only differences of each matter to the estimator); a packet's deltas
# are from the previous reported packet's (across lines: the trace is read in order). The
# report's loss and round trip keep the units of their RTCP fields (exact).


def compact(lines: Iterable[dict[str, Any]]) -> Iterator[list[Any] | dict[str, Any]]:
    """Recorded lines (the format above) in the compact form."""
    t0: float | None = None
    last_send = 0
    last_arrival = 0
    arrival0: float | None = None
    for line in lines:
        kind = line["in"]
        if kind not in _INPUTS and kind != "start":
            yield line
            continue
        t = 0
        if "t" in line:
            if t0 is None:
                t0 = float(line["t"])
            t = round((float(line["t"]) - t0) * 1e6)
        if kind == "start":
            yield ["start", line.get("start_bps", START_BPS), line.get("transport_cc", True)]
        elif kind == "fb":
            assert t0 is not None
            flat: list[int | None] = []
            for send, size, arrival in line["p"]:
                send_us = round((float(send) - t0) * 1e6)
                flat += [send_us - last_send, int(size)]
                last_send = send_us
                if arrival is None:
                    flat.append(None)
                    continue
                if arrival0 is None:
                    arrival0 = float(arrival)
                arrival_us = round((float(arrival) - arrival0) * 1e6)
                flat.append(arrival_us - last_arrival)
                last_arrival = arrival_us
            yield ["fb", t, flat, line.get("est")]
        elif kind == "rr":
            rtt = line["rtt"]
            lost = float(line["lost"])
            lost = lost / 256 if lost > 1 else lost
            yield ["rr", t, round(lost * 256), None if rtt is None else round(rtt * 65536)]
        elif kind == "remb":
            yield ["remb", t, line["bps"]]
        elif kind == "want":
            yield ["want", line["bps"]]
        else:
            yield ["probe", t, line["bytes"]]


def expand(lines: Iterable[list[Any] | dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Compact lines back in the recorded form (times in seconds), for :func:`replay`."""
    send = 0
    arrival = 0
    for line in lines:
        if isinstance(line, dict):
            yield line
            continue
        kind = line[0]
        if kind == "start":
            yield {"in": "start", "start_bps": line[1], "transport_cc": line[2]}
        elif kind == "fb":
            flat = line[2]
            packets: list[list[float | int | None]] = []
            for i in range(0, len(flat), 3):
                send += int(flat[i])
                delta = flat[i + 2]
                if delta is None:
                    packets.append([send / 1e6, int(flat[i + 1]), None])
                    continue
                arrival += int(delta)
                packets.append([send / 1e6, int(flat[i + 1]), arrival / 1e6])
            yield {"in": "fb", "t": line[1] / 1e6, "p": packets, "est": line[3]}
        elif kind == "rr":
            rtt = line[3]
            yield {"in": "rr", "t": line[1] / 1e6, "lost": line[2] / 256,
                   "rtt": None if rtt is None else rtt / 65536}  # fmt: skip
        elif kind == "remb":
            yield {"in": "remb", "t": line[1] / 1e6, "bps": line[2]}
        elif kind == "want":
            yield {"in": "want", "bps": line[1]}
        elif kind == "probe":
            yield {"in": "probe", "t": line[1] / 1e6, "bytes": line[2]}
