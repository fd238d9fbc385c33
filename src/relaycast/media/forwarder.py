"""Fan-out of one stream's audio or video to every DownTrack.

The Forwarder of a stream kind outlives publishers: viewers attach to it before the streamer
goes live, and a reconnecting publisher's new Track is attached to the same Forwarder, so the
viewers' DownTracks keep their SSRC and sequence space (design.md, "A publisher that reconnects").

Per packet it keeps a short history for NACKs (``cache``) and, for video, the packets since the
last keyframe (``gop``) for fast start. :meth:`forward` is the hot loop: it iterates over an
immutable tuple of DownTracks, so a join or leave during the loop cannot change it.

DownTracks whose sink is a real :class:`MediaSink` are served by the native kernel when it is
enabled (relaycast/native): a LIVE one is a slot of the Forwarder's :class:`NativeGroup`, one
call per packet for all of them; a CATCHING_UP one gets a *paused* slot at
:meth:`Forwarder.catch_up`, its fast-start replay goes out one kernel call per chunk, and it
joins the per-packet call once it has caught up; its NACK answers are one kernel call per NACK
(:meth:`DownTrack.on_nack`). Only a WAITING DownTrack's first keyframe and a first-keyframe hook
still pending at LIVE take the Python path, which is also the whole fan-out when the kernel is
off (and the reference the kernel is tested against).

Fast start is paced: at most ``REPLAY_CHUNK`` replayed packets per event-loop turn over all
joining viewers, so that a burst of joins never holds the loop (live packets, other streams and
timers run between turns).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast import native
from relaycast.media.downtrack import CATCHING_UP, LIVE, ExtLayout
from relaycast.media.picture_ids import StreamPictureIds
from relaycast.net.sink import Address, MediaSink
from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.resolution import FrameSize, frame_size

if TYPE_CHECKING:
    from relaycast.media.downtrack import DownTrack
    from relaycast.media.track import Track

log = logging.getLogger(__name__)

#: a GOP's packets as kernel items, built once per extension layout (by layout identity) and
#: shared by every viewer with that layout that replays it
_GopItems = dict[int, list[native.Item]]

CACHE_SIZE = 1024  # packets kept for NACK answers (~3 s of 2.5 Mbps video)
_CACHE_MASK = CACHE_SIZE - 1
GOP_MAX_PACKETS = 1500  # fast-start burst limit (~1.8 MB)
GOP_REFRESH_AGE = 4.0  # ask for a fresh keyframe when the cached one is older (s)
REPLAY_CHUNK = 64  # fast-start packets sent per event-loop turn, over all joining viewers
REPLAY_MIN_SHARE = 16  # one joining viewer's share of a turn is never smaller (call overhead)


class Forwarder:
    """Forwards the packets of the current source Track of one kind to its DownTracks."""

    def __init__(self, kind: str, *, use_native: bool | None = None) -> None:
        self.kind = kind
        self.downtracks: tuple[DownTrack, ...] = ()
        # the LIVE DownTracks the kernel sends for are in ``native``; the others in ``_python``
        if use_native is None:
            use_native = native.enabled()
        self.native: native.NativeGroup | None = native.NativeGroup() if use_native else None
        self._python: tuple[DownTrack, ...] = ()
        self._python_stale = False
        self.source: Track | None = None
        self.cache: list[RtpPacket | None] = [None] * CACHE_SIZE
        self.gop: list[RtpPacket] = []
        self.gop_started = 0.0
        self.forward_errors = 0
        self.packets = 0
        # viewers catching up on the GOP, served in turn: (downtrack, GOP list being replayed,
        # next index, that GOP's packets as kernel items per extension layout)
        self._replays: list[tuple[DownTrack, list[RtpPacket], int, _GopItems]] = []
        self._replay_scheduled = False
        self._items_gop: list[RtpPacket] | None = None
        self._items: _GopItems = {}
        self.newest: RtpPacket | None = None  # highest sequence number of the current source
        self.newest_at = 0.0
        self._layouts: dict[tuple[tuple[int, str, bytes | None], ...], ExtLayout] = {}
        # simulcast (media/layers.py): the stream's video Forwarder holds one Forwarder per
        # layer; a layer's ``rid`` names it and ``parent`` is the stream's
        self.rid: str | None = None
        self.parent: Forwarder | None = None
        self.layers: dict[str, Forwarder] = {}
        #: the VP8 picture numbering its layers share (media/picture_ids.py)
        self.picture_ids = StreamPictureIds()
        #: called when a layer (or the single encoding) gets or loses its source, keyed by
        #: the viewer that listens (Subscriber.select_layer)
        self.layer_listeners: dict[object, Callable[[], None]] = {}
        #: DownTracks forwarding another layer that move here at this layer's next keyframe
        self._switchers: tuple[DownTrack, ...] = ()

    # -- membership -----------------------------------------------------------------------------

    def add(self, downtrack: DownTrack) -> None:
        """Join the fan-out; equal extension layouts are shared so they are built once."""
        downtrack.layout = self._layouts.setdefault(downtrack.layout.items, downtrack.layout)
        self.downtracks = (*self.downtracks, downtrack)
        self._python_stale = True

    def remove(self, downtrack: DownTrack) -> None:
        self.left_live(downtrack)
        self.downtracks = tuple(d for d in self.downtracks if d is not downtrack)
        self._python_stale = True

    # -- the native kernel's slots --------------------------------------------------------------

    def went_live(self, downtrack: DownTrack) -> None:
        """A DownTrack is LIVE: the kernel sends for it from the next packet, if it can (a
        slot it got for its fast start is set live)."""
        group = self.native
        if group is None or downtrack.state is not LIVE:
            return  # (LIVE implies it joined this fan-out: connect() added it)
        if downtrack.on_first_keyframe is not None:
            # the hook runs on the Python path, which calls this again once it has
            self.left_live(downtrack)
            return
        slot = downtrack.native
        if slot is not None:
            group.set_live(slot)
            return
        self._take_slot(group, downtrack, live=True)

    def _take_slot(self, group: native.NativeGroup, downtrack: DownTrack, *, live: bool) -> None:
        """Give ``downtrack`` a kernel slot (paused unless ``live``) if its sink allows."""
        if downtrack.native is not None:
            return
        sink = downtrack.sink
        if not isinstance(sink, MediaSink):
            return
        handles = sink.native_handles()
        if handles is None:
            return
        session, sock = handles
        try:
            downtrack.native = group.add(
                downtrack,
                srtp_session=session,
                sock=sock,
                addr=sink.addr,
                ssrc=downtrack.ssrc,
                payload_type=downtrack.payload_type,
                seq_offset=downtrack.seq_offset,
                ts_offset=downtrack.ts_offset,
                start_seq=downtrack._start_seq,
                layout=downtrack.layout,
                live=live,
            )
        except (ValueError, OSError) as exc:  # an address the kernel cannot take: stay in Python
            log.debug("%s stays on the Python path: %s", downtrack, exc)
            return
        sink.native_owners.append(downtrack)
        self._python_stale = True

    def left_live(self, downtrack: DownTrack) -> None:
        """The kernel stops sending for ``downtrack`` (LIVE or catching up): its counts and
        sequence floor come back."""
        slot = downtrack.native
        if slot is None or self.native is None:
            return
        downtrack.native_drain()
        downtrack._start_seq = self.native.start_seq(slot)
        self.native.remove(slot)
        downtrack.native = None
        sink = downtrack.sink
        if isinstance(sink, MediaSink) and downtrack in sink.native_owners:
            sink.native_owners.remove(downtrack)
        self._python_stale = True

    def set_native(self, enabled: bool) -> None:
        """Switch the kernel on or off for this Forwarder (benchmarks, tests); LIVE DownTracks
        move over at once."""
        if self.native is not None:
            for downtrack in self.downtracks:
                self.left_live(downtrack)
        self.native = group = native.NativeGroup() if enabled else None
        self._python_stale = True
        for downtrack in self.downtracks:
            if group is not None and downtrack.state is CATCHING_UP:
                self._take_slot(group, downtrack, live=False)
            self.went_live(downtrack)

    def native_take(self, slot: native.Slot) -> native.Counts:
        assert self.native is not None
        return self.native.take(slot)

    def native_resend(
        self, slot: native.Slot, items: list[native.Item], rtx: tuple[int, int, int] | None
    ) -> native.Counts:
        """One NACK's answers to one viewer through the kernel (DownTrack.on_nack)."""
        assert self.native is not None
        return self.native.resend(slot, items, rtx)

    def native_moved(self, downtrack: DownTrack, addr: Address) -> None:
        slot = downtrack.native
        sink = downtrack.sink
        if slot is None or self.native is None or not isinstance(sink, MediaSink):
            return
        handles = sink.native_handles()
        try:
            if handles is None:
                raise ValueError("the sink has no native handles any more")
            self.native.set_addr(slot, handles[1], addr)
        except (ValueError, OSError) as exc:
            log.debug("%s goes back to the Python path: %s", downtrack, exc)
            self.left_live(downtrack)

    def attach_source(self, track: Track) -> None:
        """A (new) publisher track becomes the source; DownTracks restart on its first keyframe."""
        if self.source is not None:
            self.detach_source(self.source)
        self.source = track
        for downtrack in self.downtracks:
            downtrack.source_changed(track)
        if self.kind == "video" and (self.downtracks or self._switchers):
            track.request_keyframe()
        self._sources_changed()

    def detach_source(self, track: Track) -> None:
        if self.source is track:
            for downtrack in self.downtracks:
                downtrack.source_lost()
            self.source = None
            self.cache = [None] * CACHE_SIZE
            self.gop = []
            self.newest = None
            for downtrack in self._switchers:  # nothing to switch to any more
                downtrack.switch_cancelled(self)
            self._switchers = ()
            self._sources_changed()

    # -- simulcast layers (media/layers.py) -----------------------------------------------------

    def layer(self, rid: str) -> Forwarder:
        """The Forwarder of simulcast layer ``rid`` (made on first use; it outlives
        publishers as this one does)."""
        forwarder = self.layers.get(rid)
        if forwarder is None:
            forwarder = self._new_layer(rid)
            forwarder.rid = rid
            forwarder.parent = self
            self.layers[rid] = forwarder
        return forwarder

    def _new_layer(self, rid: str) -> Forwarder:
        """A new layer's Forwarder (a subclass, such as a relay's, makes its own kind)."""
        return Forwarder(self.kind, use_native=self.native is not None)

    def _sources_changed(self) -> None:
        root = self.parent or self
        for listener in list(root.layer_listeners.values()):
            listener()

    def await_keyframe(self, downtrack: DownTrack) -> None:
        """``downtrack`` moves here at this layer's next keyframe (asked for now)."""
        if downtrack not in self._switchers:
            self._switchers = (*self._switchers, downtrack)
        self.request_keyframe()

    def cancel_switch(self, downtrack: DownTrack) -> None:
        self._switchers = tuple(d for d in self._switchers if d is not downtrack)

    def _switch_here(self, packet: RtpPacket, tails: dict[int, tuple[int, bytes, bytes]]) -> None:
        """A keyframe: the DownTracks waiting for it leave their layer and start with it."""
        switchers, self._switchers = self._switchers, ()
        for downtrack in switchers:
            try:
                downtrack.finish_switch(self, packet, tails)
            except Exception:
                self.forward_errors += 1
                log.exception("switching %s to layer %s failed", downtrack, self.rid)

    # -- the hot path ---------------------------------------------------------------------------

    def forward(self, packet: RtpPacket, keyframe: bool, now: float) -> None:
        """Send one source packet to every DownTrack (design.md: synchronous, no await)."""
        seq = packet.sequence_number
        slot = seq & _CACHE_MASK
        previous = self.cache[slot]
        if previous is not None and previous.sequence_number == seq:
            return  # duplicate (a retransmission that arrived twice)
        self.cache[slot] = packet
        self.packets += 1
        newest = self.newest
        if newest is None or (seq - newest.sequence_number) & 0xFFFF < 0x8000:
            self.newest = packet
            self.newest_at = now
        if self.kind == "video":
            self._remember_for_fast_start(packet, keyframe)
        tails: dict[int, tuple[int, bytes, bytes]] = {}
        group = self.native
        if group is not None:
            if group.slots:
                self._forward_native(group, packet, keyframe, tails)
            if self._python_stale:
                self._python_stale = False
                self._python = tuple(d for d in self.downtracks if d.native is None)
            downtracks = self._python
        else:
            downtracks = self.downtracks
        for downtrack in downtracks:
            try:
                downtrack.send(packet, keyframe, tails)
            except Exception:  # one broken viewer never stops the others
                self.forward_errors += 1
                downtrack.counters.forward_errors += 1
                errors = self.forward_errors
                if errors & (errors - 1) == 0:  # log the 1st, 2nd, 4th, 8th... failure only
                    log.exception("forwarding to %s failed (%d failures)", downtrack, errors)
        if keyframe and self._switchers:
            self._switch_here(packet, tails)

    def _forward_native(
        self,
        group: native.NativeGroup,
        packet: RtpPacket,
        keyframe: bool,
        tails: dict[int, tuple[int, bytes, bytes]],
    ) -> None:
        """The kernel's share: one extension block per layout in use, one call."""
        source = self.source
        ids = source.ext_ids if source is not None else {}
        exts: list[bytes] = []
        for layout in group.layouts:
            if layout is None:
                exts.append(b"")
                continue
            tail = tails.get(id(layout))
            if tail is None:
                assert isinstance(layout, ExtLayout)
                tail = layout.tail(packet, ids, tails)
            exts.append(tail[1])
        try:
            errors = group.forward(
                packet.payload,
                packet.sequence_number,
                packet.timestamp,
                packet.marker,
                keyframe,
                tuple(exts),
            )
        except Exception:
            self.forward_errors += len(group.slots)
            log.exception("native fan-out of a packet failed")
            return
        if errors:  # rare: count them where they belong right away (server.send_errors)
            for slot in group.error_slots():
                owner = slot.owner
                if hasattr(owner, "native_drain"):
                    owner.native_drain()

    def _remember_for_fast_start(self, packet: RtpPacket, keyframe: bool) -> None:
        gop = self.gop
        if keyframe:
            self.gop = [packet]  # a new list: viewers still replaying the old one finish it first
            self.gop_started = time.monotonic()
        elif gop:
            if len(gop) >= GOP_MAX_PACKETS:
                self.gop = []  # too long to replay; the next keyframe starts a fresh one
                if self.source is not None:
                    self.source.request_keyframe()
            else:
                gop.append(packet)

    # -- joins and repairs ----------------------------------------------------------------------

    def catch_up(self, downtrack: DownTrack) -> None:
        """Fast start: replay the cached keyframe and what followed it to a new viewer.

        The replay goes out in chunks, at most ``REPLAY_CHUNK`` packets per event-loop turn over
        all joining viewers, so a burst of joins does not hold up the live fan-out to everybody
        else; the joining viewer gets no live packet until it has caught up with the GOP (which
        grows meanwhile). With the kernel, the viewer gets a paused slot now and each chunk is
        one kernel call.
        """
        if self.source is None:
            return
        if self.kind != "video":
            return  # audio starts with the next packet
        if not self.gop:
            self.source.request_keyframe()
            return
        if not downtrack.begin_replay(self.gop[0]):
            return
        if self.native is not None:
            self._take_slot(self.native, downtrack, live=False)
        self._replays.append((downtrack, self.gop, 0, self._items_for(self.gop)))
        if not self._replay_scheduled:  # else it waits for its turn: one pacing chain only
            self._replay()
        if time.monotonic() - self.gop_started > GOP_REFRESH_AGE:
            # the next viewer should not replay an ever longer burst
            self.source.request_keyframe()

    def _items_for(self, gop: list[RtpPacket]) -> _GopItems:
        if gop is not self._items_gop:
            self._items_gop = gop
            self._items = {}
        return self._items

    def _replay(self) -> None:
        """One turn: the next chunks of the pending replays, ``REPLAY_CHUNK`` packets in all,
        in turn (those not served go first next time); reschedule while any is left."""
        self._replay_scheduled = False
        replays = self._replays
        budget = REPLAY_CHUNK
        share = max(REPLAY_CHUNK // max(len(replays), 1), REPLAY_MIN_SHARE)
        waiting: list[tuple[DownTrack, list[RtpPacket], int, _GopItems]] = []
        served: list[tuple[DownTrack, list[RtpPacket], int, _GopItems]] = []
        for entry in replays:
            downtrack, gop, index, items = entry
            if downtrack.state is not CATCHING_UP or downtrack.forwarder is not self:
                continue  # closed, restarted or moved to another layer meanwhile
            if budget <= 0:
                waiting.append(entry)
                continue
            end = min(index + min(share, budget), len(gop))
            budget -= end - index
            if downtrack.native is not None:
                self._replay_native(downtrack, gop, index, end, items)
            else:
                self._replay_python(downtrack, gop, index, end)
            if downtrack.state is not CATCHING_UP:
                continue
            if end < len(gop):
                served.append((downtrack, gop, end, items))
            elif gop is not self.gop and self.gop:  # a new GOP began: continue into it
                served.append((downtrack, self.gop, 0, self._items_for(self.gop)))
            else:
                downtrack.caught_up()  # live packets from now on
        self._replays = pending = waiting + served
        if pending and not self._replay_scheduled:
            self._replay_scheduled = True
            asyncio.get_running_loop().call_soon(self._replay)

    def _replay_python(
        self, downtrack: DownTrack, gop: list[RtpPacket], index: int, end: int
    ) -> None:
        tails: dict[int, tuple[int, bytes, bytes]] = {}
        for position in range(index, end):
            tails.clear()
            downtrack.send(gop[position], position == 0, tails, replay=True)

    def _replay_native(
        self,
        downtrack: DownTrack,
        gop: list[RtpPacket],
        index: int,
        end: int,
        cache: _GopItems,
    ) -> None:
        """``gop[index:end]`` to ``downtrack``'s paused slot in one kernel call; the items (the
        packets with the layout's extension block) are built once per GOP and layout."""
        layout = downtrack.layout
        items = cache.get(id(layout))
        if items is None:
            items = cache[id(layout)] = []
        if len(items) < end:
            source = self.source
            ids = source.ext_ids if source is not None else {}
            for position in range(len(items), end):
                packet = gop[position]
                items.append(
                    (
                        packet.payload,
                        packet.sequence_number,
                        packet.timestamp,
                        packet.marker,
                        position == 0,
                        layout.build(packet, ids)[1],
                    )
                )
        group, slot = self.native, downtrack.native
        assert group is not None and slot is not None
        try:
            counts = group.replay(slot, items, index, end)
        except Exception:  # nothing was sent: the Python path takes this viewer over
            log.exception("native fast start to %s failed", downtrack)
            self.left_live(downtrack)
            self._replay_python(downtrack, gop, index, end)
            return
        downtrack.native_counted(counts)

    def frame_size(self) -> FrameSize | None:
        """The size the cached keyframe announces (its first packets carry SPS / frame header)."""
        source = self.source
        if source is None or not self.gop:
            return None
        for packet in self.gop[:4]:
            size = frame_size(source.codec_name, packet.payload)
            if size is not None:
                return size
        return None

    def lookup(self, seq: int) -> RtpPacket | None:
        """The cached source packet with this sequence number, if still held."""
        packet = self.cache[seq & _CACHE_MASK]
        if packet is not None and packet.sequence_number == seq:
            return packet
        return None

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()
