"""Lightweight WHEP viewers: real ICE, DTLS and SRTP, no decoding.

Each viewer verifies SRTP authentication on every packet, logs (crc32 of payload, payload
length, arrival time) for every RTP packet so the runner can match it to the publisher's send
log, tracks sequence numbers per SSRC for receiver reports (RFC 3550 §6.4.2) and NACKs
(RFC 4585 §6.2.1), notes when the first packet and the first complete keyframe arrived, and keeps
consent alive with a Binding request every ~5 s (RFC 7675). Many viewers share one asyncio loop
in a worker process, each with its own UDP socket (the server maps source address -> session).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
import time
import zlib
from array import array
from dataclasses import dataclass
from typing import Any

import aiohttp

from relaycast.loadgen.client_transport import ClientTransport, build_offer, parse_answer
from relaycast.net.dtls import DtlsCertificate
from relaycast.rtp.codecs import is_keyframe_start
from relaycast.rtp.rtcp import (
    RtcpNack,
    RtcpReceiverReport,
    RtcpReceptionReport,
    RtcpSenderReport,
    ntp_middle32,
    parse_compound,
)

_HDR = struct.Struct("!BBHII")
_NACK_MAX_GAP = 64


class _SeqState:
    """Extended sequence numbers and loss for one SSRC (RFC 3550 Appendix A.1, A.3)."""

    __slots__ = ("base", "expected_prior", "kind", "max_ext", "received", "received_prior")

    def __init__(self, seq: int, kind: str) -> None:
        self.kind = kind
        self.base = seq
        self.max_ext = seq
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0


class Viewer:
    """One WHEP session; ``join`` returns once SRTP keys exist."""

    def __init__(self, index: int, certificate: DtlsCertificate, codec: str) -> None:
        self.index = index
        self.codec = codec
        self.certificate = certificate
        self.ssrc = secrets.randbits(32)
        self.transport = ClientTransport(certificate, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp)
        self.crc: array[int] = array("I")
        self.length: array[int] = array("H")
        self.t_ns: array[int] = array("q")
        self.frame_t: array[int] = array("q")  # video marker arrivals
        self.frame_ts: array[int] = array("I")  # their RTP timestamps
        self.kinds: dict[int, str] = {}
        self.seq: dict[int, _SeqState] = {}
        self.location: str | None = None
        self.error: str | None = None
        self.post_ns = 0
        self.answer_ns = 0
        self.connected_ns = 0
        self.first_packet_ns = 0
        self.first_key_start_ns = 0
        self.first_key_ns = 0
        self.stop_ns = 0
        self._first_key_ts: int | None = None
        self.nacks_sent = 0
        self._last_sr: dict[int, tuple[int, int]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, http: aiohttp.ClientSession, base_url: str, stream: str) -> None:
        t = self.transport
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.certificate.fingerprint,
            local=t.local,
            direction="recvonly",
            video_codec=self.codec,
        )
        self.post_ns = time.time_ns()
        async with http.post(
            f"{base_url}/whep/{stream}", data=offer, headers={"Content-Type": "application/sdp"}
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST answered {resp.status}: {answer[:300]}")
            self.location = resp.headers.get("Location")
        self.answer_ns = time.time_ns()
        remote = parse_answer(answer)
        self.kinds = remote.payload_kinds
        t.start(remote)
        await t.wait_connected(10.0)
        self.connected_ns = time.time_ns()
        self._tasks.append(asyncio.get_running_loop().create_task(self._reports()))

    # -- hot path -----------------------------------------------------------------------------

    def _on_rtp(self, plain: bytes, t: int) -> None:
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(plain, 0)
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            offset += 4 + 4 * ((plain[offset + 2] << 8) | plain[offset + 3])
        end = len(plain) - plain[-1] if b0 & 0x20 else len(plain)
        payload = plain[offset:end]
        self.crc.append(zlib.crc32(payload))
        self.length.append(len(payload))
        self.t_ns.append(t)
        state = self.seq.get(ssrc)
        if state is None:
            kind = self.kinds.get(b1 & 0x7F, "?")
            state = self.seq[ssrc] = _SeqState(seq, kind)
            if not self.first_packet_ns:
                self.first_packet_ns = t
        else:
            prev = state.max_ext
            ext = prev + ((seq - prev + 0x8000) & 0xFFFF) - 0x8000
            if ext > prev:
                if ext - prev > 1 and state.kind == "video" and ext - prev <= _NACK_MAX_GAP:
                    self._nack(ssrc, range(prev + 1, ext))
                state.max_ext = ext
        state.received += 1
        if state.kind == "video":
            if b1 & 0x80:
                self.frame_t.append(t)
                self.frame_ts.append(ts)
            if not self.first_key_ns:
                if self._first_key_ts is None:
                    if is_keyframe_start(self.codec, payload):
                        self._first_key_ts = ts
                        self.first_key_start_ns = t
                elif ts == self._first_key_ts and b1 & 0x80:
                    self.first_key_ns = t

    def _nack(self, ssrc: int, missing: range) -> None:
        self.nacks_sent += 1
        lost = [s & 0xFFFF for s in missing]
        self.transport.send_rtcp(bytes(RtcpNack(self.ssrc, ssrc, lost)))

    def _on_rtcp(self, plain: bytes) -> None:
        try:
            packets = parse_compound(plain)
        except ValueError:
            return
        for p in packets:
            if isinstance(p, RtcpSenderReport):
                self._last_sr[p.ssrc] = (ntp_middle32(p.ntp_timestamp), time.monotonic_ns())

    async def _reports(self) -> None:
        """Receiver reports every second (RFC 3550 §6.4.2, A.3 for fraction lost)."""
        while True:
            await asyncio.sleep(1.0)
            blocks = []
            now = time.monotonic_ns()
            for ssrc, s in self.seq.items():
                expected = s.max_ext - s.base + 1
                lost = expected - s.received
                exp_int = expected - s.expected_prior
                rec_int = s.received - s.received_prior
                s.expected_prior, s.received_prior = expected, s.received
                lost_int = exp_int - rec_int
                fraction = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
                lsr, dlsr = 0, 0
                if ssrc in self._last_sr:
                    lsr, at = self._last_sr[ssrc]
                    dlsr = (now - at) * 65536 // 1_000_000_000
                blocks.append(
                    RtcpReceptionReport(
                        ssrc, fraction, lost, s.max_ext & 0xFFFFFFFF, 0, lsr, dlsr & 0xFFFFFFFF
                    )
                )
            if blocks:
                self.transport.send_rtcp(bytes(RtcpReceiverReport(self.ssrc, blocks[:31])))

    async def close(self, http: aiohttp.ClientSession | None, base_url: str) -> None:
        self.stop_ns = time.time_ns()
        for task in self._tasks:
            task.cancel()
        self.transport.close()
        if http is not None and self.location:
            url = self.location if self.location.startswith("http") else base_url + self.location
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.delete(url, timeout=aiohttp.ClientTimeout(total=5)):
                    pass

    def summary(self) -> dict[str, Any]:
        lost = sum(max(0, s.max_ext - s.base + 1 - s.received) for s in self.seq.values())
        return {
            "index": self.index,
            "port": self.transport.local[1],
            "error": self.error,
            "post_ns": self.post_ns,
            "answer_ns": self.answer_ns,
            "connected_ns": self.connected_ns,
            "first_packet_ns": self.first_packet_ns,
            "first_key_start_ns": self.first_key_start_ns,
            "first_key_ns": self.first_key_ns,
            "stop_ns": self.stop_ns,
            "packets": len(self.t_ns),
            "seq_lost": lost,
            "auth_failures": self.transport.auth_failures,
            "replays": self.transport.replays,
            "nacks_sent": self.nacks_sent,
        }


# -- worker process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerConfig:
    worker: int
    base_url: str
    stream: str
    codec: str
    data_path: str
    cpus: tuple[int, ...] | None = None
    nice: int = 0


def worker_process(cfg: WorkerConfig, conn: Any) -> None:
    """Entry point of a viewer worker process. Commands on ``conn``:
    ("join", [indices], interval) -> ("joined", [summaries of the new viewers]);
    ("stop",) -> arrival logs saved to ``data_path``, then ("stopped", [summaries], the event
    loop's worst lateness per second of CLOCK_REALTIME in ns)."""
    if cfg.cpus:
        os.sched_setaffinity(0, set(cfg.cpus))
    if cfg.nice:
        with contextlib.suppress(OSError):  # as much priority as the server under test
            os.nice(cfg.nice)
    asyncio.run(_worker_main(cfg, conn))


async def _worker_main(cfg: WorkerConfig, conn: Any) -> None:
    loop = asyncio.get_running_loop()
    certificate = DtlsCertificate()
    viewers: list[Viewer] = []
    commands: asyncio.Queue[Any] = asyncio.Queue()

    def on_command() -> None:
        try:
            commands.put_nowait(conn.recv())
        except EOFError:
            commands.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), on_command)
    lag_by_s: dict[int, int] = {}

    async def watch_lag() -> None:
        """The loop's lateness per second (max, ns): a late loop means late arrival stamps."""
        while True:
            before = time.time_ns()
            await asyncio.sleep(0.01)
            now = time.time_ns()
            late = now - before - 10_000_000
            key = now // 1_000_000_000
            if late > lag_by_s.get(key, 0):
                lag_by_s[key] = late

    lag_task = loop.create_task(watch_lag())
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        while True:
            cmd = await commands.get()
            if cmd[0] == "join":
                new = [Viewer(i, certificate, cfg.codec) for i in cmd[1]]
                viewers.extend(new)
                await _join_all(http, cfg, new, float(cmd[2]))
                conn.send(("joined", [v.summary() for v in new]))
            elif cmd[0] == "stop":
                await asyncio.gather(*(v.close(http, cfg.base_url) for v in viewers))
                _save(cfg.data_path, viewers)
                lag_task.cancel()
                conn.send(("stopped", [v.summary() for v in viewers], lag_by_s))
                break
    loop.remove_reader(conn.fileno())


async def _join_all(
    http: aiohttp.ClientSession, cfg: WorkerConfig, viewers: list[Viewer], interval: float
) -> None:
    async def one(v: Viewer, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await v.join(http, cfg.base_url, cfg.stream)
        except Exception as exc:
            v.error = f"{type(exc).__name__}: {exc}"[:300]
            v.transport.close()

    await asyncio.gather(*(one(v, i * interval) for i, v in enumerate(viewers)))
    # wait (bounded) for every viewer's first keyframe so the runner measures a steady state
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(
        not v.first_key_ns and v.error is None for v in viewers
    ):
        await asyncio.sleep(0.05)


def _save(path: str, viewers: list[Viewer]) -> None:
    import numpy as np

    counts = [len(v.t_ns) for v in viewers]
    np.savez(
        path,
        viewer=np.repeat(np.array([v.index for v in viewers], dtype=np.int32), counts),
        crc=np.concatenate([np.frombuffer(v.crc, dtype=np.uint32) for v in viewers])
        if viewers
        else np.zeros(0, np.uint32),
        length=np.concatenate([np.frombuffer(v.length, dtype=np.uint16) for v in viewers])
        if viewers
        else np.zeros(0, np.uint16),
        t_ns=np.concatenate([np.frombuffer(v.t_ns, dtype=np.int64) for v in viewers])
        if viewers
        else np.zeros(0, np.int64),
        frame_viewer=np.repeat(
            np.array([v.index for v in viewers], dtype=np.int32), [len(v.frame_t) for v in viewers]
        ),
        frame_t=np.concatenate([np.frombuffer(v.frame_t, dtype=np.int64) for v in viewers])
        if viewers
        else np.zeros(0, np.int64),
        frame_ts=np.concatenate([np.frombuffer(v.frame_ts, dtype=np.uint32) for v in viewers])
        if viewers
        else np.zeros(0, np.uint32),
    )
