"""The native fan-out kernel against the Python path: same datagrams, same counters.

Two identical rigs (same viewer SRTP keys, same random offsets, a frozen clock) forward the same
packets, one through the Python path (DownTrack.send -> MediaSink.send_rtp) and one through the
native kernel (relaycast/native); every viewer's datagrams are captured on real loopback sockets
and must be equal byte for byte (identical SRTP contexts give identical ciphertext for identical
input sequences), and decrypt with the viewer's key.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

import relaycast.media.downtrack as downtrack_module
from relaycast import native
from relaycast.media.downtrack import LIVE, DownTrack, ExtLayout
from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import ServerCounters, StreamCounters
from relaycast.media.track import Track
from relaycast.net.dtls import SrtpKeys
from relaycast.net.sink import MediaSink
from relaycast.net.srtp import SrtpContext
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.sdp import Codec
from relaycast.sdp.negotiate import (
    URI_AUDIO_LEVEL,
    URI_SDES_MID,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
)

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernel not built")

PROFILES = {
    "SRTP_AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "SRTP_AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
}
SOURCE_IDS = {URI_SDES_MID: 4, URI_TRANSPORT_CC: 3, URI_AUDIO_LEVEL: 1, URI_VIDEO_ORIENTATION: 7}
LAYOUTS = {
    "none": ExtLayout(()),
    "mid": ExtLayout(((9, URI_SDES_MID, b"v1"),)),
    "mid+level+orientation": ExtLayout(
        ((1, URI_SDES_MID, b"0"), (5, URI_AUDIO_LEVEL, None), (13, URI_VIDEO_ORIENTATION, None))
    ),
    "two-byte": ExtLayout(((20, URI_SDES_MID, b"x" * 17), (5, URI_AUDIO_LEVEL, None))),
}
CODECS = {
    "vp8": Codec(96, "VP8", 90000),
    "h264": Codec(
        102,
        "H264",
        90000,
        fmtp={
            "profile-level-id": "42e01f",
            "packetization-mode": "1",
            "level-asymmetry-allowed": "1",
        },
    ),
    "opus": Codec(111, "opus", 48000, channels=2),
}


class FrozenTime:
    """The downtrack module's clock: a publisher switch's timestamp gap is the same in both
    rigs."""

    @staticmethod
    def monotonic() -> float:
        return 1000.0


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(downtrack_module, "time", FrozenTime)
    yield


def payload_for(codec: str, index: int, size: int, keyframe: bool) -> bytes:
    rng = random.Random(index * 7919 + size)
    body = bytes(rng.getrandbits(8) for _ in range(max(size, 0)))
    if codec == "vp8":
        head = bytes([0x10, 0x00 if keyframe else 0x01])
    elif codec == "h264":
        head = bytes([0x65 if keyframe else 0x41])  # IDR / non-IDR slice NAL
    else:
        head = bytes([0xFC])  # an Opus TOC byte
    return (head + body)[: max(size, 1)]


def source_packet(
    seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, pt: int, level: int
) -> RtpPacket:
    profile, block = build_extensions(
        [(4, b"1"), (3, struct.pack("!H", seq & 0xFFFF)), (1, bytes([level])), (7, b"\x01")]
    )
    wire = (
        struct.pack("!BBHII", 0x90, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
        + struct.pack("!HH", profile, len(block) // 4)
        + block
        + payload
    )
    return RtpPacket.parse(wire)


@dataclass
class Viewer:
    downtrack: DownTrack
    sink: MediaSink
    keys: SrtpKeys
    receiver: socket.socket


class Rig:
    """A Forwarder, its source Track and viewers whose sinks send to loopback receivers."""

    def __init__(
        self,
        kind: str,
        codec: str,
        use_native: bool,
        keys: Sequence[SrtpKeys],
        layouts: Sequence[str],
        seed: int,
    ) -> None:
        self.rng = random.Random(seed)
        self.kind = kind
        self.codec = codec
        self.forwarder = Forwarder(kind, use_native=use_native)
        self.server = ServerCounters()
        self.sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sender.bind(("127.0.0.1", 0))
        self.sender.setblocking(False)
        self.viewers: list[Viewer] = []
        self.track: Track | None = None
        for index, key in enumerate(keys):
            receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            receiver.bind(("127.0.0.1", 0))
            receiver.setblocking(False)
            srtp = SrtpContext(key)
            sink = MediaSink(
                protect=srtp.protect,
                protect_rtcp=srtp.protect_rtcp,
                sendto=self.sender.sendto,
                addr=receiver.getsockname(),
                stream=StreamCounters(),
                server=self.server,
                srtp=srtp,
            )
            downtrack = DownTrack(
                kind=kind,
                forwarder=self.forwarder,
                ssrc=0x10000000 + index,
                rtx_ssrc=None,
                payload_types={"vp8": 120, "opus": 109, "h264/42e01f": 121}
                | {k: 100 + n for n, k in enumerate(self._keys())},
                rtx_payload_types={},
                clock_rate=90000 if kind == "video" else 48000,
                layout=LAYOUTS[layouts[index % len(layouts)]],
                cname=f"viewer{index}",
            )
            self.viewers.append(Viewer(downtrack, sink, key, receiver))

    def _keys(self) -> list[str]:
        from relaycast.sdp import codec_key

        return [codec_key(c) for c in CODECS.values()]

    def randbits(self, bits: int) -> int:
        return self.rng.getrandbits(bits)

    def publish(self, ssrc: int) -> None:
        codec = CODECS[self.codec]
        self.track = Track(
            kind=self.kind,
            codec=codec,
            ssrc=ssrc,
            sender_ssrc=1,
            rtcp_fb=["nack", "nack pli"],
            ext_ids=dict(SOURCE_IDS),
            forwarder=self.forwarder,
            send_rtcp=lambda data: None,
            keyframe_interval=1.0,
        )
        self.forwarder.attach_source(self.track)

    def connect(self) -> None:
        for viewer in self.viewers:
            viewer.downtrack.connect(viewer.sink)

    def forward(self, packet: RtpPacket, keyframe: bool) -> None:
        self.forwarder.forward(packet, keyframe, 0.0)

    def drain(self) -> list[list[bytes]]:
        out = []
        for viewer in self.viewers:
            got = []
            while True:
                try:
                    got.append(viewer.receiver.recv(4096))
                except BlockingIOError:
                    break
            out.append(got)
        return out

    def counters(self) -> list[tuple[int, ...]]:
        return [
            (
                v.downtrack.packets_sent,
                v.downtrack.payload_bytes,
                v.downtrack.send_errors,
                v.downtrack.keyframes_sent,
                v.sink.packets,
                v.sink.bytes,
                v.sink.errors,
            )
            for v in self.viewers
        ]

    def close(self) -> None:
        self.sender.close()
        for viewer in self.viewers:
            viewer.receiver.close()


def make_keys(profile: str, count: int) -> list[SrtpKeys]:
    length = PROFILES[profile][1]
    return [
        SrtpKeys(profile, secrets.token_bytes(length), secrets.token_bytes(length))
        for _ in range(count)
    ]


Step = tuple[str, int, int, int, bool, bool, int]  # ("pkt", seq, ts, size, marker, key, level)


def run_both(
    monkeypatch: pytest.MonkeyPatch,
    *,
    kind: str,
    codec: str,
    profile: str,
    layouts: Sequence[str],
    viewers: int,
    script: Sequence[tuple[str, ...] | Step],
) -> tuple[list[list[bytes]], Rig, Rig]:
    """Play ``script`` through a Python rig and a native rig; returns the datagrams (after
    asserting them equal) and both rigs (closed by the caller)."""
    keys = make_keys(profile, viewers)
    seed = secrets.randbits(32)
    results = []
    rigs = []
    for use_native in (False, True):
        rig = Rig(kind, codec, use_native, keys, layouts, seed)
        monkeypatch.setattr(secrets, "randbits", rig.randbits)
        rigs.append(rig)
        datagrams: list[list[bytes]] = [[] for _ in range(viewers)]
        ssrc = 0x5000
        rig.connect()
        for step in script:
            if step[0] == "publish":
                ssrc += 1
                rig.publish(ssrc)
                continue
            _, seq, ts, size, marker, keyframe, level = step
            assert rig.track is not None
            payload = payload_for(codec, int(seq), int(size), bool(keyframe))
            packet = source_packet(
                int(seq), int(ts), ssrc, payload, bool(marker), rig.track.payload_type, int(level)
            )
            rig.forward(packet, bool(keyframe))
            for index, got in enumerate(rig.drain()):
                datagrams[index] += got
        monkeypatch.undo()
        monkeypatch.setattr(downtrack_module, "time", FrozenTime)
        results.append(datagrams)
    python, native_ = results
    assert [len(d) for d in native_] == [len(d) for d in python]
    for index in range(viewers):
        assert native_[index] == python[index], f"viewer {index} differs"
    assert rigs[1].counters() == rigs[0].counters()
    assert rigs[1].server.send_errors == rigs[0].server.send_errors
    return python, rigs[0], rigs[1]


def stream(
    first_seq: int, first_ts: int, count: int, *, kind: str, sizes: Sequence[int] = (1100,)
) -> list[Step]:
    steps: list[Step] = []
    step_ts = 3000 if kind == "video" else 960
    for n in range(count):
        keyframe = n % 20 == 0
        steps.append(
            (
                "pkt",
                (first_seq + n) & 0xFFFF,
                (first_ts + (n // 3) * step_ts) & 0xFFFFFFFF,
                sizes[n % len(sizes)],
                n % 3 == 2,
                keyframe,
                n % 128,
            )
        )
    return steps


def decrypt_all(viewer_keys: SrtpKeys, datagrams: list[bytes]) -> list[RtpPacket]:
    policy = Policy(
        key=viewer_keys.local_key,
        ssrc_type=Policy.SSRC_ANY_INBOUND,
        srtp_profile=PROFILES[viewer_keys.profile][0],
    )
    session = Session(policy=policy)
    # pylibsrtp's unprotect buffer is 1500 bytes: check the packets that fit it
    return [RtpPacket.parse(session.unprotect(d)) for d in datagrams if len(d) <= 1500]


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize(
    ("kind", "codec"), [("video", "vp8"), ("video", "h264"), ("audio", "opus")]
)
def test_same_datagrams_as_the_python_path(
    monkeypatch: pytest.MonkeyPatch, profile: str, kind: str, codec: str
) -> None:
    script: list[tuple[str, ...] | Step] = [("publish",)]
    script += stream(65500, 0xFFFFF000, 80, kind=kind, sizes=(1100, 17, 1200, 1))  # wraps
    script += [("publish",)]  # a new publisher: new SSRC, sequence and timestamps
    script += stream(12345, 777, 50, kind=kind, sizes=(900, 1800, 60))
    python, prig, nrig = run_both(
        monkeypatch,
        kind=kind,
        codec=codec,
        profile=profile,
        layouts=list(LAYOUTS),
        viewers=len(LAYOUTS) + 1,
        script=script,
    )
    try:
        # the kernel did serve them (not only the keyframes that made them LIVE)
        assert all(v.downtrack.state is LIVE for v in nrig.viewers)
        assert all(v.downtrack.native is not None for v in nrig.viewers)
        assert all(v.downtrack.native is None for v in prig.viewers)
        for viewer, datagrams in zip(prig.viewers, python, strict=True):
            packets = decrypt_all(viewer.keys, datagrams)
            assert packets and all(p.ssrc == viewer.downtrack.ssrc for p in packets)
            seqs = [struct.unpack_from("!H", d, 2)[0] for d in datagrams]  # SRTP: header clear
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    finally:
        prig.close()
        nrig.close()


@pytest.mark.usefixtures("deterministic")
def test_too_long_packets_count_as_errors_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    script: list[tuple[str, ...] | Step] = [("publish",)]
    script += stream(100, 5000, 30, kind="video", sizes=(1000, 1880, 1890, 1900, 4000))
    _, prig, nrig = run_both(
        monkeypatch,
        kind="video",
        codec="vp8",
        profile="SRTP_AEAD_AES_128_GCM",
        layouts=["none", "mid+level+orientation", "two-byte"],
        viewers=3,
        script=script,
    )
    try:
        assert sum(v.downtrack.send_errors for v in nrig.viewers) > 0
        assert nrig.server.send_errors == prig.server.send_errors > 0
    finally:
        prig.close()
        nrig.close()


@pytest.mark.usefixtures("deterministic")
def test_viewers_leave_and_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """A viewer that closes leaves the kernel with its counts; one whose address moves gets its
    packets at the new address."""
    keys = make_keys("SRTP_AES128_CM_SHA1_80", 4)
    rig = Rig("audio", "opus", True, keys, ["mid"], 1)
    try:
        rig.publish(77)
        rig.connect()
        for step in stream(1, 1, 5, kind="audio"):
            _, seq, ts, size, marker, keyframe, level = step
            rig.forward(source_packet(seq, ts, 77, b"o" * size, marker, 111, level), keyframe)
        assert len(rig.forwarder.native or ()) == 4
        gone = rig.viewers[1]
        gone.downtrack.close()
        assert gone.downtrack.packets_sent == 5 and gone.sink.packets == 5
        assert len(rig.forwarder.native or ()) == 3
        moved = rig.viewers[3]
        spare = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        spare.bind(("127.0.0.1", 0))
        spare.setblocking(False)
        moved.sink.addr = spare.getsockname()
        rig.drain()
        rig.forward(source_packet(6, 2000, 77, b"p" * 50, False, 111, 0), False)
        got = rig.drain()
        assert [len(g) for g in got] == [1, 0, 1, 0]
        assert len(spare.recv(4096)) > 50
        spare.close()
        assert [v.downtrack.packets_sent for v in rig.viewers] == [6, 5, 6, 6]
        assert [v.sink.bytes > 0 for v in rig.viewers] == [True] * 4
        counters = rig.viewers[0].sink.stream
        rig.viewers[0].sink.fold()
        assert counters.egress_packets == 6
    finally:
        rig.close()


# -- the kernel alone: hostile sizes and layouts ---------------------------------------------------


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    tx.setblocking(False)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    yield tx, rx
    tx.close()
    rx.close()


def _session() -> SrtpContext:
    return SrtpContext(make_keys("SRTP_AEAD_AES_128_GCM", 1)[0])


def _add(group: native.NativeGroup, srtp: SrtpContext, tx: socket.socket, addr: object) -> None:
    group.add(
        object(),
        srtp_session=srtp._tx,
        sock=tx,
        addr=addr,  # type: ignore[arg-type]
        ssrc=1,
        payload_type=96,
        seq_offset=0,
        ts_offset=0,
        start_seq=0,
        layout=LAYOUTS["none"],
    )


def test_zero_viewers_and_bad_arguments(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = udp_pair
    group = native.NativeGroup()
    assert group.forward(b"x" * 100, 1, 1, False, False, ()) == 0
    srtp = _session()
    with pytest.raises(ValueError):
        _add(group, srtp, tx, ("not-an-address", 5))
    with pytest.raises((ValueError, OverflowError)):
        _add(group, srtp, tx, ("127.0.0.1", 70000))
    assert len(group) == 0
    _add(group, srtp, tx, rx.getsockname())
    with pytest.raises(ValueError):  # the slot's layout 0 has no block
        group.forward(b"x", 1, 1, False, False, ())
    for bad in (b"\x00" * 3, b"\x00" * (4 + 4 * 0x10000)):
        with pytest.raises(ValueError):
            group.forward(b"x", 1, 1, False, False, (bad,))
    for seq, ts in ((1 << 16, 0), (0, 1 << 32), (-1, 0), (1 << 70, 0)):
        with pytest.raises((ValueError, OverflowError)):
            group.forward(b"x", seq, ts, False, False, (b"",))
    with pytest.raises(TypeError):
        group.forward(b"x", 1, 1, False, False, ("str",))  # type: ignore[arg-type]
    raw = group._group
    with pytest.raises(ValueError):
        raw.update(0, 1 << 40, 96, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        raw.update(0, 1, 128, 0, 0, 0, 0)
    with pytest.raises(IndexError):
        raw.take(5)
    with pytest.raises(IndexError):
        raw.remove(-1)
    # a huge payload and a huge (valid) extension block: errors, never an overflow
    huge_ext = struct.pack("!HH", 0xBEDE, 0xFFFF) + b"\x00" * (4 * 0xFFFF)
    assert group.forward(b"y" * 100_000, 1, 1, False, False, (b"",)) == 1
    assert group.forward(b"y", 2, 1, False, False, (huge_ext,)) == 1
    assert group.forward(b"", 3, 1, False, False, (b"",)) == 0  # an empty payload is fine
    assert group.take(group.slots[0]) == (1, len(rx.recv(4096)), 0, 0, 2)


def test_ten_thousand_viewers(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    tx, rx = udp_pair
    group = native.NativeGroup()
    sessions = [_session() for _ in range(50)]
    for n in range(10_000):
        _add(group, sessions[n % 50], tx, rx.getsockname())
    errors = group.forward(b"z" * 1200, 1, 1, True, True, (b"",))
    assert errors == 0
    totals = [group.take(slot) for slot in group.slots]
    assert all(t[0] == 1 and t[3] == 1 for t in totals)
    for slot in list(group.slots)[::2]:
        group.remove(slot)
    assert len(group) == 5000
    assert sorted(slot.index for slot in group.slots) == list(range(5000))


@settings(
    max_examples=int(os.environ.get("RELAYCAST_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payload=st.binary(max_size=2100),
    exts=st.lists(
        st.integers(min_value=0, max_value=600).map(lambda n: b"\xbe\xde" + bytes(4 * n + 2)),
        max_size=4,
    ),
    seq=st.integers(min_value=0, max_value=0xFFFF),
    ts=st.integers(min_value=0, max_value=0xFFFFFFFF),
    slots=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
        ),
        max_size=12,
    ),
)
def test_fuzz_kernel_with_hostile_sizes(
    udp_pair: tuple[socket.socket, socket.socket],
    payload: bytes,
    exts: list[bytes],
    seq: int,
    ts: int,
    slots: list[tuple[int, int, int, int]],
) -> None:
    """Any payload (up to past the buffer), any number and size of extension blocks, any
    slot fields: a count of sends and errors, or ValueError; nothing else."""
    tx, rx = udp_pair
    group = native.NativeGroup()
    raw = group._group
    srtp = _session()
    ctx = native.srtp_context_address(srtp._tx)
    host, port = rx.getsockname()
    for layout, start, seq_offset, ts_offset in slots:
        raw.add(
            ctx,
            tx.fileno(),
            socket.AF_INET,
            host,
            port,
            7,
            96,
            seq_offset,
            ts_offset,
            start,
            layout,
        )
    try:
        errors = raw.forward(payload, seq, ts, True, False, tuple(exts))
    except ValueError:
        assert any(layout >= len(exts) for layout, *_ in slots)
        return
    sent = 0
    for index in range(len(raw)):
        packets, wire, payload_bytes, keyframes, slot_errors = raw.take(index)
        sent += packets
        assert packets + slot_errors <= 1 and keyframes == 0
        assert wire <= 2048 and (wire > 12 + len(payload) or not packets)
        assert payload_bytes == packets * len(payload)
    assert errors <= len(slots)
    while True:
        try:
            data = rx.recv(4096)
        except BlockingIOError:
            break
        assert len(data) <= 2048
        sent -= 1
    assert sent >= 0  # the receiver may drop, never gets more than was sent
