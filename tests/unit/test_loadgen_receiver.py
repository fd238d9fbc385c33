"""The bench viewers' native receive path (relaycast.loadgen._receiver) against its pure-Python
reference (receive_log.ReceiveLog behind the classification of ClientTransport._readable):
the same datagrams give the same logs, counters, handed-back datagrams and NACKs; real sockets
drained with recvmmsg give the same logs with kernel arrival times; hostile datagrams (random,
truncated, oversized, and authenticated packets with lying headers) crash nothing and still
agree. scripts/asan.sh receiver runs this file against an AddressSanitizer build."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycast.loadgen import receiver as native_receiver
from relaycast.loadgen.client_transport import SO_TIMESTAMPNS
from relaycast.loadgen.receive_log import KIND_VIDEO, MAX_STREAMS, ReceiveLog, kind_table
from relaycast.net.dtls import SrtpKeys
from relaycast.net.srtp import SrtpContext, SrtpError
from relaycast.rtp.codecs import is_keyframe_start

pytestmark = pytest.mark.skipif(
    not native_receiver.available(), reason="native receive path not built"
)

EXAMPLES = int(os.environ.get("RELAYCAST_FUZZ_EXAMPLES", "60"))
VIDEO_PT, AUDIO_PT = 96, 111
KINDS = kind_table({VIDEO_PT: "video", AUDIO_PT: "audio"})
VIDEO_SSRC, AUDIO_SSRC = 0x11223344, 0x55667788
PROFILES = {"SRTP_AEAD_AES_128_GCM": 28, "SRTP_AES128_CM_SHA1_80": 30}


def contexts(profile: str, seed: int = 1) -> tuple[SrtpContext, SrtpContext, SrtpContext]:
    """(sender, receiver for the reference, receiver for the C path): same keys."""
    rng = random.Random(seed)
    size = PROFILES[profile]
    key = bytes(rng.randrange(256) for _ in range(size))
    other = bytes(rng.randrange(256) for _ in range(size))
    sender = SrtpContext(SrtpKeys(profile, key, other))
    return (
        sender,
        SrtpContext(SrtpKeys(profile, other, key)),
        SrtpContext(SrtpKeys(profile, other, key)),
    )


@dataclass
class Reference:
    """ClientTransport._readable's classification + ReceiveLog, on one SRTP context."""

    rx: SrtpContext
    codec: str = "vp8"
    log: ReceiveLog = field(init=False)
    nacks: list[tuple[int, int, int]] = field(default_factory=list)
    back: list[bytes] = field(default_factory=list)
    auth_failures: int = 0
    replays: int = 0
    datagrams: int = 0
    bytes_in: int = 0

    def __post_init__(self) -> None:
        self.log = ReceiveLog(self.codec, KINDS, nack=lambda *a: self.nacks.append(a))

    def feed(self, data: bytes, t: int) -> None:
        truncated = len(data) > 2048
        data = data[:2048]
        self.datagrams += 1
        self.bytes_in += len(data)
        first = data[0] if data else 0
        if 127 < first < 192:
            if len(data) > 1 and 191 < data[1] < 224:
                self.back.append(data)
                return
            if len(data) < 12 or truncated:
                self.auth_failures += 1
                return
            try:
                plain = self.rx.unprotect(data)
            except SrtpError as exc:
                if "replay" in str(exc):
                    self.replays += 1
                else:
                    self.auth_failures += 1
                return
            except ValueError:  # longer than pylibsrtp's buffer
                self.auth_failures += 1
                return
            self.log.on_rtp(plain, t)
        elif first < 4 or 19 < first < 64:
            self.back.append(data)


class Native:
    """One slot of a C Receiver, fed datagram by datagram (no socket)."""

    def __init__(self, rx: SrtpContext, codec: str = "vp8", *, crc: str = "auto"):
        self.rx = rx
        self.receiver = native_receiver.new_receiver(crc=crc)
        self.slot = self.receiver.add(
            -1, native_receiver.srtp_context_address(rx._rx), native_receiver.CODECS[codec], KINDS
        )
        self.log = native_receiver.NativeLog(self.receiver, self.slot)
        self.nacks: list[tuple[int, int, int]] = []
        self.back: list[bytes] = []

    def feed(self, data: bytes, t: int) -> None:
        back, nacks, count = self.receiver.feed(self.slot, data, t)
        assert count == 1
        self.back += [d for s, d in back if s == self.slot]
        self.nacks += [(ssrc, first, n) for s, ssrc, first, n in nacks if s == self.slot]


def assert_same(ref: Reference, nat: Native, *, times: bool = True) -> None:
    """Same logs, bookkeeping, counters, handed-back datagrams and NACKs."""
    r, n = ref.log.arrays(), nat.log.arrays()
    assert list(n[0]) == list(r[0]), "crc"
    assert list(n[1]) == list(r[1]), "length"
    assert list(n[4]) == list(r[4]), "frame_ts"
    if times:
        assert list(n[2]) == list(r[2]), "t_ns"
        assert list(n[3]) == list(r[3]), "frame_t"
        assert nat.log.first_packet_ns == ref.log.first_packet_ns
        assert nat.log.first_key_start_ns == ref.log.first_key_start_ns
        assert nat.log.first_key_ns == ref.log.first_key_ns
    else:
        assert len(n[2]) == len(r[2]) and len(n[3]) == len(r[3])
        assert bool(nat.log.first_key_ns) == bool(ref.log.first_key_ns)
    assert nat.log.streams() == ref.log.streams()
    counts = nat.log.counts()
    assert counts["packets"] == ref.log.packets
    assert counts["auth_failures"] == ref.auth_failures
    assert counts["replays"] == ref.replays
    assert counts["malformed"] == ref.log.malformed
    assert counts["untracked"] == ref.log.untracked
    assert counts["datagrams"] == ref.datagrams
    assert counts["bytes_in"] == ref.bytes_in
    assert counts["log_failures"] == 0
    assert nat.back == ref.back
    assert nat.nacks == ref.nacks


# -- a realistic stream with every irregularity ------------------------------------------------


def rtp(
    seq: int,
    ts: int,
    ssrc: int,
    pt: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrc: int = 0,
    ext: bool = False,
    pad: int = 0,
) -> bytes:
    b0 = 0x80 | csrc | (0x10 if ext else 0) | (0x20 if pad else 0)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    out += b"".join(struct.pack("!I", 0xC0 + i) for i in range(csrc))
    if ext:
        out += b"\xbe\xde\x00\x01\x10\xaa\x00\x00"
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


def vp8_payload(rng: random.Random, *, start: bool, key: bool, size: int) -> bytes:
    if not start:
        return b"\x00" + rng.randbytes(size)
    return b"\x10" + bytes([0x00 if key else 0x01]) + rng.randbytes(size)


def stream(
    profile: str, seed: int, count: int = 1500
) -> tuple[SrtpContext, SrtpContext, list[bytes]]:
    """Protected datagrams of a video + audio stream starting just before a sequence wrap, with
    losses (NACKable and not), reordering, duplicates, tampering, padding, CSRCs, extensions,
    extra SSRCs past MAX_STREAMS, and STUN / DTLS / SRTCP / junk in between. Returns the two
    receiving contexts (reference, native) and the datagrams."""
    rng = random.Random(seed)
    sender, rx_ref, rx_nat = contexts(profile, seed)
    out: list[bytes] = []
    vseq, aseq, ts = 65300 + rng.randrange(100), rng.randrange(65536), rng.randrange(1 << 32)
    frame = 0
    previous: bytes | None = None
    extra_seq: dict[int, int] = {}
    vcount = 0
    for _ in range(count):
        roll = rng.random()
        if roll < 0.02:
            vseq += rng.choice([1, 2, 10, 63, 64, 70, 200])  # a loss, NACKable or not
        if roll < 0.05 and previous is not None:
            out.append(previous)  # a duplicate: libsrtp's replay check
        if 0.05 <= roll < 0.07:
            out.append(
                rng.choice([b"\x00\x01" + rng.randbytes(30), b"\x16\xfe\xfd" + rng.randbytes(40)])
            )
        if 0.07 <= roll < 0.08:
            out.append(sender.protect_rtcp(struct.pack("!BBHI", 0x80, 201, 1, 0xABCDEF01)))
        if 0.08 <= roll < 0.09:
            out.append(bytes([rng.choice([70, 100, 200, 255])]) + rng.randbytes(rng.randrange(40)))
        if 0.09 <= roll < 0.10:
            extra = 0x1000 + rng.randrange(MAX_STREAMS + 3)  # more SSRCs than are tracked
            extra_seq[extra] = extra_seq.get(extra, rng.randrange(60000)) + 1
            out.append(sender.protect(rtp(extra_seq[extra], 0, extra, VIDEO_PT, b"xx")))
        if rng.random() < 0.25:
            payload = rng.randbytes(rng.randrange(20, 160))
            pkt = rtp(aseq, ts, AUDIO_SSRC, AUDIO_PT, payload, ext=rng.random() < 0.5)
            aseq += 1
        else:
            in_frame = vcount % 6
            vcount += 1
            start = in_frame == 0
            if start:
                frame += 1
                ts = (ts + 3000) & 0xFFFFFFFF
            payload = vp8_payload(rng, start=start, key=frame % 5 == 3, size=rng.randrange(1300))
            pkt = rtp(
                vseq,
                ts,
                VIDEO_SSRC,
                VIDEO_PT,
                payload,
                marker=in_frame == 5,
                csrc=rng.choice([0, 0, 0, 1, 2]),
                ext=rng.random() < 0.3,
                pad=rng.choice([0, 0, 0, 0, 1, 4]),
            )
            vseq += 1
        data = sender.protect(pkt)
        if rng.random() < 0.01:
            tampered = bytearray(data)
            tampered[rng.randrange(12, len(tampered))] ^= 1 << rng.randrange(8)
            out.append(bytes(tampered))
        if rng.random() < 0.03 and out:  # swap with the one before (reordering)
            out.insert(len(out) - 1, data)
        else:
            out.append(data)
        previous = data
    return rx_ref, rx_nat, out


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("crc", ["builtin", "zlib"])
def test_same_logs_as_the_python_reference(profile: str, crc: str) -> None:
    rx_ref, rx_nat, items = stream(profile, seed=7)
    ref, nat = Reference(rx_ref), Native(rx_nat, crc=crc)
    t = time.time_ns()
    for k, data in enumerate(items):
        ref.feed(data, t + k * 1000)
        nat.feed(data, t + k * 1000)
    assert_same(ref, nat)
    # the stream exercised what it is meant to
    assert ref.log.packets > 1200
    assert ref.replays > 10 and ref.auth_failures > 3
    assert ref.nacks and ref.back and ref.log.untracked > 0 and ref.log.malformed == 0
    assert ref.log.first_key_ns > ref.log.first_key_start_ns > ref.log.first_packet_ns > 0
    video = next(s for s in ref.log.streams() if s[0] == VIDEO_SSRC)
    assert video[1] == KIND_VIDEO and video[3] > 65536  # wrapped
    assert len(ref.log.streams()) == MAX_STREAMS


def test_h264_keyframes_and_malformed_padding() -> None:
    sender, rx_ref, rx_nat = contexts("SRTP_AEAD_AES_128_GCM")
    ref, nat = Reference(rx_ref, "h264"), Native(rx_nat, "h264")
    packets = [
        rtp(1, 90, VIDEO_SSRC, VIDEO_PT, b"\x41\x9a" + bytes(50)),  # non-IDR slice
        rtp(2, 180, VIDEO_SSRC, VIDEO_PT, b"\x67\x42" + bytes(10)),  # SPS: a keyframe starts
        rtp(3, 180, VIDEO_SSRC, VIDEO_PT, b"\x7c\x05" + bytes(50)),  # FU-A middle
        rtp(4, 180, VIDEO_SSRC, VIDEO_PT, b"\x7c\x45" + bytes(50), marker=True),  # FU-A end
        # padding count larger than the packet: malformed, not logged
        rtp(5, 270, VIDEO_SSRC, VIDEO_PT, b"\x41" + bytes(5) + b"\xff")[:-1] + b"\xff",
    ]
    packets[4] = bytes([packets[4][0] | 0x20]) + packets[4][1:]
    for k, p in enumerate(packets):
        data = sender.protect(p)
        ref.feed(data, 1000 + k)
        nat.feed(data, 1000 + k)
    assert_same(ref, nat)
    assert nat.log.first_key_start_ns == 1001 and nat.log.first_key_ns == 1003
    assert nat.log.counts()["malformed"] == 1 and nat.log.packets == 4


@settings(max_examples=EXAMPLES * 5, deadline=None)
@given(codec=st.sampled_from(["vp8", "h264"]), payload=st.binary(max_size=24))
def test_keyframe_detection_matches_python(codec: str, payload: bytes) -> None:
    code = native_receiver.CODECS[codec]
    assert native_receiver._receiver.keyframe_start(code, payload) == is_keyframe_start(
        codec, payload
    )


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(data=st.binary(max_size=3000), offset=st.integers(0, 15))
def test_builtin_crc32_is_zlibs(data: bytes, offset: int) -> None:
    """Both built-in variants (carry-less multiplication, slicing-by-8), at every alignment."""
    data = bytes(offset) + data
    view = memoryview(data)[offset:]
    expected = zlib.crc32(view)
    assert native_receiver._receiver.crc32(view) == expected
    assert native_receiver._receiver.crc32(view, True) == expected
    assert native_receiver.crc32_address() != 0  # libz is loadable on the test machines


def test_builtin_crc32_every_length() -> None:
    rng = random.Random(5)
    for n in range(0, 400):
        data = rng.randbytes(n)
        assert native_receiver._receiver.crc32(data) == zlib.crc32(data), n


# -- hostile datagrams -------------------------------------------------------------------------

hostile_header = st.tuples(
    st.integers(0, 255),  # byte 0: version, P, X, CC
    st.integers(0, 255),  # byte 1: marker, payload type
    st.integers(0, 65535),
    st.binary(min_size=0, max_size=60),  # whatever follows the fixed header
    st.integers(0, 255),  # last byte (padding count when P is set)
)
hostile = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1400, max_size=3000),
    st.tuples(st.integers(128, 191), st.binary(max_size=40)).map(lambda t: bytes([t[0]]) + t[1]),
    st.tuples(st.sampled_from([0, 1, 2, 3, 20, 23, 63, 64]), st.binary(max_size=40)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    hostile_header.map(lambda h: ("protect", h)),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(items=st.lists(hostile, max_size=40), codec=st.sampled_from(["vp8", "h264"]))
def test_hostile_datagrams(items: list[object], codec: str) -> None:
    """Random datagrams, and authenticated packets whose header lies (CSRC count, extension
    length, padding count past the end): nothing crashes and both paths agree."""
    sender, rx_ref, rx_nat = contexts("SRTP_AEAD_AES_128_GCM", 3)
    ref, nat = Reference(rx_ref, codec), Native(rx_nat, codec)
    for k, item in enumerate(items):
        if isinstance(item, tuple):
            b0, b1, seq, rest, last = item[1]
            plain = struct.pack("!BBHII", 0x80 | (b0 & 0x3F), b1, seq, k, VIDEO_SSRC) + rest
            plain += bytes([last])
            try:
                data = sender.protect(plain)
            except (SrtpError, ValueError):  # libsrtp refuses a header past the end
                continue
        else:
            assert isinstance(item, bytes)
            data = item
        ref.feed(data, 5000 + k)
        nat.feed(data, 5000 + k)
    assert_same(ref, nat)


# -- real sockets: recvmmsg, kernel timestamps, hand-back, remove -------------------------------


def socket_pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.connect(rx.getsockname())
    rx.connect(tx.getsockname())
    return rx, tx


def drain_all(receiver: object) -> tuple[list[tuple[int, bytes]], list[object], int]:
    back: list[tuple[int, bytes]] = []
    nacks: list[object] = []
    total = 0
    for _ in range(50):
        b, n, count = receiver.drain(300)  # type: ignore[attr-defined]
        back += b
        nacks += n
        total += count
        if count == 0:
            break
    return back, nacks, total


def test_drains_many_sockets_with_kernel_times() -> None:
    receiver = native_receiver.new_receiver()
    rigs = []
    for v in range(6):
        rx_ref, rx_nat, items = stream("SRTP_AEAD_AES_128_GCM", seed=100 + v, count=120)
        rx_sock, tx_sock = socket_pair()
        slot = receiver.add(
            rx_sock.fileno(), native_receiver.srtp_context_address(rx_nat._rx), 1, KINDS
        )
        assert slot == v
        rigs.append((rx_sock, tx_sock, items, Reference(rx_ref), rx_nat))
    before = time.time_ns()
    for _, tx, items, ref, _ in rigs:
        for data in items:
            tx.send(data)
            ref.feed(data, 1)  # arrival times differ; 0 would mean "not yet"
    oversized = bytes([0x80, 0x60]) + bytes(2998)
    for _, tx, *_ in rigs:
        tx.send(oversized)
        tx.send(b"")
    for *_, ref, _ in rigs:
        ref.feed(oversized, 1)
        ref.feed(b"", 1)
    back, nacks, total = drain_all(receiver)
    after = time.time_ns()
    assert total == sum(len(items) + 2 for _, _, items, _, _ in rigs)
    for v, (_, _, _, ref, rx_nat) in enumerate(rigs):
        nat = Native.__new__(Native)
        nat.receiver, nat.slot, nat.rx = receiver, v, rx_nat
        nat.log = native_receiver.NativeLog(receiver, v)
        nat.back = [d for s, d in back if s == v]
        nat.nacks = [tuple(x[1:]) for x in nacks if x[0] == v]  # type: ignore[index]
        assert_same(ref, nat, times=False)
        t_ns = nat.log.arrays()[2]
        # the kernel's stamps (not taken at drain time): within the sends and the drain. Not
        # necessarily in order: a sender that migrates between cores mid-loop fills two per-CPU
        # backlogs, and a later-stamped datagram can reach the socket first (seen in CI)
        assert all(before <= t <= after for t in t_ns)
    # a removed slot's socket is no longer read; its logs stay
    receiver.remove(0)
    rigs[0][1].send(b"\x00\x01\x00\x00")
    assert drain_all(receiver)[2] == 0
    assert receiver.counts(0)[2] == rigs[0][3].log.packets
    receiver.close()
    with pytest.raises(ValueError):
        receiver.drain()
    for rx, tx, *_ in rigs:
        rx.close()
        tx.close()


def test_rejects_bad_arguments() -> None:
    receiver = native_receiver.new_receiver()
    ctx = contexts("SRTP_AEAD_AES_128_GCM")[1]
    addr = native_receiver.srtp_context_address(ctx._rx)
    with pytest.raises(ValueError):
        receiver.add(-1, 0, 1, KINDS)
    with pytest.raises(ValueError):
        receiver.add(-1, addr, 3, KINDS)
    with pytest.raises(ValueError):
        receiver.add(-1, addr, 1, KINDS[:100])
    with pytest.raises(OSError):
        receiver.add(10**6, addr, 1, KINDS)  # not an open descriptor
    with pytest.raises(IndexError):
        receiver.feed(0, b"x", 0)
    with pytest.raises(IndexError):
        receiver.logs(-1)
    with pytest.raises(ValueError):
        native_receiver._receiver.Receiver(0)
    assert len(receiver) == 0


@pytest.mark.parametrize("interval", [0.0, 0.01])
def test_receiver_set_on_an_event_loop(interval: float) -> None:
    """ReceiverSet drains on the loop (timer or readable epoll set) and hands STUN / SRTCP back
    to the slot's owner and NACKs to it, then stops reading a detached slot."""

    class Owner:
        def __init__(self) -> None:
            self.datagrams: list[bytes] = []
            self.nacks: list[tuple[int, int, int]] = []

        def on_datagram(self, data: bytes) -> None:
            self.datagrams.append(data)

        def on_nack(self, ssrc: int, first: int, count: int) -> None:
            self.nacks.append((ssrc, first, count))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        receivers = native_receiver.ReceiverSet(loop, interval=interval)
        sender, _, rx = contexts("SRTP_AEAD_AES_128_GCM")
        rx_sock, tx_sock = socket_pair()
        owner = Owner()
        slot = receivers.attach(owner, rx_sock.fileno(), rx._rx, "vp8", KINDS)
        stun = b"\x01\x01\x00\x00" + bytes(16)
        tx_sock.send(sender.protect(rtp(10, 0, VIDEO_SSRC, VIDEO_PT, b"\x10\x00abc")))
        tx_sock.send(sender.protect(rtp(15, 0, VIDEO_SSRC, VIDEO_PT, b"\x00abc", marker=True)))
        tx_sock.send(stun)
        await asyncio.sleep(0.1)
        assert owner.datagrams == [stun]
        assert owner.nacks == [(VIDEO_SSRC, 11, 4)]
        log = native_receiver.NativeLog(receivers.receiver, slot)
        assert log.packets == 2 and log.first_key_ns > 0
        receivers.detach(slot)
        tx_sock.send(stun)
        await asyncio.sleep(0.05)
        assert owner.datagrams == [stun]
        assert receivers.datagrams == 3
        receivers.close()
        rx_sock.close()
        tx_sock.close()

    asyncio.run(run())
