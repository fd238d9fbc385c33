"""How many SRTP packets per second one core of the load generator takes, native vs Python.

Both receive paths of the bench viewers are measured side by side in one process, on the same
datagrams, built from the real code:

* ``python``: ``ClientTransport._readable`` (``recvmsg`` with ``SO_TIMESTAMPNS``, AES-GCM through
  ``cryptography`` as the viewers use it) feeding ``ReceiveLog.on_rtp`` (crc32, length,
  arrival, sequence bookkeeping), one call per readable socket;
* ``native``: ``ReceiverSet.drain`` (relaycast.loadgen._receiver: epoll + ``recvmmsg`` +
  libsrtp ``srtp_unprotect`` + the same logs in C, one call for all sockets).

Each round, every viewer socket gets ``--queue`` SRTP packets (a 2.5 Mbps-like mix: 85 % video
of 1,150 bytes, 15 % audio of 160 bytes; fresh sequence numbers every round, so the replay check
passes) from a sender socket, then each path drains its sockets; only the drain is timed, as CPU
time of this thread (``time.thread_time``). The loopback delivery itself runs in the sender's
context (the server's core in a real bench) and is not counted, as it is not on the load core.
``--queue 100`` is a busy load core (many datagrams waiting per socket at each wake-up),
``--queue 4`` a lightly loaded one (a few per socket per call).

The server's side for comparison is ``--server-us`` µs of its core per datagram sent (3.0: the
native fan-out kernel, docs/benchmarks.md, ``bench/fanout.py --modes native``); "x server" is
how many times what one server core can send one load core can take (issue 8 asks for >= 2).

    python bench/receiver.py --viewers 50,200,500 --queue 100,4 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from relaycast.loadgen import receiver as native_receiver
from relaycast.loadgen.client_transport import (
    SO_TIMESTAMPNS,
    ClientTransport,
    GcmRtpReceiver,
)
from relaycast.loadgen.receive_log import ReceiveLog, kind_table
from relaycast.net.dtls import DtlsCertificate, SrtpKeys
from relaycast.net.srtp import SrtpContext

PROFILE = "SRTP_AEAD_AES_128_GCM"
KINDS = kind_table({96: "video", 111: "audio"})


def _socket(rcvbuf: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class Rig:
    """N viewers per path, each with its socket, and the sender that fills them."""

    def __init__(self, viewers: int, rcvbuf: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        self.loop = asyncio.new_event_loop()
        self.viewers = viewers
        key = rng.randbytes(28)
        self.keys = SrtpKeys(PROFILE, rng.randbytes(28), key)
        self.sender = SrtpContext(SrtpKeys(PROFILE, key, rng.randbytes(28)))
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        certificate = DtlsCertificate()
        # Python path: the viewers' own transport and log
        self.transports: list[ClientTransport] = []
        for _ in range(viewers):
            log = ReceiveLog("vp8", KINDS)
            t = ClientTransport(certificate, on_rtp=log.on_rtp, rcvbuf=rcvbuf)
            t.sock.connect(self.tx.getsockname())
            t.srtp = SrtpContext(self.keys)
            t._rtp_unprotect = GcmRtpReceiver(self.keys.remote_key).unprotect
            self.transports.append(t)
        # native path: one ReceiverSet over its own sockets
        self.receivers = (
            native_receiver.ReceiverSet(self.loop) if native_receiver.available() else None
        )
        self.native_socks: list[socket.socket] = []
        self.native_srtp: list[SrtpContext] = []
        if self.receivers is not None:
            for _ in range(viewers):
                s = _socket(rcvbuf)
                s.connect(self.tx.getsockname())
                ctx = SrtpContext(self.keys)
                self.receivers.attach(_Owner(), s.fileno(), ctx._rx, "vp8", KINDS)
                self.native_socks.append(s)
                self.native_srtp.append(ctx)
        self.vseq = rng.randrange(65536)
        self.aseq = rng.randrange(65536)
        self.ts = 0
        self.payload_v = rng.randbytes(1150)
        self.payload_a = rng.randbytes(160)
        self.rng = rng

    def batch(self, count: int) -> list[bytes]:
        """``count`` protected packets with fresh sequence numbers (the same for every viewer)."""
        out = []
        for i in range(count):
            if self.rng.random() < 0.15:
                hdr = struct.pack("!BBHII", 0x80, 111, self.aseq & 0xFFFF, self.ts, 0xA0D10)
                self.aseq += 1
                out.append(self.sender.protect(hdr + self.payload_a))
            else:
                marker = 0x80 if i % 5 == 4 else 0
                hdr = struct.pack("!BBHII", 0x80, 96 | marker, self.vseq & 0xFFFF, self.ts, 0xF1D)
                self.vseq += 1
                out.append(self.sender.protect(hdr + self.payload_v))
            self.ts = (self.ts + 300) & 0xFFFFFFFF
        return out

    def fill(self, datagrams: list[bytes], python: bool) -> None:
        targets = (
            [t.sock.getsockname() for t in self.transports]
            if python
            else [s.getsockname() for s in self.native_socks]
        )
        send = self.tx.sendto
        for addr in targets:
            for d in datagrams:
                send(d, addr)

    def drain_python(self) -> int:
        before = sum(len(t.on_rtp.__self__.t_ns) for t in self.transports)  # type: ignore[attr-defined]
        for t in self.transports:
            t._readable()
        after = sum(len(t.on_rtp.__self__.t_ns) for t in self.transports)  # type: ignore[attr-defined]
        return after - before

    def drain_native(self) -> int:
        assert self.receivers is not None
        total = 0
        while True:
            n = self.receivers.drain()
            total += n
            if n == 0:
                return total

    def close(self) -> None:
        for t in self.transports:
            t.sock.close()
        if self.receivers is not None:
            self.receivers.close()
        for s in self.native_socks:
            s.close()
        self.tx.close()
        self.loop.close()


class _Owner:
    def on_datagram(self, data: bytes) -> None:
        pass

    def on_nack(self, ssrc: int, first: int, count: int) -> None:
        pass


def measure(rig: Rig, queue: int, rounds: int, modes: list[str]) -> dict[str, list[float]]:
    """Packets per CPU-second per mode, one value per round (modes alternate within a round)."""
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        datagrams = rig.batch(queue)
        for mode in modes:
            python = mode == "python"
            rig.fill(datagrams, python)
            time.sleep(0.02)  # let loopback delivery finish
            t0 = time.thread_time_ns()
            got = rig.drain_python() if python else rig.drain_native()
            cpu = time.thread_time_ns() - t0
            expected = queue * rig.viewers
            if got != expected:
                print(f"  warning: {mode} received {got} of {expected} (socket drops?)")
            rates[mode].append(got / (cpu / 1e9) if cpu else 0.0)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="50,200,500")
    parser.add_argument("--queue", default="100,16,4", help="datagrams per socket per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-us", type=float, default=3.0)
    parser.add_argument("--rcvbuf", type=int, default=1 << 20)
    args = parser.parse_args()
    modes = ["python"] + (["native"] if native_receiver.available() else [])
    if "native" not in modes:
        print("native receive path not built: python setup.py build_ext --inplace")
    server_pps = 1e6 / args.server_us
    print(
        f"receive path, packets per CPU-second of one core (median of {args.rounds} rounds); "
        f"server core: {server_pps / 1e3:.0f} k pkt/s ({args.server_us} µs per datagram)"
    )
    header = f"{'viewers':>7} {'queue':>5} {'python kpps':>11} {'native kpps':>11} "
    header += f"{'native/py':>9} {'py x server':>11} {'native x server':>15} {'native µs':>9}"
    print(header)
    last = None
    for viewers in [int(v) for v in args.viewers.split(",")]:
        rig = Rig(viewers, args.rcvbuf)
        try:
            for queue in [int(q) for q in args.queue.split(",")]:
                rates = measure(rig, queue, args.rounds, modes)
                py = statistics.median(rates["python"])
                nat = statistics.median(rates["native"]) if "native" in rates else float("nan")
                print(
                    f"{viewers:>7} {queue:>5} {py / 1e3:>11.0f} {nat / 1e3:>11.0f} "
                    f"{nat / py:>8.1f}x {py / server_pps:>10.2f}x {nat / server_pps:>14.2f}x "
                    f"{1e6 / nat:>9.2f}"
                )
                last = nat / server_pps
        finally:
            rig.close()
    if last is not None:
        print(f"native_x_server={last:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
