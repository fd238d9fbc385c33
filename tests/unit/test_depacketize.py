"""Depacketizers (media/recording/depacketize.py) against our packetizers, the frame assembler's
loss rule, and a recording written through PyAV and decoded back."""

from __future__ import annotations

import fractions
import itertools
import random
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from relaycast.loadgen.media_clip import (
    AUDIO_FRAME_SAMPLES,
    MediaClip,
    encode_clip,
    packetize_h264,
    packetize_vp8,
    split_annexb,
)
from relaycast.media.recording.assembler import TrackAssembler
from relaycast.media.recording.depacketize import (
    EncodedFrame,
    H264Depacketizer,
    av1_obu_elements,
    depacketize_av1,
    depacketize_vp8,
    depacketize_vp9,
    frame_start,
    leb128,
)
from relaycast.media.recording.recorder import Recording
from relaycast.media.recording.writer import ContainerWriter, opus_samples

# -- clips and test packetizers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def vp8_clip() -> MediaClip:
    return encode_clip("vp8", 300_000, width=320, height=240, keyframe_interval=1.0, duration=2.0)


@pytest.fixture(scope="module")
def h264_clip() -> MediaClip:
    return encode_clip("h264", 300_000, width=320, height=240, keyframe_interval=1.0, duration=2.0)


def encode_raw(codec: str, frames: int = 20, keyint: int = 10) -> list[bytes]:
    """Encoded frames of a moving pattern (libvpx / libx264), one per input frame."""
    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 160, 128, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.gop_size = keyint
    if codec == "libx264":
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    else:
        ctx.options = {"deadline": "realtime", "lag-in-frames": "0"}
    out: list[bytes] = []
    for i in range(frames):
        image = np.zeros((128, 160, 3), dtype=np.uint8)
        image[:, (i * 7) % 160 :] = (i * 11 % 256, 80, 200)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.append(b"".join(bytes(p) for p in ctx.encode(frame)))
    return out


def packetize_vp9(frame: bytes, picture_id: int, room: int = 300) -> list[bytes]:
    """RFC 9628 §4.2 non-flexible descriptor: I (15-bit picture id), B/E, P for inter frames,
    V with a scalability structure (one layer with its size) on keyframes."""
    key = (frame[0] >> 2) & 1 == 0  # frame_type bit of the uncompressed header (profile 0)
    out = []
    chunks = [frame[i : i + room] for i in range(0, len(frame), room)]
    for i, chunk in enumerate(chunks):
        b0 = 0x80 | (0 if key else 0x40)
        if i == 0:
            b0 |= 0x08
        if i == len(chunks) - 1:
            b0 |= 0x04
        desc = bytes((0, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF))
        ss = b""
        if key and i == 0:
            b0 |= 0x02
            ss = bytes((0x10,)) + (160).to_bytes(2, "big") + (128).to_bytes(2, "big")
        out.append(bytes((b0,)) + desc[1:] + ss + chunk)
    return out


def obu(kind: int, body: bytes, *, extension: bool = False) -> bytes:
    """A low-overhead-format OBU (obu_has_size_field = 1)."""
    header = (kind << 3) | 0x02 | (0x04 if extension else 0)
    return bytes((header,)) + (b"\x28" if extension else b"") + leb128(len(body)) + body


def packetize_av1(temporal_unit: list[bytes], keyframe: bool, room: int = 100) -> list[bytes]:
    """AV1 RTP (§4.4): OBUs without size fields as W=0 length-prefixed elements, fragmented
    across packets with Z/Y; N=1 on a keyframe's first packet."""
    elements = []
    for o in temporal_unit:
        head_len = 2 if o[0] & 0x04 else 1
        size_start = head_len
        _, pos = 0, size_start
        while o[pos] & 0x80:
            pos += 1
        elements.append(bytes((o[0] & ~0x02,)) + o[1:head_len] + o[pos + 1 :])
    stream = b"".join(leb128(len(e)) + e for e in elements)
    # fragment the element stream at arbitrary points: re-split on element boundaries
    packets: list[bytes] = []
    current: list[bytes] = []
    size = 0
    continued = False
    queue = list(elements)
    while queue:
        element = queue.pop(0)
        space = room - size - 2
        if len(element) <= space:
            current.append(element)
            size += len(element) + 2
            continue
        head, tail = element[: max(space, 1)], element[max(space, 1) :]
        current.append(head)
        agg = (0x80 if continued else 0) | 0x40
        packets.append(bytes((agg,)) + b"".join(leb128(len(e)) + e for e in current))
        current, size, continued = [], 0, True
        queue.insert(0, tail)
        continue
    if current:
        agg = 0x80 if continued else 0
        packets.append(bytes((agg,)) + b"".join(leb128(len(e)) + e for e in current))
    if keyframe:
        packets[0] = bytes((packets[0][0] | 0x08,)) + packets[0][1:]
    assert stream  # the elements are all there
    return packets


# -- round trips --------------------------------------------------------------------------------


def test_vp8_round_trip(vp8_clip: MediaClip) -> None:
    keyframes = 0
    for i, clip_frame in enumerate(vp8_clip.video):
        frame = depacketize_vp8(clip_frame.payloads)
        # packetize again: the same payloads byte for byte, so the frame is the original
        assert packetize_vp8(frame.data, i) == clip_frame.payloads
        assert frame.keyframe == clip_frame.keyframe
        keyframes += frame.keyframe
    assert keyframes == 2


def test_vp8_frame_must_start_with_s_bit(vp8_clip: MediaClip) -> None:
    payloads = vp8_clip.video[0].payloads
    assert len(payloads) > 1
    with pytest.raises(ValueError, match="S=1"):
        depacketize_vp8(payloads[1:])


def test_h264_round_trip(h264_clip: MediaClip) -> None:
    depacketize = H264Depacketizer()
    for clip_frame in h264_clip.video:
        frame = depacketize(clip_frame.payloads)
        units = split_annexb(frame.data)
        assert packetize_h264(units) == clip_frame.payloads
        assert frame.keyframe == clip_frame.keyframe
    assert depacketize.parameter_sets is not None
    assert [u[0] & 0x1F for u in split_annexb(depacketize.parameter_sets)] == [7, 8]


def test_h264_original_access_units_byte_for_byte() -> None:
    depacketize = H264Depacketizer()
    for data in encode_raw("libx264"):
        units = split_annexb(data)
        frame = depacketize(packetize_h264(units, max_payload=200))
        assert split_annexb(frame.data) == units


def test_h264_stap_a_and_missing_parameter_sets() -> None:
    sps, pps = bytes((0x67, 0x42, 0xC0, 0x1E)), bytes((0x68, 0xCE, 0x3C, 0x80))
    idr = bytes((0x65, 0x88)) + bytes(range(50))
    stap = bytes((0x18,)) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    depacketize = H264Depacketizer()
    first = depacketize([stap, idr])
    assert first.keyframe and split_annexb(first.data) == [sps, pps, idr]
    # a later IDR sent without its SPS/PPS gets the remembered ones in front
    again = depacketize(packetize_h264([idr], max_payload=20))
    assert again.keyframe and split_annexb(again.data) == [sps, pps, idr]
    with pytest.raises(ValueError, match="before any SPS"):
        H264Depacketizer()([idr])


def test_h264_fu_a_without_end_is_refused() -> None:
    idr = bytes((0x65, 0x88)) + bytes(300)
    payloads = packetize_h264([idr], max_payload=100)
    assert len(payloads) > 2
    with pytest.raises(ValueError, match="FU-A"):
        H264Depacketizer()(payloads[:-1])
    with pytest.raises(ValueError, match="FU-A"):
        H264Depacketizer()(payloads[1:])


def test_vp9_round_trip() -> None:
    frames = encode_raw("libvpx-vp9")
    keys = 0
    for i, data in enumerate(frames):
        frame = depacketize_vp9(packetize_vp9(data, 1000 + i))
        assert frame.data == data
        keys += frame.keyframe
    assert keys == 2


def test_vp9_spatial_layers_become_a_superframe() -> None:
    layer0, layer1 = b"\x82" + bytes(40), b"\x86" + bytes(300)
    payloads = [
        bytes((0x08 | 0x04,)) + layer0,  # B, E: layer 0 in one packet
        bytes((0x08,)) + layer1[:150],
        bytes((0x04,)) + layer1[150:],
    ]
    frame = depacketize_vp9(payloads)
    index = bytes((0xC9,)) + (41).to_bytes(2, "little") + (301).to_bytes(2, "little") + b"\xc9"
    assert frame.data == layer0 + layer1 + index
    with pytest.raises(ValueError, match="E"):
        depacketize_vp9(payloads[:2])


def test_av1_round_trip() -> None:
    rng = random.Random(7)
    sequence = obu(1, bytes(rng.randrange(256) for _ in range(12)))
    for n in range(30):
        key = n % 10 == 0
        frame = obu(6, bytes(rng.randrange(256) for _ in range(rng.randrange(5, 700))))
        meta = obu(5, b"\x01\x02", extension=True)
        tu = [sequence, meta, frame] if key else [meta, frame]
        packets = packetize_av1(tu, key, room=90 + n)
        out = depacketize_av1(packets)
        assert out.data == b"".join(tu)
        assert out.keyframe == key
    # a temporal delimiter is dropped (Matroska stores temporal units without it)
    td = bytes((2 << 3,))
    frame = obu(6, b"\x10\x20\x30")
    element = bytes((frame[0] & ~0x02,)) + frame[2:]  # without its size field
    packet = bytes((0x20,)) + leb128(len(td)) + td + element  # W=2: the last has no length
    assert depacketize_av1([packet]).data == frame
    with pytest.raises(ValueError, match="no OBUs"):
        depacketize_av1([bytes((0x10,)) + td])


def test_av1_fragment_mismatch_is_refused() -> None:
    frame = obu(6, bytes(500))
    packets = packetize_av1([frame], True, room=100)
    assert len(packets) > 2
    with pytest.raises(ValueError):
        av1_obu_elements(packets[1:])
    with pytest.raises(ValueError):
        av1_obu_elements(packets[:-1])


def test_opus_samples_from_toc() -> None:
    assert opus_samples(bytes((0xFC, 0))) == 960  # CELT FB 20 ms, code 0
    assert opus_samples(bytes((0x78,))) == 960  # SILK WB 20 ms
    assert opus_samples(bytes((0xFD,))) == 1920  # two 20 ms frames
    assert opus_samples(bytes((0xF3, 0x03))) == 3 * 480  # CELT 10 ms, code 3: three frames


def test_frame_start() -> None:
    assert frame_start("vp8", bytes((0x90, 0x80, 0x80, 0x01)))
    assert not frame_start("vp8", bytes((0x80, 0x80, 0x80, 0x01)))
    assert frame_start("h264", bytes((0x67, 0x42)))
    assert frame_start("h264", bytes((0x65, 0x88)))  # first_mb_in_slice = 0
    assert not frame_start("h264", bytes((0x65, 0x48)))  # a later slice
    assert frame_start("h264", bytes((0x7C, 0x85, 0x88)))  # FU-A start of an IDR
    assert not frame_start("h264", bytes((0x7C, 0x05, 0x88)))


# -- the assembler ------------------------------------------------------------------------------


def rtp_stream(clip: MediaClip, count: int | None = None) -> list[tuple[int, int, bool, bytes]]:
    """(seq, ts, marker, payload) of the clip's video, starting near the sequence wrap."""
    out = []
    seq = 65530
    for f in clip.video[:count]:
        for k, p in enumerate(f.payloads):
            out.append((seq & 0xFFFF, f.timestamp + 12345, k == len(f.payloads) - 1, p))
            seq += 1
    return out


def test_assembler_reorders_across_the_wrap(vp8_clip: MediaClip) -> None:
    packets = rtp_stream(vp8_clip)
    rng = random.Random(3)
    shuffled = []
    for i in range(0, len(packets), 5):  # reordering within windows of 5 packets
        window = packets[i : i + 5]
        rng.shuffle(window)
        shuffled += window
    assembler = TrackAssembler("vp8", "video")
    frames = []
    for i, (seq, ts, marker, payload) in enumerate(shuffled):
        frames += assembler.push(seq, ts, marker, payload, i * 0.001)
    frames += assembler.flush()
    assert [f.frame.data for f in frames] == [
        depacketize_vp8(f.payloads).data for f in vp8_clip.video
    ]
    assert assembler.gaps == 0 and assembler.dropped_frames == 0


def test_assembler_waits_for_a_retransmission(vp8_clip: MediaClip) -> None:
    packets = rtp_stream(vp8_clip, 10)
    late = packets.pop(5)
    assembler = TrackAssembler("vp8", "video", wait=0.5)
    frames = []
    for i, (seq, ts, marker, payload) in enumerate(packets):
        frames += assembler.push(seq, ts, marker, payload, i * 0.01)  # all within 0.5 s
    frames += assembler.push(*late, 0.3)
    frames += assembler.flush()
    assert len(frames) == 10 and assembler.gaps == 0


def test_assembler_loss_waits_for_the_next_keyframe(vp8_clip: MediaClip) -> None:
    packets = rtp_stream(vp8_clip)
    lost_frame = 5  # a delta frame in the first second
    assert not vp8_clip.video[lost_frame].keyframe
    first_seq = sum(len(f.payloads) for f in vp8_clip.video[:lost_frame])
    del packets[first_seq + len(vp8_clip.video[lost_frame].payloads) - 1]  # its last packet
    assembler = TrackAssembler("vp8", "video", wait=0.2)
    frames = []
    for i, (seq, ts, marker, payload) in enumerate(packets):
        frames += assembler.push(seq, ts, marker, payload, i * 0.01)
    frames += assembler.flush()
    timestamps = [f.timestamp - 12345 for f in frames]
    step = 90000 // vp8_clip.fps
    # frames 0-4, then nothing until the keyframe at 1 s (frame 30), then everything
    expected = [i * step for i in range(lost_frame)] + [
        i * step for i in range(vp8_clip.fps, len(vp8_clip.video))
    ]
    assert timestamps == expected
    assert frames[lost_frame].frame.keyframe
    assert assembler.gaps == 1 and assembler.lost_packets == 1
    # the frames after it up to the keyframe, and the lost one if part of it arrived
    partly = len(vp8_clip.video[lost_frame].payloads) > 1
    assert assembler.dropped_frames == vp8_clip.fps - lost_frame - 1 + partly


def test_assembler_audio_skips_losses() -> None:
    assembler = TrackAssembler("opus", "audio", wait=0.1)
    frames = []
    for i in range(50):
        if i == 10:
            continue
        frames += assembler.push(i, i * 960, True, bytes((0xFC, i)), i * 0.02)
    frames += assembler.flush()
    assert [f.frame.data[1] for f in frames] == [i for i in range(50) if i != 10]


# -- recordings through PyAV ----------------------------------------------------------------------


class _FakeTrack:
    def __init__(self, kind: str, codec: str, clock_rate: int) -> None:
        self.kind, self.codec_name, self.clock_rate = kind, codec, clock_rate
        self.keyframe_requests = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1


class _Packet:
    def __init__(self, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        self.sequence_number, self.timestamp, self.marker, self.payload = seq, ts, marker, payload


def feed(recording: Recording, clip: MediaClip, seconds: float, start: float) -> None:
    """The clip's packets (looped) into a tap, with arrival times of a real-time publisher."""
    tap = recording.tap()
    video = _FakeTrack("video", clip.codec, 90000)
    audio = _FakeTrack("audio", "opus", 48000)
    events: list[tuple[float, Any, _Packet]] = []
    seq = 0
    loops = int(seconds / clip.duration + 0.999)
    for loop in range(loops):
        for f in clip.video:
            at = loop * clip.duration + f.timestamp / 90000
            ts = (f.timestamp + round(loop * clip.duration * 90000)) & 0xFFFFFFFF
            for k, p in enumerate(f.payloads):
                events.append((at, video, _Packet(seq & 0xFFFF, ts, k == len(f.payloads) - 1, p)))
                seq += 1
        for j, f in enumerate(clip.audio):
            at = loop * clip.duration + f.timestamp / 48000
            ts = f.timestamp + loop * len(clip.audio) * AUDIO_FRAME_SAMPLES
            n = loop * len(clip.audio) + j
            events.append((at, audio, _Packet(n & 0xFFFF, ts, True, f.payloads[0])))
    events.sort(key=lambda e: e[0])
    for at, track, packet in events:
        if at < seconds:
            tap.rtp(track, packet, int((start + at) * 1e6))  # type: ignore[arg-type]


def decode_all(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        kinds = {s.type for s in container.streams}
        counts = {"video": 0, "audio": 0}
        sizes = set()
        for packet in container.demux():
            for frame in packet.decode():
                counts[packet.stream.type] += 1
                if isinstance(frame, av.VideoFrame):
                    sizes.add((frame.width, frame.height))
        duration = container.duration / 1e6 if container.duration else None
    return {"kinds": kinds, "counts": counts, "sizes": sizes, "duration": duration}


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_recording_decodes(
    codec: str, vp8_clip: MediaClip, h264_clip: MediaClip, tmp_path: Path
) -> None:
    clip = vp8_clip if codec == "vp8" else h264_clip
    recording = Recording("live", tmp_path / "live", codec, "opus")
    feed(recording, clip, 4.0, start=1_800_000_000.0)
    recording.close(timeout=30)
    assert recording.error is None
    assert recording.path is not None
    assert recording.path.suffix == (".mp4" if codec == "h264" else ".webm")
    assert recording.path.name.startswith("2027-01-15T08-00-00Z")
    result = decode_all(recording.path)
    assert result["kinds"] == {"video", "audio"}
    assert result["counts"]["video"] == 4 * clip.fps
    assert result["counts"]["audio"] >= 4 * 50 - 2
    assert result["sizes"] == {(320, 240)}
    assert result["duration"] == pytest.approx(4.0, abs=0.1)
    side = recording.path.with_name(recording.path.name + ".json").read_text()
    assert '"complete": true' in side


class SlowSink:
    """A sink on a slow disk: every write takes 20 ms."""

    def __init__(self, path: Path, video: str | None, audio: str | None) -> None:
        self.frames: list[tuple[str, EncodedFrame, float]] = []

    def open(self, video: EncodedFrame | None, parameter_sets: bytes | None) -> None:
        pass

    def write(self, kind: str, frame: EncodedFrame, pts: float) -> None:
        time.sleep(0.02)
        self.frames.append((kind, frame, pts))

    def close(self) -> None:
        pass


def test_slow_disk_drops_to_the_next_keyframe(vp8_clip: MediaClip, tmp_path: Path) -> None:
    sinks: list[SlowSink] = []

    def factory(path: Path, video: str | None, audio: str | None) -> SlowSink:
        sinks.append(SlowSink(path, video, audio))
        return sinks[-1]

    recording = Recording("live", tmp_path, "vp8", "opus", queue_limit=200, sink_factory=factory)
    tap = recording.tap()
    video = _FakeTrack("video", "vp8", 90000)
    seq = 0

    def send(loop: int, frames: list[Any]) -> None:
        nonlocal seq
        for f in frames:
            ts = f.timestamp + loop * 2 * 90000
            arrival = int((1e9 + loop * 2 + f.timestamp / 90000) * 1e6)
            for k, p in enumerate(f.payloads):
                packet = _Packet(seq & 0xFFFF, ts, k == len(f.payloads) - 1, p)
                tap.rtp(video, packet, arrival)  # type: ignore[arg-type]
                seq += 1
            time.sleep(0.002)  # the stream goes on while the sink is slow

    for loop in range(3):  # 6 s of video in 0.4 s: far more than 50 frames/s
        send(loop, vp8_clip.video)
    assert tap.overflows >= 1 and tap.dropped_packets > 0
    deadline = time.monotonic() + 30
    while len(recording.queue) > 50 and time.monotonic() < deadline:
        time.sleep(0.05)  # the disk catches up; the stream is between keyframes
    send(3, vp8_clip.video[1:30])  # delta frames: still dropped, a keyframe is requested
    assert video.keyframe_requests >= 1
    send(3, vp8_clip.video[30:])  # from the keyframe on, recorded again
    recording.close(timeout=60)
    assert recording.error is None
    frames = sinks[0].frames
    assert frames and frames[0][1].keyframe
    # after every hole (a jump in time), the first frame written is a keyframe
    step = 1 / vp8_clip.fps
    holes = 0
    for (_, _, t0), (_, frame, t1) in itertools.pairwise(frames):
        if t1 - t0 > step * 1.5:
            holes += 1
            assert frame.keyframe, f"frame after a hole at {t1:.3f} s is not a keyframe"
    assert holes >= 1
    assert len(frames) < 4 * len(vp8_clip.video) - 1  # frames were dropped
    assert frames[-1][2] == pytest.approx(6 + 59 / 30 - frames[0][2], abs=0.01)


def test_writer_refuses_nothing_for_audio_only(tmp_path: Path) -> None:
    writer = ContainerWriter(tmp_path / "a.webm", None, "opus")
    writer.open(None, None)
    enc: Any = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    n = 0
    for i in range(50):
        chunk = av.AudioFrame.from_ndarray(
            np.zeros((1, 1920), dtype=np.int16), format="s16", layout="stereo"
        )
        chunk.sample_rate, chunk.pts = 48000, i * 960
        for p in enc.encode(chunk):
            writer.write("audio", EncodedFrame(bytes(p), True), n * 0.02)
            n += 1
    writer.close()
    result = decode_all(tmp_path / "a.webm")
    assert result["kinds"] == {"audio"} and result["counts"]["audio"] == n
