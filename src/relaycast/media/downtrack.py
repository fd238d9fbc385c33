"""One outgoing track towards one viewer.

Its life is one explicit :class:`DownTrackState`: ``IDLE`` until the viewer's DTLS is up (it is
not in the fan-out then), ``WAITING`` for a keyframe of a source it can play, ``CATCHING_UP`` while
the cached GOP is replayed (fast start), ``LIVE``, ``INCOMPATIBLE`` while the source's codec is one
the viewer did not negotiate, ``CLOSED``.

Rewrites (RFC 3550 §5.1, RFC 7160 for clock continuity): SSRC, payload type, sequence number,
timestamp and header-extension ids; starts on a keyframe; answers the viewer's NACKs from the
Forwarder's cache (RFC 4588 RTX when negotiated); sends sender reports mapped from the
publisher's so that audio and video stay in sync (RFC 3550 §6.4.1).

With a slot in the Forwarder's native kernel (relaycast/native) the rewriting and sending of
live packets, of the fast-start replay and of NACK answers happen in C; the decisions (state,
offsets, which NACKed packets within the budget) stay here, and :meth:`DownTrack.send` and the
Python half of :meth:`DownTrack.on_nack` remain the reference the kernel is tested against.
"""

from __future__ import annotations

import enum
import logging
import secrets
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast.media.feedback.reports import SenderStats
from relaycast.media.feedback.retransmit import RetransmitBudget
from relaycast.media.stats import StreamCounters
from relaycast.net.sink import NULL_SINK, Address, PacketSink
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.rtp.rtcp import RtcpSenderReport

if TYPE_CHECKING:
    from relaycast.media.bwe.history import SequencerLike
    from relaycast.media.forwarder import Forwarder
    from relaycast.media.track import Track
    from relaycast.native import Counts, Item, Slot

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
NTP_PER_SECOND = 1 << 32

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
_TWCC_PLACEHOLDER = b"\x00\x00"


def stamp_twcc(ext: bytes, seq: int) -> bytes:
    """``ext`` (a block whose first element is the 2-byte transport-wide sequence number, as
    :meth:`ExtLayout.build` makes it) with ``seq`` in that element; the native kernel patches
    its copy at the same offset (after the 4-byte block header and the element's 1- or 2-byte
    header)."""
    at = 5 if ext[0] == 0xBE else 6
    return ext[:at] + bytes(((seq >> 8) & 0xFF, seq & 0xFF)) + ext[at + 2 :]


class ExtLayout:
    """The header extensions one viewer negotiated: ``(viewer id, uri, constant value)``.

    Viewers with equal layouts share the rewritten extension block of each packet, so the
    block is built once per packet per layout, not once per viewer. The Forwarder interns
    equal layouts (:meth:`Forwarder.add`), so the per-packet cache is keyed by identity.

    The transport-wide sequence number (``TWCC_URI``, TWCC to viewers) is per viewer, not per
    layout: the block carries it first, as a placeholder each send stamps (:func:`stamp_twcc`).
    """

    __slots__ = ("items", "twcc_id")

    def __init__(self, items: tuple[tuple[int, str, bytes | None], ...]) -> None:
        self.items = items
        #: the viewer's id of the transport-wide sequence number, None if not negotiated
        self.twcc_id: int | None = next((i for i, uri, _ in items if uri == TWCC_URI), None)

    def build(self, packet: RtpPacket, source_ids: dict[str, int]) -> tuple[int, bytes]:
        """(first header byte, extension block with its 4-byte header) for ``packet``."""
        values: list[tuple[int, bytes]] = []
        if self.twcc_id is not None:
            values.append((self.twcc_id, _TWCC_PLACEHOLDER))
        for viewer_id, uri, constant in self.items:
            if uri == TWCC_URI:
                continue
            if constant is not None:
                values.append((viewer_id, constant))
                continue
            source_id = source_ids.get(uri)
            if source_id is not None:
                value = packet.get_extension(source_id)
                if value:
                    values.append((viewer_id, value))
        if not values:
            return 0x80, b""
        profile, block = build_extensions(values)
        return 0x90, _EXT_HEADER.pack(profile, len(block) // 4) + block

    def tail(
        self,
        packet: RtpPacket,
        source_ids: dict[str, int],
        tails: dict[int, tuple[int, bytes, bytes]],
    ) -> tuple[int, bytes, bytes]:
        """(first header byte, extension block, block + payload) for ``packet``, built once per
        packet and kept in ``tails`` (by layout identity) for every viewer with this layout."""
        b0, ext = self.build(packet, source_ids)
        tail = tails[id(self)] = (b0, ext, ext + packet.payload)
        return tail


class DownTrackState(enum.Enum):
    IDLE = "idle"  # the viewer is not connected: not in the fan-out
    WAITING = "waiting"  # connected, waits for a keyframe of a compatible source
    CATCHING_UP = "catching_up"  # replaying the cached GOP (fast start); live packets wait
    LIVE = "live"
    INCOMPATIBLE = "incompatible"  # the source's codec is not one the viewer negotiated
    PAUSED = "paused"  # connected, but no layer fits the viewer's bandwidth: not in a fan-out
    CLOSED = "closed"


IDLE = DownTrackState.IDLE
WAITING = DownTrackState.WAITING
CATCHING_UP = DownTrackState.CATCHING_UP
LIVE = DownTrackState.LIVE
INCOMPATIBLE = DownTrackState.INCOMPATIBLE
PAUSED = DownTrackState.PAUSED
CLOSED = DownTrackState.CLOSED


class _KernelCounter:
    """A DownTrack counter the native kernel may hold part of: reading it takes that part in
    first (``DownTrack.native_drain``); the hot path adds to the ``_name`` attribute directly."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_{name}"

    def __get__(self, downtrack: DownTrack | None, owner: type | None = None) -> int:
        if downtrack is None:
            raise AttributeError(f"{self._attr[1:]} is a DownTrack instance counter")
        if downtrack.native is not None:
            downtrack.native_drain()
        value: int = getattr(downtrack, self._attr)
        return value


class DownTrack:
    """Rewrites one Forwarder's packets for one viewer and sends them through its sink."""

    def __init__(
        self,
        *,
        kind: str,
        forwarder: Forwarder,
        ssrc: int,
        rtx_ssrc: int | None,
        payload_types: dict[str, int],
        rtx_payload_types: dict[int, int],
        clock_rate: int,
        layout: ExtLayout,
        cname: str,
        counters: StreamCounters | None = None,
    ) -> None:
        self.kind = kind
        self.forwarder = forwarder
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_types = payload_types  # codec_key -> the viewer's payload type
        self.rtx_payload_types = rtx_payload_types  # viewer pt -> viewer rtx pt
        self.clock_rate = clock_rate
        self.layout = layout
        self.cname = cname
        self.counters = counters if counters is not None else StreamCounters()
        self.sink: PacketSink = NULL_SINK
        self._send_rtp = NULL_SINK.send_rtp  # the sink's, bound once
        self.state = IDLE
        self._compatible = False  # whether the current source's codec was negotiated
        self.payload_type = 0
        self.rtx_payload_type: int | None = None
        self._start_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        # where our sequence/timestamp space continues after a source change (seq, ts, time)
        self._resume: tuple[int, int, float] | None = None
        self._rtx_seq = secrets.randbits(15)
        self._align: tuple[Track, int] | None = None  # (old source, its ts offset) at a switch
        self.stats = SenderStats(ssrc, clock_rate)
        self.budget = RetransmitBudget()
        # sent by the Python path (and taken from the native kernel: the properties below)
        self._packets_sent = 0
        self._payload_bytes = 0
        self._send_errors = 0
        self._keyframes_sent = 0
        #: this DownTrack's slot in its Forwarder's native kernel while that sends for it
        self.native: Slot | None = None
        self.retransmitted = 0
        self.nack_misses = 0
        self.keyframe_requests = 0
        #: called once, when the first keyframe goes to this viewer (time-to-first-frame)
        self.on_first_keyframe: Callable[[], None] | None = None
        #: the viewer transport's transport-wide sequence numbers (media/bwe/history.py),
        #: shared with its other DownTrack; stamped when ``layout.twcc_id`` is set
        self.transport_seq: SequencerLike | None = None
        # simulcast (media/layers.py): the layer Forwarder this one moves to at its next
        # keyframe, and the first sequence number sent from the current source (NACKs for
        # older ones name packets of another source: they are not answered from this one)
        self.pending: Forwarder | None = None
        self._out_floor: int | None = None
        #: the selection's view, for the API and the WHEP layer extension (contract names)
        self.layer_mode = "auto"
        self.layer_reason = ""
        self.layer_switches = 0

    def __repr__(self) -> str:
        return f"DownTrack({self.kind}, ssrc={self.ssrc}, {self.state.value})"

    # -- counters (the native kernel's share is taken when they are read) ----------------------

    def native_drain(self) -> None:
        """Take the kernel's counts for this DownTrack into its own and its sink's counters."""
        slot = self.native
        if slot is None:
            return
        packets, wire_bytes, payload_bytes, keyframes, errors = self.forwarder.native_take(slot)
        self._packets_sent += packets
        self._payload_bytes += payload_bytes
        self._keyframes_sent += keyframes
        self._send_errors += errors
        native_sent = getattr(self.sink, "native_sent", None)
        if native_sent is not None:
            native_sent(packets, wire_bytes, errors)

    def native_counted(self, counts: Counts) -> None:
        """The counts of one fast-start kernel call (Forwarder._replay_native): taken in as
        ``send`` would have counted them; the first keyframe runs the hook."""
        packets, wire_bytes, payload_bytes, keyframes, errors = counts
        self._packets_sent += packets
        self._payload_bytes += payload_bytes
        self._keyframes_sent += keyframes
        self._send_errors += errors
        native_sent = getattr(self.sink, "native_sent", None)
        if native_sent is not None:
            native_sent(packets, wire_bytes, errors)
        if keyframes and self.on_first_keyframe is not None:
            hook, self.on_first_keyframe = self.on_first_keyframe, None
            hook()

    def native_moved(self, addr: Address) -> None:
        """The sink's peer moved: the kernel sends there from now on."""
        self.forwarder.native_moved(self, addr)

    packets_sent = _KernelCounter()
    payload_bytes = _KernelCounter()
    send_errors = _KernelCounter()
    keyframes_sent = _KernelCounter()

    @property
    def started(self) -> bool:
        """Sequence and timestamp offsets are set: packets are going out."""
        return self.state is LIVE or self.state is CATCHING_UP

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self, sink: PacketSink) -> None:
        """The viewer's DTLS is up: join the fan-out, start from the GOP cache or a keyframe."""
        if self.state is not IDLE:
            return
        self.sink = sink
        self._send_rtp = sink.send_rtp
        source = self.forwarder.source  # it may have changed while we were not in the fan-out
        if source is not None:
            self._adopt(source)
        self.state = INCOMPATIBLE if source is not None and not self._compatible else WAITING
        self.forwarder.add(self)
        if self.state is WAITING:
            self.forwarder.catch_up(self)

    def begin_replay(self, keyframe: RtpPacket) -> bool:
        """Fast start: the Forwarder replays its GOP from ``keyframe``; False if not waiting."""
        if self.state is not WAITING:
            return False
        self._start(keyframe)
        self.state = CATCHING_UP
        return True

    def caught_up(self) -> None:
        if self.state is CATCHING_UP:
            self.state = LIVE
            self.forwarder.went_live(self)

    def source_lost(self) -> None:
        """The source goes away: remember where our sequence and timestamps continue."""
        forwarder = self.forwarder
        forwarder.left_live(self)
        if self.started and forwarder.newest is not None:
            self._resume = self._resume_point()
        if self.state in (LIVE, CATCHING_UP, INCOMPATIBLE):
            self.state = WAITING

    def _adopt(self, track: Track) -> None:
        """Take the payload types for ``track``'s codec, if the viewer negotiated it."""
        payload_type = self.payload_types.get(track.codec_key)
        self._compatible = payload_type is not None
        if payload_type is not None:
            self.payload_type = payload_type
            self.rtx_payload_type = self.rtx_payload_types.get(payload_type)
        else:
            log.warning("%s cannot play %s: the viewer did not negotiate it", self, track.codec_key)

    def source_changed(self, track: Track) -> None:
        """A new publisher track: wait for its keyframe, keep our own SSRC/sequence space."""
        self._adopt(track)
        if self.state is not IDLE and self.state is not CLOSED and self.state is not PAUSED:
            if self.started:
                self.source_lost()
            self.state = WAITING if self._compatible else INCOMPATIBLE

    def close(self) -> None:
        if self.state is CLOSED:
            return
        joined = self.state is not IDLE and self.state is not PAUSED
        self._cancel_pending()
        self.forwarder.left_live(self)
        self.state = CLOSED
        self.sink = NULL_SINK
        self._send_rtp = NULL_SINK.send_rtp
        if joined:
            self.forwarder.remove(self)

    # -- simulcast layer switches (media/layers.py decides, this carries them out) -------------

    @property
    def layer(self) -> str | None:
        """The rid of the layer being forwarded (None: single encoding, paused or waiting)."""
        if self.state is LIVE or self.state is CATCHING_UP:
            return self.forwarder.rid
        return None

    @property
    def target_layer(self) -> str | None:
        """The rid of the layer this viewer is moving to, else the current one's."""
        if self.pending is not None:
            return self.pending.rid
        if self.state is PAUSED:
            return None
        return self.forwarder.rid

    def switch_to(self, target: Forwarder, *, fast_start: bool = True) -> None:
        """Forward ``target`` (another simulcast layer, or the stream's single encoding).

        While packets are going out, the current layer keeps going until ``target``'s next
        keyframe (asked for now); then the switch happens on that keyframe, and the viewer's
        sequence numbers and timestamps go on from where they were (:meth:`finish_switch`).
        Otherwise (waiting, paused, not connected) the move is immediate; a waiting viewer
        starts from ``target``'s cached GOP when ``fast_start``, else from its next keyframe.
        """
        state = self.state
        if state is CLOSED:
            return
        if target is self.pending:
            return
        self._cancel_pending()
        if target is self.forwarder and state is not PAUSED:
            return
        if state is IDLE:
            self.forwarder = target
            if target.source is not None:
                self._adopt(target.source)
            return
        if state is LIVE:
            self.pending = target
            target.await_keyframe(self)
            return
        if state is CATCHING_UP:
            return  # the selection asks again once it is live
        # WAITING, INCOMPATIBLE or PAUSED: nothing of the current source is on screen
        if state is not PAUSED:
            self.forwarder.left_live(self)
            self.forwarder.remove(self)
        self.forwarder = target
        source = target.source
        if source is not None:
            self._adopt(source)
        self.state = INCOMPATIBLE if source is not None and not self._compatible else WAITING
        target.add(self)
        if self.state is WAITING:
            if fast_start:
                target.catch_up(self)
            else:
                target.request_keyframe()

    def pause(self) -> None:
        """Stop the video (no layer fits): out of every fan-out until :meth:`switch_to`; the
        sequence and timestamps go on from here when it resumes."""
        if self.state in (IDLE, CLOSED, PAUSED):
            return
        self._cancel_pending()
        forwarder = self.forwarder
        if self.started:
            self._resume = self._resume_point()
        forwarder.left_live(self)
        forwarder.remove(self)
        self.state = PAUSED

    def finish_switch(
        self, target: Forwarder, packet: RtpPacket, tails: dict[int, tuple[int, bytes, bytes]]
    ) -> None:
        """``target``'s keyframe ``packet`` arrived: leave the current layer and start with it,
        the first sequence number right after the last one sent, the timestamp where the
        publisher's clocks (its sender reports) put the keyframe."""
        if self.pending is not target:
            return
        self.pending = None
        old = self.forwarder
        old_source = old.source
        old_ts_offset = self.ts_offset
        if self.started:
            self._resume = self._resume_point()
        old.left_live(self)
        old.remove(self)
        self.forwarder = target
        source = target.source
        if source is None:
            self.state = WAITING
            target.add(self)
            return
        self._adopt(source)
        if not self._compatible:
            self.state = INCOMPATIBLE
            target.add(self)
            return
        self._align = (old_source, old_ts_offset) if old_source is not None else None
        self.state = WAITING
        self.layer_switches += 1
        target.add(self)
        self.send(packet, True, tails)  # WAITING + keyframe: offsets chosen, LIVE, sent

    def switch_cancelled(self, target: Forwarder) -> None:
        if self.pending is target:
            self.pending = None

    def _cancel_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            pending.cancel_switch(self)

    def _resume_point(self) -> tuple[int, int, float] | None:
        """Where our sequence and timestamps continue: after the newest packet mapped."""
        forwarder = self.forwarder
        newest = forwarder.newest
        if newest is None:
            return self._resume
        return (
            (newest.sequence_number + self.seq_offset) & 0xFFFF,
            (newest.timestamp + self.ts_offset) & 0xFFFFFFFF,
            forwarder.newest_at,
        )

    def set_layout(self, layout: ExtLayout) -> None:
        """Use another extension layout from the next packet on (a playout-delay change):
        equal layouts stay shared with the Forwarder's other viewers, native slot included."""
        forwarder = self.forwarder
        layout = forwarder._layouts.setdefault(layout.items, layout)
        if layout is self.layout:
            return
        self.layout = layout
        group, slot = forwarder.native, self.native
        if group is not None and slot is not None:
            group.set_layout(slot, layout)

    # -- the hot path ---------------------------------------------------------------------------

    def send(
        self,
        packet: RtpPacket,
        keyframe: bool,
        tails: dict[int, tuple[int, bytes, bytes]],
        replay: bool = False,
    ) -> None:
        """Rewrite and send one packet; ``tails`` caches each layout's ext+payload."""
        state = self.state
        if state is not LIVE:
            if state is CATCHING_UP:
                if not replay:
                    return
            elif state is WAITING and (keyframe or self.kind != "video"):
                self._start(packet)
                self.state = LIVE
                self.send(packet, keyframe, tails)
                self.forwarder.went_live(self)  # the native kernel may take over from here
                return
            else:
                return
        delta = (packet.sequence_number - self._start_seq) & 0xFFFF
        if delta > 0x8000:
            return  # older than our starting point
        if delta > 0x4000:  # let the floor follow the stream across wrap-arounds
            self._start_seq = (packet.sequence_number - 0x2000) & 0xFFFF
        layout = self.layout
        tail = tails.get(id(layout))
        if tail is None:
            source = self.forwarder.source
            tail = layout.tail(packet, source.ext_ids if source is not None else {}, tails)
        header = _HEADER.pack(
            tail[0],
            (0x80 if packet.marker else 0) | self.payload_type,
            (packet.sequence_number + self.seq_offset) & 0xFFFF,
            (packet.timestamp + self.ts_offset) & 0xFFFFFFFF,
            self.ssrc,
        )
        transport_seq = self.transport_seq
        if transport_seq is not None and layout.twcc_id is not None:
            twcc = transport_seq.stamp()
            size = self._send_rtp(header + stamp_twcc(tail[1], twcc) + packet.payload)
            if size:
                transport_seq.sent(twcc, size)
        else:
            size = self._send_rtp(header + tail[2])
        if not size:
            self._send_errors += 1
            return
        self._packets_sent += 1
        self._payload_bytes += len(packet.payload)
        if keyframe:
            self._keyframes_sent += 1
            if self.on_first_keyframe is not None:
                hook, self.on_first_keyframe = self.on_first_keyframe, None
                hook()
                if state is LIVE:
                    self.forwarder.went_live(self)

    def _start(self, packet: RtpPacket) -> None:
        """Choose offsets so that our sequence and timestamps continue where they left off."""
        align, self._align = self._align, None
        if self._resume is None:
            first_seq, first_ts = secrets.randbits(15), secrets.randbits(31)  # RFC 3550 §5.1
        else:
            last_seq, last_ts, last_at = self._resume
            first_seq = (last_seq + 1) & 0xFFFF
            aligned = self._aligned_ts(packet, align, last_ts)
            if aligned is not None:
                first_ts = aligned
            else:
                elapsed = max(time.monotonic() - last_at, 0.001)
                first_ts = (last_ts + max(1, int(elapsed * self.clock_rate))) & 0xFFFFFFFF
        self.seq_offset = (first_seq - packet.sequence_number) & 0xFFFF
        self.ts_offset = (first_ts - packet.timestamp) & 0xFFFFFFFF
        self._start_seq = packet.sequence_number
        # after a switch of source, older sequence numbers were another source's packets
        self._out_floor = first_seq if self._resume is not None else None

    def _aligned_ts(
        self, packet: RtpPacket, align: tuple[Track, int] | None, last_ts: int
    ) -> int | None:
        """A layer switch: our timestamp for ``packet`` such that both layers' capture times
        map to our timeline the same way (through each layer's latest sender report, RFC 3550
        §6.4.1), so the switch keeps the picture's timing and the audio sync. None when a
        report is missing or the result would not follow ``last_ts`` within 5 s."""
        if align is None:
            return None
        old_source, old_ts_offset = align
        new_source = self.forwarder.source
        if new_source is None:
            return None
        new_sr = new_source.reception.last_sr
        old_sr = old_source.reception.last_sr
        if new_sr is None or old_sr is None:
            return None
        rate = self.clock_rate
        new_ntp, new_rtp, _ = new_sr
        old_ntp, old_rtp, _ = old_sr
        since_new = ((packet.timestamp - new_rtp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        ntp = new_ntp + since_new * NTP_PER_SECOND / rate  # the keyframe's capture time
        old_clock = old_rtp + round((ntp - old_ntp) * rate / NTP_PER_SECOND)
        ours = (old_clock + old_ts_offset) & 0xFFFFFFFF
        step = (ours - last_ts) & 0xFFFFFFFF
        if step == 0 or step > 5 * rate:
            return None
        return ours

    # -- RTCP from the viewer -------------------------------------------------------------------

    def on_nack(self, lost: list[int], now: float) -> None:
        """Answer a viewer's NACK (RFC 4585 §6.2.1) from the cache, as RTX when negotiated,
        within the viewer's :class:`RetransmitBudget`.

        Which packets go out is decided here; with a native slot they go out in one kernel
        call after the decisions (the same datagrams, in the same order, as the Python path
        sends them one by one)."""
        source = self.forwarder.source
        counters = self.counters
        counters.nack_requested += len(lost)
        if not self.started or source is None:
            counters.nack_refused += len(lost)
            return
        budget = self.budget
        bitrate = source.bitrate
        slot = self.native
        rtx = self.rtx_payload_type is not None and self.rtx_ssrc is not None
        items: list[Item] = []
        answered = missed = 0
        floor = self._out_floor
        for out_seq in budget.candidates(lost, now, self.stats.rtt):
            if floor is not None and (out_seq - floor) & 0xFFFF >= 0x8000:
                missed += 1  # sent from another layer or publisher: not this source's packet
                continue
            packet = self.forwarder.lookup((out_seq - self.seq_offset) & 0xFFFF)
            if packet is None:
                missed += 1
                continue
            if not budget.spend(out_seq, len(packet.payload) + 40, now, bitrate):
                break  # over budget: the rest of this packet's requests are refused too
            b0, ext = self.layout.build(packet, source.ext_ids)
            twcc = None
            if self.transport_seq is not None and self.layout.twcc_id is not None and slot is None:
                twcc = self.transport_seq.stamp()  # (the kernel stamps its own items)
                ext = stamp_twcc(ext, twcc)
            if slot is not None:
                items.append(
                    (
                        packet.payload,
                        packet.sequence_number,
                        packet.timestamp,
                        packet.marker,
                        False,
                        ext,
                    )
                )
                continue
            ts = (packet.timestamp + self.ts_offset) & 0xFFFFFFFF
            marker = 0x80 if packet.marker else 0
            if self.rtx_payload_type is not None and self.rtx_ssrc is not None:
                # RFC 4588 §4: the original sequence number leads the RTX payload
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                header = _HEADER.pack(
                    b0, marker | self.rtx_payload_type, self._rtx_seq, ts, self.rtx_ssrc
                )
                data = header + ext + struct.pack("!H", out_seq) + packet.payload
            else:
                header = _HEADER.pack(b0, marker | self.payload_type, out_seq, ts, self.ssrc)
                data = header + ext + packet.payload
            size = self.sink.send_rtp(data)
            if twcc is not None and size and self.transport_seq is not None:
                self.transport_seq.sent(twcc, size)
            if not size:
                self._send_errors += 1
                continue
            answered += 1
            counters.retransmitted_packets += 1
            counters.retransmitted_bytes += size
        if items and slot is not None:
            answered += self._resend_native(slot, items, rtx)
        self.retransmitted += answered
        self.nack_misses += missed
        counters.nack_missed += missed
        counters.nack_refused += len(lost) - answered - missed

    def _resend_native(self, slot: Slot, items: list[Item], rtx: bool) -> int:
        """One NACK's answers through the kernel; returns how many went out. RTX packets are
        numbered on from ``_rtx_seq`` (one per answer, sent or not, as on the Python path)."""
        rtx_stream: tuple[int, int, int] | None = None
        if rtx:
            assert self.rtx_payload_type is not None and self.rtx_ssrc is not None
            rtx_stream = (self.rtx_payload_type, self.rtx_ssrc, (self._rtx_seq + 1) & 0xFFFF)
            self._rtx_seq = (self._rtx_seq + len(items)) & 0xFFFF
        try:
            packets, wire_bytes, _, _, errors = self.forwarder.native_resend(
                slot, items, rtx_stream
            )
        except Exception:  # not expected (the items are built above): count, never raise
            log.exception("native NACK answer to %s failed", self)
            packets, wire_bytes, errors = 0, 0, len(items)
        self._send_errors += errors
        native_sent = getattr(self.sink, "native_sent", None)
        if native_sent is not None:
            native_sent(packets, wire_bytes, errors)
        counters = self.counters
        counters.retransmitted_packets += packets
        counters.retransmitted_bytes += wire_bytes
        return packets

    def sender_report(self, now: float, ntp_now: int) -> RtcpSenderReport | None:
        """An SR whose NTP/RTP pair comes from the publisher's, shifted by our timestamp offset."""
        source = self.forwarder.source
        if not self.started or source is None or self.packets_sent == 0:
            return None
        reference = source.reception.last_sr
        if reference is not None:
            ref_ntp, ref_rtp, ref_local = reference
            elapsed = now - ref_local
            ntp = (ref_ntp + int(elapsed * NTP_PER_SECOND)) & 0xFFFFFFFFFFFFFFFF
            source_rtp = ref_rtp + int(elapsed * self.clock_rate)
        else:
            # no SR from the publisher (yet): map our own clock to its last packet
            ntp = ntp_now
            source_rtp = source.last_timestamp + int((now - source.last_arrival) * self.clock_rate)
        self.stats.packet_count = self.packets_sent
        self.stats.octet_count = self.payload_bytes
        return self.stats.sender_report(now, ntp, (source_rtp + self.ts_offset) & 0xFFFFFFFF)
