"""The native fan-out kernel against the Python path: same datagrams, same counters.

Two identical rigs (same viewer SRTP keys, same random offsets, a frozen clock) play the same
script (packets, joins, event-loop turns, NACKs, publisher switches), one through the Python path
(DownTrack.send / DownTrack.on_nack -> MediaSink.send_rtp) and one through the native kernel
(relaycast/native: live fan-out, fast-start replay, NACK answers and RFC 4588 RTX); every
viewer's datagrams are captured on real loopback sockets and must be equal byte for byte
(identical SRTP contexts give identical ciphertext for identical input sequences), and decrypt
with the viewer's key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
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


class CountingSink(MediaSink):
    """A real MediaSink that counts the RTP its Python path sends (what the kernel must not)."""

    __slots__ = ("python_sends",)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.python_sends = 0

    def send_rtp(self, packet: bytes) -> int:
        self.python_sends += 1
        return super().send_rtp(packet)


@dataclass
class Viewer:
    downtrack: DownTrack
    sink: CountingSink
    keys: SrtpKeys
    receiver: socket.socket
    first_keyframes: list[int] = dataclasses.field(default_factory=list)


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
        rtx: bool = False,
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
            sink = CountingSink(
                protect=srtp.protect,
                protect_rtcp=srtp.protect_rtcp,
                sendto=self.sender.sendto,
                addr=receiver.getsockname(),
                stream=StreamCounters(),
                server=self.server,
                srtp=srtp,
            )
            with_rtx = rtx and index % 2 == 0  # RTX for every other viewer
            downtrack = DownTrack(
                kind=kind,
                forwarder=self.forwarder,
                ssrc=0x10000000 + index,
                rtx_ssrc=0x20000000 + index if with_rtx else None,
                payload_types={"vp8": 120, "opus": 109, "h264/42e01f": 121}
                | {k: 100 + n for n, k in enumerate(self._keys())},
                rtx_payload_types={100 + n: 110 + n for n in range(3)} if with_rtx else {},
                clock_rate=90000 if kind == "video" else 48000,
                layout=LAYOUTS[layouts[index % len(layouts)]],
                cname=f"viewer{index}",
            )
            viewer = Viewer(downtrack, sink, key, receiver)
            if kind == "video":  # as the subscriber sets it: time to first frame
                downtrack.on_first_keyframe = functools.partial(
                    viewer.first_keyframes.append, index
                )
            self.viewers.append(viewer)

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

    def connect(self, which: Sequence[int] | None = None) -> None:
        for index, viewer in enumerate(self.viewers):
            if which is None or index in which:
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

    def counters(self) -> list[tuple[object, ...]]:
        return [
            (
                v.downtrack.packets_sent,
                v.downtrack.payload_bytes,
                v.downtrack.send_errors,
                v.downtrack.keyframes_sent,
                v.downtrack.retransmitted,
                v.downtrack.nack_misses,
                v.downtrack._rtx_seq,
                v.downtrack.state,
                dataclasses.astuple(v.downtrack.counters),
                v.sink.packets,
                v.sink.bytes,
                v.sink.errors,
                tuple(v.first_keyframes),
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
# also: ("publish",) a new source Track; ("connect", viewer) a late join; ("turn",) one
# event-loop turn (fast-start pacing); ("settle",) turns until no replay is pending;
# ("nack", viewer, now, source seqs) a NACK for those packets in the viewer's sequence space
Script = Sequence[tuple[object, ...]]


def run_both(
    monkeypatch: pytest.MonkeyPatch,
    *,
    kind: str,
    codec: str,
    profile: str,
    layouts: Sequence[str],
    viewers: int,
    script: Script,
    joined: Sequence[int] | None = None,
    rtx: bool = False,
) -> tuple[list[list[bytes]], Rig, Rig]:
    """Play ``script`` through a Python rig and a native rig; returns the datagrams (after
    asserting them equal) and both rigs (closed by the caller). ``joined``: the viewers that
    connect before the script (default all)."""
    keys = make_keys(profile, viewers)
    seed = secrets.randbits(32)
    results = []
    rigs = []
    for use_native in (False, True):
        rng = random.Random(seed)  # the same offsets, SSRC-free randomness in both rigs
        monkeypatch.setattr(secrets, "randbits", rng.getrandbits)
        rig = Rig(kind, codec, use_native, keys, layouts, seed, rtx=rtx)
        rigs.append(rig)
        rig.connect(joined)
        datagrams = asyncio.run(play(rig, script))
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


async def play(rig: Rig, script: Script) -> list[list[bytes]]:
    """One rig's run of a script; every viewer's datagrams in the order they arrived."""
    datagrams: list[list[bytes]] = [[] for _ in rig.viewers]
    ssrc = 0x5000
    for step in script:
        match step:
            case ("publish",):
                ssrc += 1
                rig.publish(ssrc)
            case ("connect", int(index)):
                rig.connect([index])
            case ("turn",):
                await asyncio.sleep(0)
            case ("settle",):
                for _ in range(10_000):
                    if not rig.forwarder._replays:
                        break
                    await asyncio.sleep(0)
                assert not rig.forwarder._replays
            case ("nack", int(index), float(now), tuple(seqs)):
                downtrack = rig.viewers[index].downtrack
                lost = [(s + downtrack.seq_offset) & 0xFFFF for s in seqs if isinstance(s, int)]
                downtrack.on_nack(lost, now)
            case ("pkt", int(seq), int(ts), int(size), bool(marker), bool(key), int(level)):
                assert rig.track is not None
                payload = payload_for(rig.codec, seq, size, key)
                packet = source_packet(
                    seq, ts, ssrc, payload, marker, rig.track.payload_type, level
                )
                rig.forward(packet, key)
            case _:
                raise AssertionError(f"not a step: {step!r}")
        for index, got in enumerate(rig.drain()):
            datagrams[index] += got
    return datagrams


def stream(
    first_seq: int,
    first_ts: int,
    count: int,
    *,
    kind: str,
    sizes: Sequence[int] = (1100,),
    key_every: int = 20,
) -> list[Step]:
    steps: list[Step] = []
    step_ts = 3000 if kind == "video" else 960
    for n in range(count):
        keyframe = n % key_every == 0
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
    script: list[tuple[object, ...]] = [("publish",)]
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


def decrypt_lenient(viewer_keys: SrtpKeys, datagrams: list[bytes]) -> list[RtpPacket]:
    """What a receiver accepts: a retransmission under the media SSRC repeats an index its
    replay window has seen, so only the first copy of each decrypts."""
    policy = Policy(
        key=viewer_keys.local_key,
        ssrc_type=Policy.SSRC_ANY_INBOUND,
        srtp_profile=PROFILES[viewer_keys.profile][0],
    )
    session = Session(policy=policy)
    packets = []
    for datagram in datagrams:
        if len(datagram) > 1500:
            continue
        try:
            packets.append(RtpPacket.parse(session.unprotect(datagram)))
        except Exception:  # pylibsrtp raises plain Exception subclasses on replay
            continue
    return packets


def fast_start_script(kind: str) -> list[tuple[object, ...]]:
    """Viewers 0-3 watch from the start, 4-7 join later: a long GOP that wraps the sequence
    number, joins during it (fast start, live packets arriving during the replay), NACKs across
    the wrap (cached, not cached, repeated within a round trip, over the byte budget), a new
    keyframe with a join and a NACK while catching up, a join right before a publisher switch,
    a join and NACKs after it."""
    sizes = (1100, 17, 1200, 1, 1880, 640)
    script: list[tuple[object, ...]] = [("publish",)]
    gop = stream(65450, 0xFFFFF000, 140, kind=kind, sizes=sizes, key_every=1000)
    script += gop[:50]
    # a late packet from before the keyframe joins the GOP: below every viewer's floor
    script += [("pkt", 65440, 0xFFFFEE00, 300, False, False, 3)]
    script += gop[50:100]
    script += [("connect", 4), ("connect", 5)]  # 4 replays at once, 5 waits for its turn
    for step in gop[100:]:  # live packets while they catch up
        script += [step, ("turn",)]
    script += [("settle",)]
    script += [
        ("nack", 0, 10.0, (65530, 65535, 0, 3, 3, 50000)),  # across the wrap, one not cached
        ("nack", 1, 10.0, (65533, 1, 2)),
        ("nack", 4, 10.0, (65450, 65451, 5)),  # the keyframe it replayed
        ("nack", 5, 10.0, tuple(range(65500, 65500 + 60))),  # over the budget
        ("nack", 0, 10.01, (65530, 4)),  # 65530 again within a round trip: refused
        ("nack", 2, 10.0, tuple(range(20, 160))),  # over the cap of one RTCP packet
    ]
    second = stream((65450 + 140) & 0xFFFF, 420_000, 90, kind=kind, sizes=sizes, key_every=1000)
    script += second[:70]
    script += [("connect", 6), ("nack", 6, 11.0, (second[2][1], second[9][1]))]
    for step in second[70:80]:
        script += [step, ("turn",)]
    script += [("connect", 7)]  # waits for its turn, then the source goes away
    script += second[80:]
    script += [("publish",)]
    third = stream(12345, 777, 60, kind=kind, sizes=sizes, key_every=1000)
    script += third[:30]
    script += [("connect", 3), ("settle",)]  # already connected: nothing happens
    script += third[30:]
    script += [
        ("nack", 7, 12.0, (12350, 12351, 12352)),
        ("nack", 2, 12.0, (12345, 65530)),  # the old source's packet is gone
    ]
    return script


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize(
    ("kind", "codec"), [("video", "vp8"), ("video", "h264"), ("audio", "opus")]
)
def test_fast_start_and_nack_answers_same_as_the_python_path(
    monkeypatch: pytest.MonkeyPatch, profile: str, kind: str, codec: str
) -> None:
    """Fast-start replay and NACK answers (RTX for even viewers) through the kernel: the same
    datagrams and counters as the Python path, and the kernel sent them."""
    python, prig, nrig = run_both(
        monkeypatch,
        kind=kind,
        codec=codec,
        profile=profile,
        layouts=list(LAYOUTS),
        viewers=8,
        script=fast_start_script(kind),
        joined=[0, 1, 2, 3],
        rtx=True,
    )
    try:
        assert all(v.downtrack.native is not None for v in nrig.viewers)
        assert all(v.downtrack.state is LIVE for v in nrig.viewers)
        # the script did what it says, on both paths
        assert sum(v.downtrack.retransmitted for v in prig.viewers) > 40
        assert all(prig.viewers[i].downtrack.retransmitted > 0 for i in (0, 1, 2, 4, 5, 7))
        assert sum(v.downtrack.nack_misses for v in prig.viewers) >= 2
        assert prig.viewers[5].downtrack.counters.nack_refused > 0  # the byte budget
        if kind == "video":
            assert prig.viewers[6].downtrack.retransmitted == 2  # while catching up
            assert [v.first_keyframes for v in prig.viewers] == [[i] for i in range(8)]
            # the late joiners' fast start and NACK answers went through the kernel: the
            # Python path sent them only the new publisher's first keyframe (WAITING)
            for index in (4, 5, 6):
                assert nrig.viewers[index].sink.python_sends == 1
                assert prig.viewers[index].sink.python_sends > 100
        # RTX (RFC 4588 §4): own SSRC, payload type and sequence numbers; the payload is the
        # original sequence number, then the original payload; the original timestamp
        viewer = prig.viewers[0]
        packets = decrypt_lenient(viewer.keys, python[0])
        media = {(p.sequence_number, p.timestamp): p.payload for p in packets if p.ssrc < 1 << 29}
        rtx = [p for p in packets if p.ssrc == viewer.downtrack.rtx_ssrc]
        assert len(rtx) == viewer.downtrack.retransmitted
        assert all(p.payload_type == viewer.downtrack.rtx_payload_type for p in rtx)
        seqs = [p.sequence_number for p in rtx]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        for packet in rtx:
            (osn,) = struct.unpack_from("!H", packet.payload)
            assert media[(osn, packet.timestamp)] == packet.payload[2:]
        # without RTX the answer is the packet again, under the viewer's SSRC
        plain = prig.viewers[1]
        seqs = [struct.unpack_from("!H", d, 2)[0] for d in python[1]]
        assert len(seqs) - len(set(seqs)) == plain.downtrack.retransmitted
    finally:
        prig.close()
        nrig.close()


@pytest.mark.usefixtures("deterministic")
def test_a_burst_of_joins_replays_as_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty viewers join during one long GOP, live packets arrive between the replay turns:
    the same datagrams as the Python path, all of the joiners' through the kernel."""
    gop = stream(65000, 1, 400, kind="video", sizes=(900, 30), key_every=1000)
    script: list[tuple[object, ...]] = [("publish",), *gop[:300]]
    script += [("connect", i) for i in range(1, 41)]
    for step in gop[300:]:
        script += [step, ("turn",)]
    script += [("settle",)]
    _, prig, nrig = run_both(
        monkeypatch,
        kind="video",
        codec="h264",
        profile="SRTP_AEAD_AES_128_GCM",
        layouts=list(LAYOUTS),
        viewers=41,
        script=script,
        joined=[0],
    )
    try:
        assert all(v.downtrack.state is LIVE for v in nrig.viewers)
        assert all(v.downtrack.packets_sent == 400 for v in nrig.viewers)
        assert all(v.sink.python_sends == 0 for v in nrig.viewers[1:])
    finally:
        prig.close()
        nrig.close()


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("use_native", [False, True])
async def test_a_burst_of_joins_is_paced(use_native: bool) -> None:
    """Forty joins in one event-loop turn: each turn sends at most REPLAY_CHUNK fast-start
    packets over all of them, and a live packet between two turns reaches the LIVE viewers at
    once."""
    from relaycast.media.forwarder import REPLAY_CHUNK

    rig = Rig("video", "vp8", use_native, make_keys("SRTP_AES128_CM_SHA1_80", 41), ["mid"], 1)
    try:
        rig.publish(0x77)
        rig.connect([0])
        seq, ts = 65200, 1
        for n in range(300):
            rig.forward(source_packet(seq, ts, 0x77, b"g" * 700, False, 96, 0), n == 0)
            seq, ts = (seq + 1) & 0xFFFF, ts + 3000
        rig.drain()
        for index in range(1, 41):
            rig.connect([index])
        got = rig.drain()
        replayed = [sum(len(g) for g in got[1:])]
        live = 0
        while rig.forwarder._replays:
            rig.forward(source_packet(seq, ts, 0x77, b"l" * 700, False, 96, 0), False)
            seq, ts, live = (seq + 1) & 0xFFFF, ts + 3000, live + 1
            got = rig.drain()
            caught_up = [v.downtrack.state is LIVE for v in rig.viewers]
            assert [len(g) for g in got] == [int(c) for c in caught_up]
            await asyncio.sleep(0)  # one replay turn
            got = rig.drain()
            assert not got[0]
            replayed.append(sum(len(g) for g in got[1:]))
        assert max(replayed) <= REPLAY_CHUNK
        assert len(replayed) > 40 * 300 // REPLAY_CHUNK  # spread over that many turns at least
        assert [v.downtrack.packets_sent for v in rig.viewers] == [300 + live] * 41
        assert all(v.downtrack.native is not None for v in rig.viewers) == use_native
        if use_native:
            assert all(v.sink.python_sends == 0 for v in rig.viewers[1:])
    finally:
        rig.close()


@pytest.mark.usefixtures("deterministic")
def test_too_long_packets_count_as_errors_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    script: list[tuple[object, ...]] = [("publish",)]
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


# -- the list entry points (fast start, NACK answers) alone ------------------------------------

GOOD, NOT_A_TUPLE, SHORT, TEXT_PAYLOAD, INT_MARKER, BIG_SEQ, BAD_EXT = range(7)
_ITEM_ERRORS = {
    NOT_A_TUPLE: TypeError,
    SHORT: TypeError,
    TEXT_PAYLOAD: TypeError,
    INT_MARKER: TypeError,
    BIG_SEQ: ValueError,
    BAD_EXT: ValueError,
}


def _item(shape: int, payload: bytes, seq: int, ts: int, words: int) -> object:
    ext = b"\xbe\xde" + bytes(4 * words + 2) if words >= 0 else b"\xbe\xde\x00"
    item = (payload, seq, ts, seq % 2 == 0, seq % 3 == 0, ext)
    if shape == NOT_A_TUPLE:
        return list(item)
    if shape == SHORT:
        return item[:5]
    if shape == TEXT_PAYLOAD:
        return ("x", *item[1:])
    if shape == INT_MARKER:
        return (payload, seq, ts, 1, False, ext)
    if shape == BIG_SEQ:
        return (payload, seq + 0x10000, ts, False, False, ext)
    if shape == BAD_EXT:
        return (payload, seq, ts, False, False, b"\x00" * 4 * (0x10000 + 1))
    return item


@settings(
    max_examples=int(os.environ.get("RELAYCAST_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    slots=st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.booleans()), max_size=5
    ),
    index=st.integers(-2, 6),
    items=st.lists(
        st.tuples(
            st.sampled_from([GOOD] * 12 + list(_ITEM_ERRORS)),
            st.binary(max_size=2100),
            st.integers(0, 0xFFFF),
            st.integers(0, 0xFFFFFFFF),
            st.integers(-1, 600),
        ),
        max_size=40,
    ),
    bounds=st.tuples(st.integers(-2, 44), st.integers(-2, 44)),
    resend=st.booleans(),
    rtx=st.none()
    | st.tuples(st.integers(-1, 130), st.integers(0, 1 << 33), st.integers(-1, 0x10001)),
    as_tuple=st.booleans(),
)
def test_fuzz_list_entry_points(
    udp_pair: tuple[socket.socket, socket.socket],
    slots: list[tuple[int, int, bool]],
    index: int,
    items: list[tuple[int, bytes, int, int, int]],
    bounds: tuple[int, int],
    resend: bool,
    rtx: tuple[int, int, int] | None,
    as_tuple: bool,
) -> None:
    """replay() and resend() with any slot, range, item shapes and sizes, RTX fields: counts
    that add up and datagrams no larger than the buffer, or a clean exception the arguments
    explain; the slot counters of forward() are never touched, paused slots never forwarded."""
    tx, rx = udp_pair
    _drain(rx)  # (the sockets live across examples)
    raw = native.NativeGroup()._group
    srtp = _session()  # the kernel uses its srtp_t: it must outlive the calls
    ctx = native.srtp_context_address(srtp._tx)
    host, port = rx.getsockname()
    for start_seq, seq_offset, paused in slots:
        added = raw.add(
            ctx, tx.fileno(), socket.AF_INET, host, port, 7, 96, seq_offset, 0, start_seq, 0
        )
        raw.set_paused(added, paused)
    packets: list[object] = [_item(*spec) for spec in items]
    arg: object = tuple(packets) if as_tuple else packets
    start, end = (0, len(items)) if resend else bounds
    expected: set[type[Exception]] = set()
    if resend and rtx is not None:
        pt, ssrc, first = rtx
        if not (0 <= pt <= 127 and ssrc <= 0xFFFFFFFF and 0 <= first <= 0xFFFF):
            expected.add(ValueError)
    if not 0 <= index < len(slots) or not 0 <= start <= end <= len(items):
        expected.add(IndexError)
    else:
        expected |= {_ITEM_ERRORS[spec[0]] for spec in items[start:end] if spec[0] != GOOD}
        if any(spec[4] < 0 for spec in items[start:end] if spec[0] == GOOD):
            expected.add(ValueError)
    try:
        counts = (
            raw.resend(index, arg, rtx)  # type: ignore[arg-type]
            if resend
            else raw.replay(index, arg, start, end)  # type: ignore[arg-type]
        )
    except (IndexError, TypeError, ValueError) as exc:
        assert type(exc) in expected, f"unexpected {exc!r}"
        return
    assert not expected, f"expected one of {expected}"
    sent, wire, payload_bytes, keyframes, errors = counts
    assert sent + errors <= end - start
    if resend:
        assert sent + errors == end - start  # no floor for NACK answers
    assert keyframes <= sent and wire <= 2048 * sent and payload_bytes <= 2100 * sent
    for slot in range(len(raw)):
        assert raw.take(slot) == (0, 0, 0, 0, 0)  # the call's counts are returned, not kept
    got = _drain(rx)
    assert len(got) <= sent and all(len(d) <= 2048 for d in got)
    if resend and rtx is not None:  # RTX header fields (SRTP leaves the header in clear)
        for datagram in got:
            (seq,) = struct.unpack_from("!H", datagram, 2)
            assert datagram[1] & 0x7F == rtx[0]
            assert struct.unpack_from("!I", datagram, 8)[0] == rtx[1]
            assert (seq - rtx[2]) & 0xFFFF < len(items)
    # paused slots stay out of the live fan-out
    raw.forward(b"live", 1, 1, False, False, (b"",))
    forwarded = 0
    for slot, (_, _, paused) in enumerate(slots):
        assert raw.paused(slot) == paused
        taken = raw.take(slot)
        assert taken[0] + taken[4] <= (0 if paused else 1)
        forwarded += taken[0]
    assert len(_drain(rx)) <= forwarded


def _drain(rx: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(rx.recv(4096))
        except BlockingIOError:
            return got


def test_huge_lists_and_bad_calls(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    """The most one call takes, one more is a ValueError; a list mutated by the caller during
    a call cannot reach the kernel (it works on its own slice); a gone slot is an IndexError."""
    tx, rx = udp_pair
    group = native.NativeGroup()
    srtp = _session()
    _add(group, srtp, tx, rx.getsockname())
    raw = group._group
    raw.set_dry_run(True)  # 65,536 datagrams would only be dropped by the receiver
    limit = native._fanout.MAX_LIST
    items = [(b"p", n & 0xFFFF, n, False, n == 0, b"") for n in range(limit + 1)]
    with pytest.raises(ValueError):
        raw.replay(0, items, 0, limit + 1)
    with pytest.raises(ValueError):
        raw.resend(0, items, None)
    tag = 16  # AEAD_AES_128_GCM
    # a whole sequence cycle in one call: the floor follows it, nothing is skipped
    assert raw.replay(0, items, 1, limit + 1) == (limit, limit * (12 + 1 + tag), limit, 0, 0)
    assert raw.resend(0, items[:limit], (97, 5, 0xFFFF)) == (
        limit,
        limit * (12 + 2 + 1 + tag),
        limit,
        1,
        0,
    )
    assert raw.take(0) == (0, 0, 0, 0, 0)
    raw.set_dry_run(False)
    with pytest.raises(TypeError):
        raw.replay(0, iter(items), 0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        raw.resend(0, items[:1], [97, 5, 0])  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        raw.replay(1, items, 0, 1)
    with pytest.raises(IndexError):
        raw.replay(0, items, 5, 4)
    slot = group.slots[0]
    group.remove(slot)
    with pytest.raises(IndexError):
        group.replay(slot, items, 0, 1)
    with pytest.raises(IndexError):
        group.resend(slot, items[:1], None)


def _layer_switch_run(use_native: bool, keys: list[SrtpKeys], seed: int) -> list[list[bytes]]:
    """Two simulcast layers of one stream; every viewer starts on layer a, then switches to b
    (kept on a until b's keyframe), some back to a: each viewer's datagrams in order."""
    root = Forwarder("video", use_native=use_native)
    layers = {rid: root.layer(rid) for rid in ("a", "b")}
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    receivers = []
    downtracks = []
    sinks = []
    for index, key in enumerate(keys):
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        srtp = SrtpContext(key)
        sink = CountingSink(
            protect=srtp.protect,
            protect_rtcp=srtp.protect_rtcp,
            sendto=sender.sendto,
            addr=receiver.getsockname(),
            stream=StreamCounters(),
            server=ServerCounters(),
            srtp=srtp,
        )
        downtrack = DownTrack(
            kind="video",
            forwarder=layers["a"],
            ssrc=0x10000000 + index,
            rtx_ssrc=None,
            payload_types={"vp8": 120},
            rtx_payload_types={},
            clock_rate=90000,
            layout=list(LAYOUTS.values())[index % len(LAYOUTS)],
            cname=f"viewer{index}",
        )
        receivers.append(receiver)
        downtracks.append(downtrack)
        sinks.append(sink)
    tracks = {}
    for n, (rid, forwarder) in enumerate(layers.items()):
        tracks[rid] = Track(
            kind="video",
            codec=CODECS["vp8"],
            ssrc=0x5000 + n,
            sender_ssrc=1,
            rtcp_fb=["nack", "nack pli"],
            ext_ids=dict(SOURCE_IDS),
            forwarder=forwarder,
            send_rtcp=lambda data: None,
            keyframe_interval=1.0,
        )
        forwarder.attach_source(tracks[rid])
    for downtrack, sink in zip(downtracks, sinks, strict=True):
        downtrack.connect(sink)
    out: list[list[bytes]] = [[] for _ in keys]
    rng = random.Random(seed)
    seqs = {"a": 65500, "b": 300}
    stamps = {"a": 0xFFFFF000, "b": 5000}

    def frames(count: int, keyframe: dict[str, int]) -> None:
        for n in range(count):
            for rid in ("a", "b"):
                for part in range(3):
                    key = keyframe.get(rid) == n and part == 0
                    size = rng.choice((900, 17, 1200))
                    payload = payload_for("vp8", seqs[rid], size, key)
                    packet = source_packet(
                        seqs[rid], stamps[rid], 0x5000 + (rid == "b"), payload, part == 2, 96, n
                    )
                    layers[rid].forward(packet, key, 0.0)
                    seqs[rid] = (seqs[rid] + 1) & 0xFFFF
                stamps[rid] = (stamps[rid] + 3000) & 0xFFFFFFFF
            for index, receiver in enumerate(receivers):
                while True:
                    try:
                        out[index].append(receiver.recv(4096))
                    except BlockingIOError:
                        break

    frames(4, {"a": 0, "b": 0})
    for downtrack in downtracks:
        downtrack.switch_to(layers["b"])
    frames(3, {})  # no keyframe of b yet: still a
    frames(4, {"b": 1})  # the switch, mid-stream (a's sequence wraps meanwhile)
    for downtrack in downtracks[::2]:
        downtrack.switch_to(layers["a"])
    frames(4, {"a": 2})
    assert all(d.state is LIVE for d in downtracks)
    assert [d.forwarder for d in downtracks] == [
        layers["a"] if i % 2 == 0 else layers["b"] for i in range(len(downtracks))
    ]
    assert [d.layer_switches for d in downtracks] == [2, 1, 2, 1, 2]
    if use_native:
        assert all(d.native is not None for d in downtracks)
    sender.close()
    for receiver in receivers:
        receiver.close()
    return out


@pytest.mark.usefixtures("deterministic")
def test_a_layer_switch_sends_the_same_datagrams_as_the_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulcast: a viewer's slot moves from one layer's kernel group to the other's at the
    target layer's keyframe, with the offsets that keep its sequence going; the datagrams are
    those of the Python path, byte for byte, and one sequence without a gap."""
    keys = make_keys("SRTP_AEAD_AES_128_GCM", 5)
    seed = secrets.randbits(32)
    runs = []
    for use_native in (False, True):
        rng = random.Random(seed)
        monkeypatch.setattr(secrets, "randbits", rng.getrandbits)
        runs.append(_layer_switch_run(use_native, keys, seed))
        monkeypatch.undo()
        monkeypatch.setattr(downtrack_module, "time", FrozenTime)
    python, native_ = runs
    for index in range(len(keys)):
        assert native_[index] == python[index], f"viewer {index} differs"
        seqs = [struct.unpack_from("!H", d, 2)[0] for d in python[index]]
        assert len(seqs) >= 40
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
