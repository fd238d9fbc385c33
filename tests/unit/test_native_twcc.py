"""Transport-wide sequence numbers to viewers: the native kernel against the Python path.

Each viewer has one sequencer shared by its audio and its video DownTrack (two Forwarders, two
kernel groups). An audio rig and a video rig (tests/unit/test_native_fanout.py's Rig) play one
interleaved script (live packets, a late join's fast start, NACK answers as RTX and as they
were) twice: through the Python path with the pure-Python sequencer and through the kernel
with the C one. The datagrams must be equal byte for byte, the numbers in them consecutive
across audio and video (no gap, no repeat), and both sequencers must hold the same sizes.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_native_fanout import (
    LAYOUTS,
    FrozenTime,
    Rig,
    decrypt_all,
    make_keys,
    payload_for,
    source_packet,
    stream,
)

import relaycast.media.downtrack as downtrack_module
from relaycast import native
from relaycast.media.bwe.history import PySequencer, SequencerLike
from relaycast.media.downtrack import TWCC_URI, ExtLayout, stamp_twcc
from relaycast.rtp.packet import RtpPacket
from relaycast.sdp.negotiate import URI_AUDIO_LEVEL, URI_SDES_MID

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernel not built")

TWCC_LAYOUTS = {
    "twcc+mid": ExtLayout(((3, TWCC_URI, None), (9, URI_SDES_MID, b"v1"))),
    "twcc-two-byte": ExtLayout(
        ((20, URI_SDES_MID, b"x" * 17), (5, URI_AUDIO_LEVEL, None), (7, TWCC_URI, None))
    ),
    "mid-only": ExtLayout(((9, URI_SDES_MID, b"v1"),)),  # a viewer without TWCC
}
FIRST = 0xFFF0  # the numbers wrap around during the script
FUZZ = int(os.environ.get("RELAYCAST_FUZZ_EXAMPLES", "200"))


def twcc_of(packet: RtpPacket, layout: ExtLayout) -> int | None:
    if layout.twcc_id is None:
        return None
    value = packet.get_extension(layout.twcc_id)
    assert value is not None and len(value) == 2
    return int(struct.unpack("!H", value)[0])


def build(
    monkeypatch: pytest.MonkeyPatch, use_native: bool, keys: Sequence[object], seed: int
) -> tuple[Rig, Rig, list[SequencerLike]]:
    for name, layout in TWCC_LAYOUTS.items():
        monkeypatch.setitem(LAYOUTS, name, layout)
    rng = random.Random(seed)
    monkeypatch.setattr(secrets, "randbits", rng.getrandbits)
    layouts = list(TWCC_LAYOUTS)
    audio = Rig("audio", "opus", use_native, keys, layouts, seed)  # type: ignore[arg-type]
    video = Rig("video", "vp8", use_native, keys, layouts, seed, rtx=True)  # type: ignore[arg-type]
    sequencers: list[SequencerLike] = []
    for index in range(len(keys)):
        sequencer: SequencerLike = (
            native.new_sequencer(64, FIRST) if use_native else PySequencer(64, FIRST)
        )
        sequencers.append(sequencer)
        audio.viewers[index].downtrack.transport_seq = sequencer
        video.viewers[index].downtrack.transport_seq = sequencer
    return audio, video, sequencers


async def play(audio: Rig, video: Rig, script: Sequence[tuple[object, ...]]) -> list[list[bytes]]:
    """Datagrams per (rig, viewer): audio viewers first, then video viewers."""
    out: list[list[bytes]] = [[] for _ in range(len(audio.viewers) + len(video.viewers))]
    ssrc = 0x7000
    for step in script:
        match step:
            case ("publish",):
                ssrc += 1
                audio.publish(ssrc)
                video.publish(ssrc + 0x100)
            case ("connect", int(index)):
                audio.connect([index])
                video.connect([index])
            case ("settle",):
                for _ in range(10_000):
                    if not video.forwarder._replays:
                        break
                    await asyncio.sleep(0)
            case ("nack", int(index), float(now), tuple(seqs)):
                downtrack = video.viewers[index].downtrack
                lost = [(s + downtrack.seq_offset) & 0xFFFF for s in seqs if isinstance(s, int)]
                downtrack.on_nack(lost, now)
            case (str(kind), "pkt", int(seq), int(ts), int(size), bool(marker), bool(key), int(lv)):
                rig = audio if kind == "audio" else video
                assert rig.track is not None
                payload = payload_for(rig.codec, seq, size, key)
                rig.forward(
                    source_packet(seq, ts, ssrc, payload, marker, rig.track.payload_type, lv), key
                )
            case _:
                raise AssertionError(f"not a step: {step!r}")
        for index, got in enumerate(audio.drain() + video.drain()):
            out[index] += got
    return out


def interleaved(count: int, *, seed: int, start: int = 100) -> list[tuple[object, ...]]:
    rng = random.Random(seed)
    audio = stream(start, 1000, count, kind="audio", sizes=(80, 120))
    video = stream(start + 7, 5000, count, kind="video", sizes=(1100, 300, 1200), key_every=15)
    script: list[tuple[object, ...]] = []
    while audio or video:
        source, kind = (
            (audio, "audio")
            if video == [] or (audio and rng.random() < 0.3)
            else (
                video,
                "video",
            )
        )
        script.append((kind, *source.pop(0)))
    return script


def run(
    monkeypatch: pytest.MonkeyPatch,
    script: Sequence[tuple[object, ...]],
    viewers: int,
    joined: Sequence[int],
) -> None:
    keys = make_keys("SRTP_AEAD_AES_128_GCM", viewers)
    seed = secrets.randbits(32)
    results = []
    histories = []
    for use_native in (False, True):
        audio, video, sequencers = build(monkeypatch, use_native, keys, seed)
        audio.connect(joined)
        video.connect(joined)
        datagrams = asyncio.run(play(audio, video, script))
        monkeypatch.undo()
        monkeypatch.setattr(downtrack_module, "time", FrozenTime)
        results.append(datagrams)
        histories.append((audio, video, sequencers))
        if use_native:
            assert any(v.downtrack.native is not None for v in video.viewers)
    python, native_ = results
    assert [len(d) for d in native_] == [len(d) for d in python]
    assert native_ == python
    # the numbers: consecutive over audio + video per viewer, from FIRST, none twice
    audio, video, py_sequencers = histories[0]
    _, _, c_sequencers = histories[1]
    for index in range(viewers):
        layout = video.viewers[index].downtrack.layout
        packets = [
            decrypt_all(keys[index], [d])[0]  # one session each: NACK answers repeat indexes
            for d in python[index] + python[viewers + index]
            if len(d) <= 1500
        ]
        numbers = sorted(
            (n - FIRST) & 0xFFFF for n in (twcc_of(p, layout) for p in packets) if n is not None
        )
        if layout.twcc_id is None:
            assert numbers == []
            assert py_sequencers[index].stamped == 0 == c_sequencers[index].stamped
            continue
        sent = [d for d in python[index] + python[viewers + index] if len(d) <= 1500]
        assert numbers == list(range(len(sent))), f"viewer {index}"
        stamped = py_sequencers[index].stamped
        assert (
            stamped
            == c_sequencers[index].stamped
            == len(python[index]) + len(python[viewers + index])
        )
        # the same history (sizes; the times are each path's own clock)
        base = (FIRST + stamped - 64) & 0xFFFF
        py_ext, py_entries = py_sequencers[index].lookup(base, 64)
        c_ext, c_entries = c_sequencers[index].lookup(base, 64)
        assert py_ext == c_ext
        assert [e and e[1] for e in py_entries] == [e and e[1] for e in c_entries]
        assert all(e is not None for e in c_entries)
    for rigs in histories:
        for rig in rigs[:2]:
            rig.close()


@pytest.mark.usefixtures("deterministic")
def test_live_audio_and_video_share_one_sequence(monkeypatch: pytest.MonkeyPatch) -> None:
    script: list[tuple[object, ...]] = [("publish",)]
    script += interleaved(60, seed=1)
    run(monkeypatch, script, viewers=3, joined=None)  # type: ignore[arg-type]


@pytest.mark.usefixtures("deterministic")
def test_fast_start_and_nack_answers_are_stamped_too(monkeypatch: pytest.MonkeyPatch) -> None:
    script: list[tuple[object, ...]] = [("publish",)]
    script += interleaved(40, seed=2)
    script += [("connect", 2), ("settle",)]  # a late joiner replays the GOP
    script += interleaved(20, seed=3, start=140)
    script += [
        ("nack", 0, 5.0, (120, 121, 125)),
        ("nack", 1, 5.0, (122,)),
        ("nack", 2, 5.0, (150, 151)),
    ]
    script += interleaved(10, seed=4, start=160)
    run(monkeypatch, script, viewers=3, joined=[0, 1])


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downtrack_module, "time", FrozenTime)


def test_stamp_twcc_offsets() -> None:
    one = TWCC_LAYOUTS["twcc+mid"].build(source_packet(1, 1, 1, b"x", False, 96, 0), {})[1]
    assert one[:2] == b"\xbe\xde" and one[4] == (3 << 4) | 1
    assert stamp_twcc(one, 0x1234)[5:7] == b"\x12\x34"
    two = TWCC_LAYOUTS["twcc-two-byte"].build(
        source_packet(1, 1, 1, b"x", False, 96, 9), {URI_AUDIO_LEVEL: 1}
    )[1]
    assert two[:2] == b"\x10\x00" and two[4:6] == b"\x07\x02"
    assert stamp_twcc(two, 0xABCD)[6:8] == b"\xab\xcd"
    assert len(stamp_twcc(two, 1)) == len(two)


def test_sequencer_bounds_and_wrap() -> None:
    for make in (lambda: native.new_sequencer(4, 0xFFFE), lambda: PySequencer(4, 0xFFFE)):
        seq = make()
        assert seq.lookup(0, 3) == (0, [None, None, None])
        numbers = [seq.stamp() for _ in range(6)]
        assert numbers == [0xFFFE, 0xFFFF, 0, 1, 2, 3]
        for n in numbers:
            seq.sent(n, 100 + n % 7, 1000)
        seq.sent(0x8000, 5, 1)  # never taken: ignored
        ext, entries = seq.lookup(0, 4)
        assert ext == 0x10000
        assert [e[1] if e else None for e in entries] == [100, 101, 102, 103]
        ext, entries = seq.lookup(0xFFFE, 2)  # overwritten by the ring
        assert entries == [None, None]
        with pytest.raises(ValueError):
            seq.lookup(0, 0x10000)
    with pytest.raises(ValueError):
        native.new_sequencer(0, 0)
    with pytest.raises(ValueError):
        native.new_sequencer(8, 0x10000)


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    capacity=st.integers(1, 70_000),
    first=st.integers(-5, 0x10005),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["stamp", "sent", "lookup"]),
            st.integers(-3, 0x10003),
            st.integers(-3, 0x10003),
        ),
        max_size=60,
    ),
)
def test_fuzz_sequencer(capacity: int, first: int, ops: list[tuple[str, int, int]]) -> None:
    try:
        seq = native.new_sequencer(capacity, first)
    except ValueError:
        assert not (1 <= capacity <= 65536 and 0 <= first <= 0xFFFF)
        return
    model = PySequencer(capacity, first)
    for op, a, b in ops:
        if op == "stamp":
            assert seq.stamp() == model.stamp()
        elif op == "sent":
            try:
                seq.sent(a, b, 7)
            except (ValueError, OverflowError):
                continue
            model.sent(a, b, 7)
        else:
            try:
                got = seq.lookup(a, b)
            except (ValueError, OverflowError):
                continue
            assert got == model.lookup(a, b)


_BLOCKS = st.one_of(
    st.binary(max_size=40),
    st.builds(  # one-byte form: the first element's id and length nibbles around a match
        lambda n, i, ln, rest: b"\xbe\xde" + struct.pack("!H", n) + bytes([(i << 4) | ln]) + rest,
        st.integers(0, 3),
        st.integers(0, 15),
        st.integers(0, 15),
        st.binary(max_size=12),
    ),
    st.builds(  # two-byte form
        lambda n, i, ln, rest: b"\x10\x00" + struct.pack("!H", n) + bytes([i, ln]) + rest,
        st.integers(0, 3),
        st.integers(0, 255),
        st.integers(0, 4),
        st.binary(max_size=12),
    ),
)


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(ext=_BLOCKS, ext_id=st.integers(-2, 300), payload=st.binary(max_size=50))
def test_fuzz_kernel_stamping_hostile_blocks(ext: bytes, ext_id: int, payload: bytes) -> None:
    """Any extension block with a sequencer attached: no crash, no write out of bounds (the
    ASan build), and a number is stamped only into a matching 2-byte first element."""
    import socket

    group = native.NativeGroup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        group._group.set_dry_run(True)
        from relaycast.net.dtls import SrtpKeys
        from relaycast.net.srtp import SrtpContext

        keys = make_keys("SRTP_AEAD_AES_128_GCM", 1)[0]
        assert isinstance(keys, SrtpKeys)
        srtp = SrtpContext(keys)
        index = group._group.add(
            native.srtp_context_address(srtp._tx),
            sock.fileno(),
            int(sock.family),
            "127.0.0.1",
            9,
            1234,
            96,
            0,
            0,
            0,
            0,
        )
        sequencer = native.new_sequencer(16, 0)
        try:
            group._group.set_sequencer(index, sequencer, ext_id)
        except ValueError:
            assert not 1 <= ext_id <= 255
            return
        padded = ext + bytes(-len(ext) % 4)
        group._group.forward(payload, 1, 1, False, False, (padded,))
        group._group.resend(index, [(payload, 2, 2, False, False, padded)], (97, 4321, 5))
        matching = len(padded) >= 8 and (
            (padded[:2] == b"\xbe\xde" and padded[4] == (ext_id << 4 | 1))
            or (
                padded[0] == 0x10
                and padded[1] & 0xF0 == 0
                and padded[4] == ext_id
                and padded[5] == 2
            )
        )
        assert sequencer.stamped == (2 if matching else 0)
        group._group.remove(index)
        del srtp
    finally:
        sock.close()
