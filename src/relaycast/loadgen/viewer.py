"""Lightweight WHEP viewers: real ICE, DTLS and SRTP, no decoding.

Each viewer verifies SRTP authentication on every packet, logs (crc32 of payload, payload
length, arrival time) for every RTP packet so the runner can match it to the publisher's send
log, tracks sequence numbers per SSRC for receiver reports (RFC 3550 §6.4.2) and NACKs
(RFC 4585 §6.2.1), notes when the first packet and the first complete keyframe arrived, and keeps
consent alive with a Binding request every ~5 s (RFC 7675). Many viewers share one asyncio loop
in a worker process, each with its own UDP socket (the server maps source address -> session).

Once a viewer's SRTP keys exist, its socket is read by the worker's native receiver
(:mod:`relaycast.loadgen.receiver`: recvmmsg, libsrtp and the logs in C, for all the worker's
viewers in one call) when it is built and not switched off (``RELAYCAST_LOADGEN_NATIVE=0``);
otherwise by the Python transport, with :class:`ReceiveLog` keeping the same logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from relaycast.loadgen import receiver as native_receiver
from relaycast.loadgen.client_transport import ClientTransport, build_offer, parse_answer
from relaycast.loadgen.receive_log import ReceiveLog, kind_table
from relaycast.loadgen.receiver import NativeLog, ReceiverSet
from relaycast.net.dtls import DtlsCertificate
from relaycast.rtp.rtcp import (
    RtcpNack,
    RtcpReceiverReport,
    RtcpReceptionReport,
    RtcpSenderReport,
    ntp_middle32,
    parse_compound,
)


class Viewer:
    """One WHEP session; ``join`` returns once SRTP keys exist. With ``receivers`` the
    socket moves to that native receiver as soon as the keys exist."""

    def __init__(
        self,
        index: int,
        certificate: DtlsCertificate,
        codec: str,
        receivers: ReceiverSet | None = None,
    ) -> None:
        self.index = index
        self.codec = codec
        self.certificate = certificate
        self.ssrc = secrets.randbits(32)
        self.log: ReceiveLog | NativeLog = ReceiveLog(codec, nack=self.on_nack)
        self.receivers = receivers
        self.slot = -1
        self.transport = ClientTransport(
            certificate,
            on_rtp=self.log.on_rtp,
            on_rtcp=self._on_rtcp,
            on_srtp=self._hand_over if receivers is not None else None,
        )
        self.kinds: dict[int, str] = {}
        self.location: str | None = None
        self.error: str | None = None
        self.post_ns = 0
        self.answer_ns = 0
        self.connected_ns = 0
        self.stop_ns = 0
        self.nacks_sent = 0
        self._prior: dict[int, tuple[int, int]] = {}  # ssrc -> (expected, received) at last RR
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
        if isinstance(self.log, ReceiveLog):
            self.log.kinds = kind_table(self.kinds)
        t.start(remote)
        await t.wait_connected(10.0)
        self.connected_ns = time.time_ns()
        self._tasks.append(asyncio.get_running_loop().create_task(self._reports()))

    # -- receiving ----------------------------------------------------------------------------

    @property
    def first_packet_ns(self) -> int:
        return self.log.first_packet_ns

    @property
    def first_key_start_ns(self) -> int:
        return self.log.first_key_start_ns

    @property
    def first_key_ns(self) -> int:
        return self.log.first_key_ns

    def _hand_over(self) -> bool:
        """SRTP keys exist: move the socket to the native receiver (ClientTransport.on_srtp)."""
        t = self.transport
        if self.receivers is None or t.srtp is None:
            return False
        self.slot = self.receivers.attach(
            self, t.sock.fileno(), t.srtp._rx, self.codec, kind_table(self.kinds)
        )
        self.log = NativeLog(self.receivers.receiver, self.slot)
        t.on_close = self._detach
        return True

    def _detach(self) -> None:
        if self.receivers is not None and self.slot >= 0:
            self.receivers.detach(self.slot)

    def on_datagram(self, data: bytes) -> None:
        """SRTCP, STUN or DTLS the native receiver handed back."""
        self.transport.handle_datagram(data)

    def on_nack(self, ssrc: int, first: int, count: int) -> None:
        self.nacks_sent += 1
        lost = [s & 0xFFFF for s in range(first, first + count)]
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
            for ssrc, _kind, base, max_ext, received in self.log.streams():
                expected = max_ext - base + 1
                lost = expected - received
                expected_prior, received_prior = self._prior.get(ssrc, (0, 0))
                exp_int = expected - expected_prior
                rec_int = received - received_prior
                self._prior[ssrc] = (expected, received)
                lost_int = exp_int - rec_int
                fraction = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
                lsr, dlsr = 0, 0
                if ssrc in self._last_sr:
                    lsr, at = self._last_sr[ssrc]
                    dlsr = (now - at) * 65536 // 1_000_000_000
                blocks.append(
                    RtcpReceptionReport(
                        ssrc, fraction, lost, max_ext & 0xFFFFFFFF, 0, lsr, dlsr & 0xFFFFFFFF
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
        lost = sum(max(0, top - base + 1 - got) for _, _, base, top, got in self.log.streams())
        auth_failures = self.transport.auth_failures
        replays = self.transport.replays
        malformed = 0
        if isinstance(self.log, NativeLog):
            counts = self.log.counts()
            auth_failures += counts["auth_failures"]
            replays += counts["replays"]
            malformed = counts["malformed"] + counts["log_failures"]
        else:
            malformed = self.log.malformed
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
            "packets": self.log.packets,
            "seq_lost": lost,
            "auth_failures": auth_failures,
            "replays": replays,
            "malformed": malformed,
            "nacks_sent": self.nacks_sent,
            "native": isinstance(self.log, NativeLog),
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
    receivers = ReceiverSet(loop) if native_receiver.enabled() else None

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
                new = [Viewer(i, certificate, cfg.codec, receivers) for i in cmd[1]]
                viewers.extend(new)
                await _join_all(http, cfg, new, float(cmd[2]))
                conn.send(("joined", [v.summary() for v in new]))
            elif cmd[0] == "stop":
                await asyncio.gather(*(v.close(http, cfg.base_url) for v in viewers))
                _save(cfg.data_path, viewers)
                if receivers is not None:
                    receivers.close()
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
    """The arrival logs of every viewer, concatenated (the runner's input, same format
    whichever receive path kept them)."""
    import numpy as np

    logs = [v.log.arrays() for v in viewers]
    index = np.array([v.index for v in viewers], dtype=np.int32)

    def column(k: int, dtype: Any) -> Any:
        if not logs:
            return np.zeros(0, dtype)
        return np.concatenate([np.frombuffer(log[k], dtype=dtype) for log in logs])

    np.savez(
        path,
        viewer=np.repeat(index, [len(log[2]) for log in logs]),
        crc=column(0, np.uint32),
        length=column(1, np.uint16),
        t_ns=column(2, np.int64),
        frame_viewer=np.repeat(index, [len(log[3]) for log in logs]),
        frame_t=column(3, np.int64),
        frame_ts=column(4, np.uint32),
    )
