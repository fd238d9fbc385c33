"""VP8 picture numbering across simulcast layers (media/picture_ids.py, rtp/vp8.py)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycast.media.picture_ids import LayerPictureIds, StreamPictureIds
from relaycast.rtp.codecs import is_keyframe_start
from relaycast.rtp.vp8 import parse_descriptor, with_ids

TIDS = (0, 2, 1, 2)  # L1T3, as Chromium's VP8 simulcast sends each layer


def vp8(picture_id: int, tl0: int, tid: int, key: bool, start: bool = True) -> bytes:
    """A payload with X, I (15 bits), L and T set, then the VP8 payload header byte."""
    b0 = 0x90 if start else 0x80
    return bytes(
        (
            b0,
            0xE0,
            0x80 | ((picture_id >> 8) & 0x7F),
            picture_id & 0xFF,
            tl0 & 0xFF,
            (tid << 6) | (0x20 if tid else 0),
            0x00 if key else 0x01,
            0xAB,
        )
    )


# -- the descriptor -------------------------------------------------------------------------------


def test_descriptor_fields_and_rewrite() -> None:
    payload = vp8(0x1234, 200, 2, key=False)
    d = parse_descriptor(payload)
    assert d is not None
    assert (d.picture_id, d.picture_id_bits, d.tl0, d.tid, d.frame_start) == (
        0x1234,
        15,
        200,
        2,
        True,
    )
    out = with_ids(payload, d, 0x8001, 257)  # wraps to the field widths
    e = parse_descriptor(out)
    assert e is not None and (e.picture_id, e.tl0, e.tid) == (1, 1, 2)
    assert out[:2] == payload[:2] and out[5:] == payload[5:]  # nothing else changed


def test_seven_bit_picture_id_and_no_extension() -> None:
    d = parse_descriptor(bytes((0x90, 0x80, 0x05, 0x00)))
    assert d is not None and (d.picture_id, d.picture_id_bits, d.tl0) == (5, 7, None)
    assert with_ids(bytes((0x90, 0x80, 0x05, 0x00)), d, 130, 9) == bytes((0x90, 0x80, 2, 0))
    plain = parse_descriptor(bytes((0x10, 0x00)))
    assert plain is not None and plain.picture_id is None and plain.frame_start


@pytest.mark.parametrize(
    "payload", [b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40", b"\x80\x20"]
)
def test_short_descriptors_are_none(payload: bytes) -> None:
    assert parse_descriptor(payload) is None


@given(st.binary(max_size=12))
def test_any_bytes_parse_or_not_never_raise(payload: bytes) -> None:
    d = parse_descriptor(payload)
    if d is not None:
        assert len(with_ids(payload, d, 12345, 67)) == len(payload)


# -- a receiver's view: libwebrtc's VP8 reference rules, reduced to what a switch touches --------


@dataclass
class Frame:
    layer: str
    picture_id: int  # as sent (field value)
    tl0: int
    tid: int
    key: bool


class ReferenceRules:
    """What a receiver that tracks VP8 references by picture id and TL0PICIDX (libwebrtc's
    RtpVp8RefFinder) does with each frame: per TL0PICIDX, the newest picture id of each
    temporal layer; a keyframe resets its TL0PICIDX's entry; a base-layer frame copies the
    previous TL0PICIDX's entry (an existing entry is kept) and is dropped when that entry's
    picture id is not behind its own; an upper-layer frame is dropped when its entry is ahead
    of it. Picture ids are compared modulo 2^15, TL0PICIDX modulo 2^8 as the receiver unwraps
    them."""

    def __init__(self) -> None:
        self.layers: dict[int, list[int | None]] = {}
        self.newest_tl0: int | None = None
        self.dropped: list[Frame] = []

    @staticmethod
    def ahead(a: int, b: int) -> bool:
        d = (a - b) % (1 << 15)
        return 0 < d < (1 << 14)

    def unwrap_tl0(self, tl0: int) -> int:
        if self.newest_tl0 is None:
            self.newest_tl0 = tl0
            return tl0
        d = (tl0 - self.newest_tl0) % 256
        if d >= 128:
            d -= 256
        value = self.newest_tl0 + d
        self.newest_tl0 = max(self.newest_tl0, value)
        return value

    def receive(self, frame: Frame) -> None:
        tl0 = self.unwrap_tl0(frame.tl0)
        pid = frame.picture_id
        for old in [t for t in self.layers if t < tl0 - 10]:
            del self.layers[old]
        if frame.key:
            self.layers[tl0] = [None, None, None]
            self._update(tl0, frame.tid, pid)
            return
        base = self.layers.get(tl0 - 1 if frame.tid == 0 else tl0)
        if base is None:
            self.dropped.append(frame)  # stashed, for good
            return
        if frame.tid == 0:
            entry = self.layers.setdefault(tl0, list(base))
            last = entry[0]
            if last is not None and not self.ahead(pid, last):
                self.dropped.append(frame)
                return
            self._update(tl0, 0, pid)
            return
        for layer in range(frame.tid + 1):
            last = base[layer]
            if last is not None and self.ahead(last, pid):
                self.dropped.append(frame)
                return
        self._update(tl0, frame.tid, pid)

    def _update(self, tl0: int, tid: int, pid: int) -> None:
        while tl0 in self.layers:
            entry = self.layers[tl0]
            last = entry[tid]
            if last is not None and self.ahead(last, pid):
                break
            entry[tid] = pid
            tl0 += 1


class Publisher:
    """Three VP8 layers of one camera, each numbered from its own random start (L1T3)."""

    def __init__(self, rng: random.Random) -> None:
        self.rids = ("q", "h", "f")
        self.picture_id = {r: rng.randrange(1 << 15) for r in self.rids}
        self.tl0 = {r: rng.randrange(256) for r in self.rids}
        self.frame = 0

    def capture(self, keys: set[str]) -> dict[str, Frame]:
        """One captured picture, encoded by every layer (keyframes on the layers in ``keys``)."""
        tid = TIDS[self.frame % 4]
        out: dict[str, Frame] = {}
        for rid in self.rids:
            key = rid in keys
            t = 0 if key else tid
            if t == 0:
                self.tl0[rid] = (self.tl0[rid] + 1) % 256
            self.picture_id[rid] = (self.picture_id[rid] + 1) % (1 << 15)
            out[rid] = Frame(rid, self.picture_id[rid], self.tl0[rid], t, key)
        self.frame += 1
        return out


def renumber(layers: dict[str, LayerPictureIds], frame: Frame) -> Frame:
    payload = vp8(frame.picture_id, frame.tl0, frame.tid, frame.key)
    assert is_keyframe_start("vp8", payload) is frame.key
    out = layers[frame.layer].rewrite(payload, frame.key)
    d = parse_descriptor(out)
    assert d is not None and d.picture_id is not None and d.tl0 is not None and d.tid is not None
    return Frame(frame.layer, d.picture_id, d.tl0, d.tid, frame.key)


def watch_with_switches(seed: int, renumbered: bool) -> tuple[ReferenceRules, list[Frame]]:
    """A viewer that starts on f and switches, each time at a keyframe of the target layer
    (asked for at the switch), f -> q -> h -> f -> q; and one that stays on h."""
    rng = random.Random(seed)
    publisher = Publisher(rng)
    stream = StreamPictureIds()
    layers = {rid: LayerPictureIds(stream) for rid in publisher.rids}
    switching, staying = ReferenceRules(), ReferenceRules()
    current, plan = "f", ["q", "h", "f", "q"]
    target: str | None = None
    seen: list[Frame] = []
    for n in range(900):
        keys = {rid for rid in publisher.rids if n == 0 or rng.random() < 0.004}
        if n % 150 == 75 and plan:
            target = plan.pop(0)
            keys.add(target)  # the keyframe the switch asks for, a few frames later
        frames = publisher.capture(keys)
        if renumbered:
            frames = {rid: renumber(layers, f) for rid, f in frames.items()}
        if target is not None and frames[target].key:
            current, target = target, None
        switching.receive(frames[current])
        seen.append(frames[current])
        staying.receive(frames["h"])
    assert not staying.dropped, staying.dropped[:3]
    return switching, seen


@pytest.mark.parametrize("seed", range(12))
def test_switching_viewers_lose_no_frame_when_renumbered(seed: int) -> None:
    rules, seen = watch_with_switches(seed, renumbered=True)
    assert not rules.dropped, rules.dropped[:3]
    # what the viewer sees only goes forward: picture ids, and TL0PICIDX of base frames
    for before, after in itertools.pairwise(seen):
        assert 0 < (after.picture_id - before.picture_id) % (1 << 15) <= 33, (before, after)
        assert 0 <= (after.tl0 - before.tl0) % 256 <= 9, (before, after)


def test_without_renumbering_switches_lose_frames() -> None:
    """The control: the publisher's own numbers make a switching viewer drop frames (the
    freeze issue 9's browser test saw) for some random starts: 4 of these 12 (the seeds are
    fixed, so this is exact; at least 3 keeps the test about the rule, not the seeds)."""
    losing = [s for s in range(12) if watch_with_switches(s, renumbered=False)[0].dropped]
    assert len(losing) >= 3, losing


def test_a_single_layer_keeps_its_numbers() -> None:
    stream = StreamPictureIds()
    layer = LayerPictureIds(stream)
    for n in range(300):
        payload = vp8((32700 + n) % (1 << 15), (250 + n // 4) % 256, TIDS[n % 4], n % 100 == 0)
        assert layer.rewrite(payload, n % 100 == 0) == payload
    assert layer.renumbered == 0


def test_a_retransmission_keeps_the_number_of_its_epoch() -> None:
    """A picture sent before the layer's latest keyframe, repaired after it, gets the number
    it had when first sent."""
    stream = StreamPictureIds()
    other, layer = LayerPictureIds(stream), LayerPictureIds(stream)
    other.rewrite(vp8(5000, 10, 0, True), True)
    first = parse_descriptor(layer.rewrite(vp8(100, 50, 0, True), True))
    late = parse_descriptor(layer.rewrite(vp8(101, 50, 2, False), False))
    assert first is not None and late is not None
    assert first.picture_id == 5001 and late.picture_id == 5002
    other.rewrite(vp8(5020, 14, 0, True), True)  # the other layer is ahead now
    key = parse_descriptor(layer.rewrite(vp8(110, 53, 0, True), True))
    assert key is not None and key.picture_id == 5021 and key.tl0 == 15
    assert layer.renumbered == 1 and other.renumbered == 0
    repaired = parse_descriptor(layer.rewrite(vp8(101, 50, 2, False), False))
    assert repaired is not None and repaired.picture_id == 5002 and repaired.tl0 == late.tl0


def test_payloads_without_picture_ids_pass_through() -> None:
    layer = LayerPictureIds(StreamPictureIds())
    for payload in (b"", b"\x10\x00\x9d", bytes((0x90, 0x40, 0x07, 0x00))):
        assert layer.rewrite(payload, True) == payload
