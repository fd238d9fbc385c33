"""Peers for the attacker's tests (tests/integration/test_attacks.py) and the hardening benches.

* :class:`LivePublisher`: the load generator's synthetic WHIP publisher (a real VP8 clip paced in
  real time) in its own process, so a busy test process cannot disturb the stream's timing.
* :class:`Watcher`: a WHEP viewer over our ClientTransport (ICE, DTLS, SRTP on one UDP socket)
  that logs every RTP packet it receives (SSRC, sequence number, kernel arrival time, size),
  classifies a packet whose extended sequence number is not above the newest one already seen as
  a retransmission, captures every datagram it sends and lets a test send crafted ones (RTCP
  NACKs, STUN, DTLS garbage) from its own validated address.
* STUN helpers to tamper with captured Binding requests, a raw-socket sender that spoofs a UDP
  source address (root only), and a plain socket that counts what it receives.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import hmac
import itertools
import multiprocessing
import os
import secrets
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from relaycast.loadgen.client_transport import (
    ClientTransport,
    RemoteDescription,
    build_offer,
    parse_answer,
)
from relaycast.loadgen.media_clip import load_clip
from relaycast.loadgen.publisher import PublisherConfig, publisher_process
from relaycast.net import stun
from relaycast.net.dtls import DtlsCertificate
from relaycast.rtp.rtcp import RtcpNack

#: the stream every attack test watches: 640x360 VP8 at 1.5 Mbit/s (~150 video packets/s), a
#: keyframe every second; encoded once and cached (~/.cache/relaycast/bench)
CLIP_ARGS: dict[str, Any] = {
    "codec": "vp8",
    "bitrate": 1_500_000,
    "width": 640,
    "height": 360,
    "fps": 30,
    "keyframe_interval": 1.0,
    "duration": 10.0,
}
_RTP = struct.Struct("!BBHII")
FINGERPRINT_XOR = 0x5354554E


# -- the publisher --------------------------------------------------------------------------------


class LivePublisher:
    """``publisher_process`` (loadgen) streaming ``CLIP_ARGS`` to ``/whip/{stream}``."""

    def __init__(self, base_url: str, key: str, stream: str = "live", **clip: Any) -> None:
        self.clip_args = {**CLIP_ARGS, **clip}
        self.video_bitrate = load_clip(**self.clip_args).video_bitrate  # encode in the parent
        self._tmp = tempfile.TemporaryDirectory(prefix="relaycast-attack-pub-")
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        cfg = PublisherConfig(
            base_url, stream, key, self.clip_args, os.path.join(self._tmp.name, "send.npz")
        )
        self._proc = ctx.Process(target=publisher_process, args=(cfg, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(60):
            self.close()
            raise RuntimeError("the publisher did not start within 60 s")
        status, info = self._conn.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"publisher: {info}")
        self.summary: dict[str, Any] = {}

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send("stop")
            if self._conn.poll(20):
                with contextlib.suppress(EOFError):
                    msg = self._conn.recv()
                    if msg[0] == "done":
                        self.summary = msg[1]
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._tmp.cleanup()


# -- the viewer -----------------------------------------------------------------------------------


@dataclass
class _Ssrc:
    kind: str
    max_ext: int
    seen: set[int] = field(default_factory=set)


class Watcher:
    """A WHEP viewer that records what it receives and what it sends.

    ``decrypt=False`` skips SRTP decryption of RTP (the header is in the clear, and the socket is
    connected to the server): an attacker's viewer that must count a flood of retransmissions
    without spending a core on AES-GCM.  ``nack=True`` answers gaps like an honest player.
    ``before_send(data) -> list[bytes]`` may replace each outgoing datagram with others (e.g.
    garbage before the first DTLS flight)."""

    def __init__(
        self,
        certificate: DtlsCertificate | None = None,
        *,
        decrypt: bool = True,
        nack: bool = False,
        rcvbuf: int = 4 << 20,
        before_send: Callable[[bytes], list[bytes]] | None = None,
    ) -> None:
        self.certificate = certificate or DtlsCertificate()
        self.transport = ClientTransport(
            self.certificate, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp, rcvbuf=rcvbuf
        )
        self.decrypt = decrypt
        self.auto_nack = nack
        self.before_send = before_send
        self.ssrc = secrets.randbits(32) | 1
        self.sent: list[bytes] = []
        self.kinds: dict[int, str] = {}
        self.remote: RemoteDescription | None = None
        self.location: str | None = None
        self.answer = ""
        # per packet: (kind index 0 video / 1 audio, ssrc, seq, arrival ns, size, retransmission)
        self.log: list[tuple[int, int, int, int, int, bool]] = []
        self.ssrcs: dict[int, _Ssrc] = {}
        self.rtcp_in = 0
        self._raw_send = self.transport.send
        self.transport.send = self._send  # type: ignore[method-assign]

    # -- sending --

    def _send(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        out = [data] if self.before_send is None else self.before_send(data)
        for d in out:
            self._raw_send(d)

    def send_raw(self, data: bytes) -> None:
        """A datagram from this viewer's validated address, past the capture hook."""
        self._raw_send(data)

    def send_rtcp(self, plain: bytes) -> None:
        self.transport.send_rtcp(plain)

    def nack(self, seqs: list[int], media_ssrc: int | None = None, copies: int = 1) -> int:
        """One SRTCP compound with ``copies`` generic NACKs naming ``seqs``; returns its size."""
        ssrc = self.video_ssrc if media_ssrc is None else media_ssrc
        one = bytes(RtcpNack(self.ssrc, ssrc, [s & 0xFFFF for s in seqs]))
        self.transport.send_rtcp(one * copies)
        return len(one) * copies

    def stun_sent(self) -> list[bytes]:
        return [d for d in self.sent if d and d[0] < 4]

    # -- receiving --

    def _on_rtp(self, data: bytes, arrival_ns: int) -> None:
        _b0, b1, seq, _ts, ssrc = _RTP.unpack_from(data, 0)
        state = self.ssrcs.get(ssrc)
        if state is None:
            kind = self.kinds.get(b1 & 0x7F, "?")
            state = self.ssrcs[ssrc] = _Ssrc(kind, seq - 1)
        prev = state.max_ext
        ext = prev + ((seq - prev + 0x8000) & 0xFFFF) - 0x8000
        retransmission = ext <= prev
        if not retransmission:
            if self.auto_nack and state.kind == "video" and 1 < ext - prev <= 64:
                self.nack(list(range(prev + 1, ext)), ssrc)
            state.max_ext = ext
        state.seen.add(ext)
        self.log.append(
            (0 if state.kind == "video" else 1, ssrc, ext, arrival_ns, len(data), retransmission)
        )

    def _on_rtcp(self, plain: bytes) -> None:
        self.rtcp_in += 1

    # -- session --

    async def join(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        stream: str = "live",
        *,
        connect: bool = True,
        timeout: float = 10.0,
    ) -> None:
        t = self.transport
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.certificate.fingerprint,
            local=t.local,
            direction="recvonly",
            video_codec="vp8",
        )
        async with http.post(
            f"{base_url}/whep/{stream}", data=offer, headers={"Content-Type": "application/sdp"}
        ) as resp:
            self.answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST answered {resp.status}: {self.answer[:300]}")
            location = resp.headers["Location"]
            self.location = location if location.startswith("http") else base_url + location
        self.remote = parse_answer(self.answer)
        self.kinds = self.remote.payload_kinds
        if connect:
            t.start(self.remote)
            await t.wait_connected(timeout)
            if not self.decrypt:
                t._rtp_unprotect = _identity

    async def close(self, http: aiohttp.ClientSession | None = None) -> None:
        self.transport.close()
        if http is not None and self.location:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.delete(self.location, timeout=aiohttp.ClientTimeout(total=5)):
                    pass

    # -- what arrived --

    @property
    def video_ssrc(self) -> int:
        for ssrc, s in self.ssrcs.items():
            if s.kind == "video":
                return ssrc
        raise LookupError("no video received yet")

    def newest(self, kind: str = "video") -> int:
        """The newest extended sequence number of ``kind``."""
        return max(s.max_ext for s in self.ssrcs.values() if s.kind == kind)

    def count(self, since_ns: int = 0, kind: str | None = None) -> int:
        k = None if kind is None else (0 if kind == "video" else 1)
        return sum(1 for e in self.log if e[3] >= since_ns and (k is None or e[0] == k))

    def retransmissions(self, since_ns: int = 0, until_ns: int = 1 << 62) -> tuple[int, int]:
        """(packets, bytes) that arrived in the window and were not new."""
        n = b = 0
        for e in self.log:
            if e[5] and since_ns <= e[3] < until_ns:
                n += 1
                b += e[4]
        return n, b

    def delivery(self, since_ns: int, until_ns: int) -> tuple[float, float]:
        """(share of the sequence numbers sent in the window that arrived (at any time), the
        longest gap between two video arrivals in the window in ms).  The window's sequence
        range per SSRC is from the first to the last new packet that arrived in it."""
        expected = got = 0
        for ssrc, state in self.ssrcs.items():
            firsts = [e[2] for e in self.log if e[1] == ssrc and since_ns <= e[3] < until_ns]
            if not firsts:
                continue
            lo, hi = min(firsts), max(firsts)
            expected += hi - lo + 1
            got += sum(1 for s in range(lo, hi + 1) if s in state.seen)
        times = sorted(e[3] for e in self.log if e[0] == 0 and since_ns <= e[3] < until_ns)
        gap = max((b - a for a, b in itertools.pairwise(times)), default=10**12)
        return (got / expected if expected else 0.0), gap / 1e6


def _identity(data: bytes) -> bytes:
    return data


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


# -- STUN -----------------------------------------------------------------------------------------


def binding_request(
    server_ufrag: str,
    client_ufrag: str,
    server_pwd: str,
    *,
    use_candidate: bool = False,
    fingerprint: bool = True,
) -> bytes:
    """A Binding request as a controlling agent sends it (RFC 8445 §7.2.5), written out here
    byte by byte rather than with relaycast's encoder."""
    tid = secrets.token_bytes(12)
    attrs = _attr(stun.USERNAME, f"{server_ufrag}:{client_ufrag}".encode())
    attrs += _attr(stun.PRIORITY, struct.pack("!I", 1853824767))
    attrs += _attr(stun.ICE_CONTROLLING, secrets.token_bytes(8))
    if use_candidate:
        attrs += _attr(stun.USE_CANDIDATE, b"")
    header = struct.pack("!HHI12s", 0x0001, len(attrs) + 24, stun.MAGIC_COOKIE, tid)
    mac = hmac.new(server_pwd.encode(), header + attrs, hashlib.sha1).digest()
    msg = header + attrs + _attr(stun.MESSAGE_INTEGRITY, mac)
    return add_fingerprint(msg) if fingerprint else msg


def _attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def _with_length(msg: bytes) -> bytes:
    return msg[:2] + struct.pack("!H", len(msg) - 20) + msg[4:]


def add_fingerprint(msg: bytes) -> bytes:
    """Append FINGERPRINT (RFC 8489 §14.7): a CRC anyone can compute, no secret involved."""
    with_room = _with_length(msg + b"\0" * 8)[: len(msg)]
    crc = binascii.crc32(with_room) ^ FINGERPRINT_XOR
    return _with_length(msg + _attr(stun.FINGERPRINT, crc.to_bytes(4, "big")))


def strip_after_integrity(msg: bytes) -> bytes:
    """The request up to and including MESSAGE-INTEGRITY (drops FINGERPRINT)."""
    pos = 20
    while pos + 4 <= len(msg):
        kind, length = struct.unpack_from("!HH", msg, pos)
        end = pos + 4 + ((length + 3) & ~3)
        if kind == stun.MESSAGE_INTEGRITY:
            return _with_length(msg[:end])
        pos = end
    raise ValueError("no MESSAGE-INTEGRITY")


def append_use_candidate(msg: bytes, *, fingerprint: bool) -> bytes:
    """The finding's tampering: USE-CANDIDATE after MESSAGE-INTEGRITY, length fixed, and a
    freshly computed FINGERPRINT when asked."""
    tampered = _with_length(strip_after_integrity(msg) + _attr(stun.USE_CANDIDATE, b""))
    return add_fingerprint(tampered) if fingerprint else tampered


def has_use_candidate(msg: bytes) -> bool:
    try:
        return stun.StunMessage.parse(msg).get(stun.USE_CANDIDATE) is not None
    except ValueError:
        return False


# -- raw sockets ----------------------------------------------------------------------------------


class Listener:
    """A plain UDP socket (the attacker's address B) counting what arrives by RFC 7983 range."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.media = self.dtls = self.stun = self.other = 0

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            first = data[0] if data else 255
            if 127 < first < 192:
                self.media += 1
            elif 19 < first < 64:
                self.dtls += 1
            elif first < 4:
                self.stun += 1
            else:
                self.other += 1

    def close(self) -> None:
        self.sock.close()


def spoofed_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
    """Send ``payload`` from a forged source address (raw IPv4, needs CAP_NET_RAW): what an
    off-path attacker on a network without source-address validation can do."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload  # no checksum
    total = 20 + len(udp)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        secrets.randbits(16),
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    checksum = _ip_checksum(ip)
    ip = ip[:10] + struct.pack("!H", checksum) + ip[12:]
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(ip + udp, (dst[0], 0))


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def can_spoof() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
    except OSError:
        return False
    return True


# -- DTLS garbage ---------------------------------------------------------------------------------


def dtls_record(content_type: int, epoch: int, seq: int, body: bytes) -> bytes:
    """A DTLS 1.2 record header (RFC 6347 §4.1) around ``body``."""
    return (
        struct.pack("!BHH", content_type, 0xFEFD, epoch)
        + seq.to_bytes(6, "big")
        + struct.pack("!H", len(body))
        + body
    )


def garbage_records() -> dict[str, bytes]:
    """Malformed records an attacker (or a broken middlebox) may slip into a handshake."""
    hs_garbage = bytes([1]) + (300).to_bytes(3, "big") + os.urandom(40)  # ClientHello that lies
    return {
        "handshake-garbage-body": dtls_record(22, 0, 0, os.urandom(64)),
        "handshake-bad-length": dtls_record(22, 0, 1, hs_garbage),
        "truncated-header": b"\x16\xfe\xfd\x00\x00",
        "length-past-end": dtls_record(22, 0, 2, os.urandom(20))[:-10],
        "appdata-epoch1": dtls_record(23, 1, 0, os.urandom(48)),
        "unknown-type-63": bytes([63]) + os.urandom(30),
    }
