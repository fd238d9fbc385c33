"""One VP8 picture numbering for all the layers of a simulcast stream.

Each simulcast encoding numbers its pictures on its own (RFC 7741 §4.2: PictureID and
TL0PICIDX, each starting at a random value). A viewer switched from one layer to another at
a keyframe then sees these numbers jump, often backwards, and a receiver that tracks
references by them drops what follows: libwebrtc's VP8 reference finder drops a base-layer
frame whose picture id is not ahead of the last one it kept for that TL0PICIDX, and keeps the
per-TL0PICIDX state of the old layer until the new layer's numbers run into it. The viewer
freezes until its own keyframe request, seconds later.

So the server renumbers at ingest, once per packet for every viewer: each layer keeps its own
numbers plus an offset, and at each of its keyframes the offset is chosen again so that the
keyframe comes after every number any layer of the stream has used (unless it already does,
by a small step). A viewer switches only at a keyframe of the target layer, so what it sees
only ever moves forward, and the new layer's numbers never meet the old one's. Viewers that
stay on a layer see, at most, a small forward step at a keyframe, which starts a new chain of
references anyway. (mediasoup renumbers per viewer instead; numbering at ingest leaves the
native fan-out's per-viewer work unchanged.)

Single-encoding streams are not touched: their numbers are the publisher's.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaycast.rtp.vp8 import parse_descriptor, with_ids

#: a layer's keyframe may lead the stream's newest picture id (TL0PICIDX) by this much and
#: keep its numbers (frames lost before it); any other step is renumbered to newest + 1
PICTURE_ID_STEP_MAX = 32
TL0_STEP_MAX = 8


class StreamPictureIds:
    """The newest picture id and TL0PICIDX any layer of one stream sent, in the server's
    numbering (unwrapped). It outlives publishers (kept by the stream's video Forwarder), so
    the numbers go on forward when the streamer publishes again."""

    def __init__(self) -> None:
        self.picture_id: int | None = None
        self.tl0: int | None = None


class _Unwrapper:
    """A ``bits``-wide counter as an unbounded integer, relative to the newest value seen."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._space = 1 << bits
        self._newest: int | None = None

    def unwrap(self, value: int) -> int:
        newest = self._newest
        if newest is None:
            self._newest = value
            return value
        half = self._space >> 1
        delta = (value - newest) % self._space
        if delta >= half:
            delta -= self._space
        unwrapped = newest + delta
        if delta > 0:
            self._newest = unwrapped
        return unwrapped


@dataclass(frozen=True, slots=True)
class _Epoch:
    """From the picture (the layer's own numbering) ``start`` on, these offsets apply."""

    start: int
    picture_id_offset: int
    tl0_offset: int


class LayerPictureIds:
    """Renumbers the pictures of one simulcast layer (one publisher Track) into its stream's
    numbering (:class:`StreamPictureIds`)."""

    def __init__(self, stream: StreamPictureIds) -> None:
        self.stream = stream
        self._picture_ids: _Unwrapper | None = None
        self._tl0s = _Unwrapper(8)
        self._epoch: _Epoch | None = None
        #: the epoch before the current one: a retransmission of a picture sent before this
        #: layer's latest keyframe keeps the number it had
        self._previous: _Epoch | None = None
        #: keyframes whose numbers were moved (they would have gone backwards or far ahead)
        self.renumbered = 0

    def rewrite(self, payload: bytes, keyframe: bool) -> bytes:
        """``payload`` in the stream's numbering; ``keyframe``: the first packet of a keyframe.
        A payload without a picture id is returned as it is."""
        descriptor = parse_descriptor(payload)
        if descriptor is None or descriptor.picture_id is None:
            return payload
        counter = self._picture_ids
        if counter is None or counter.bits != descriptor.picture_id_bits:
            counter = self._picture_ids = _Unwrapper(descriptor.picture_id_bits)
            self._epoch = self._previous = None
        picture_id = counter.unwrap(descriptor.picture_id)
        tl0 = self._tl0s.unwrap(descriptor.tl0) if descriptor.tl0 is not None else None
        epoch = self._epoch
        if epoch is None or (keyframe and picture_id > epoch.start):
            epoch = self._begin(picture_id, tl0)
        elif picture_id < epoch.start and self._previous is not None:
            epoch = self._previous
        stream = self.stream
        out_picture_id = picture_id + epoch.picture_id_offset
        if stream.picture_id is None or out_picture_id > stream.picture_id:
            stream.picture_id = out_picture_id
        out_tl0: int | None = None
        if tl0 is not None:
            out_tl0 = tl0 + epoch.tl0_offset
            if stream.tl0 is None or out_tl0 > stream.tl0:
                stream.tl0 = out_tl0
        if epoch.picture_id_offset == 0 and (out_tl0 is None or epoch.tl0_offset == 0):
            return payload
        return with_ids(payload, descriptor, out_picture_id, out_tl0)

    def _begin(self, picture_id: int, tl0: int | None) -> _Epoch:
        """A keyframe (or the layer's first packet): choose the offsets from here on."""
        stream = self.stream
        old = self._epoch
        picture_id_offset = old.picture_id_offset if old is not None else 0
        tl0_offset = old.tl0_offset if old is not None else 0
        moved = False
        if stream.picture_id is not None:
            step = picture_id + picture_id_offset - stream.picture_id
            if not 0 < step <= PICTURE_ID_STEP_MAX:
                picture_id_offset = stream.picture_id + 1 - picture_id
                moved = True
        if tl0 is not None and stream.tl0 is not None:
            step = tl0 + tl0_offset - stream.tl0
            if not 0 < step <= TL0_STEP_MAX:
                tl0_offset = stream.tl0 + 1 - tl0
                moved = True
        if moved and old is not None:
            self.renumbered += 1
        epoch = _Epoch(picture_id, picture_id_offset, tl0_offset)
        self._previous, self._epoch = old, epoch
        return epoch
