"""The native fan-out kernel and its Python face.

:class:`NativeGroup` holds the started viewers of one Forwarder as *slots* of the C kernel
(``_fanout.c``): per source packet one :meth:`NativeGroup.forward` call rewrites the RTP header
for every LIVE slot, protects it with libsrtp (the ``srtp_protect`` pylibsrtp already loaded, and
each viewer's own ``srtp_t``) and sends the datagrams with ``sendmmsg``, the GIL released.
:meth:`NativeGroup.replay` (fast start: a chunk of the cached GOP to a slot added *paused*,
which ``forward`` skips until the viewer has caught up) and :meth:`NativeGroup.resend` (the
answers to one NACK, RFC 4585 §6.2.1, as RFC 4588 RTX when negotiated) send a list of packets
to one slot in one call the same way. The Python path (``DownTrack.send``,
``DownTrack.on_nack`` -> ``MediaSink.send_rtp``) stays the reference and the fallback: it is
used when the extension did not build or ``RELAYCAST_NATIVE=0``.

``forward``'s counters are kept per slot in C and taken (read and reset) by
:meth:`NativeGroup.take` whenever someone reads them (``DownTrack`` and ``MediaSink``
properties), so the hot path touches none of them in Python; ``replay`` and ``resend`` return
the counts of their call.

Transport-wide sequence numbers (TWCC to viewers): a slot whose owner has a ``transport_seq``
(a :func:`new_sequencer`, one per viewer transport, shared by its audio and video slots) and
whose layout has ``twcc_id`` gets every packet numbered by the kernel and its send time and
size recorded in the Sequencer's ring (relaycast/media/bwe/history.py reads it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

__all__ = [
    "Counts",
    "Item",
    "NativeGroup",
    "Slot",
    "available",
    "describe",
    "enabled",
    "new_sequencer",
]

#: one packet of a :meth:`NativeGroup.replay` / :meth:`NativeGroup.resend` list:
#: (payload, source sequence number, source timestamp, marker, keyframe, extension block)
Item = tuple[bytes, int, int, bool, bool, bytes]
#: (packets, wire bytes, payload bytes, keyframes, errors)
Counts = tuple[int, int, int, int, int]

try:
    from relaycast.native import _fanout
except ImportError as exc:  # not built (no compiler), or built for another interpreter
    _fanout = None  # type: ignore[assignment]
    _IMPORT_ERROR = f"relaycast.native._fanout did not import, is it built? ({exc})"
else:
    _IMPORT_ERROR = ""

ENV = "RELAYCAST_NATIVE"
#: whether the kernel is used when RELAYCAST_NATIVE is unset (and it is built)
DEFAULT_ON = True

_protect_address: int | None = None


def available() -> bool:
    """The extension is built and imports."""
    return _fanout is not None


def enabled() -> bool:
    """Use the kernel: built, and not switched off with ``RELAYCAST_NATIVE=0``."""
    if _fanout is None:
        return False
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "no", "off", "false"):
        return False
    if value in ("1", "yes", "on", "true"):
        return True
    return DEFAULT_ON


def describe() -> str:
    """Which fan-out path is in use, for the startup log."""
    if enabled():
        return "native kernel (rewrite + libsrtp + sendmmsg in C, relaycast.native._fanout)"
    if _fanout is None:
        return f"Python (native kernel not available: {_IMPORT_ERROR})"
    return f"Python ({ENV}={os.environ.get(ENV, '')})"


def new_sequencer(capacity: int, first: int) -> _fanout.Sequencer:
    """A C Sequencer: transport-wide numbers from ``first`` and a ring of ``capacity`` sends."""
    if _fanout is None:
        raise RuntimeError(f"native fan-out kernel not available: {_IMPORT_ERROR}")
    return _fanout.Sequencer(capacity, first)


def protect_address() -> int:
    """The address of libsrtp's ``srtp_protect`` as pylibsrtp loaded it."""
    global _protect_address
    if _protect_address is None:
        from pylibsrtp._binding import ffi, lib

        _protect_address = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
    return _protect_address


def srtp_context_address(session: object) -> int:
    """The ``srtp_t`` of a pylibsrtp Session (as net/srtp.py ``fast_protect`` uses it)."""
    from pylibsrtp._binding import ffi

    return int(ffi.cast("uintptr_t", session._srtp[0]))  # type: ignore[attr-defined]


class Slot:
    """One viewer's place in a :class:`NativeGroup`; ``index`` moves when others leave."""

    __slots__ = ("index", "keep", "layout", "owner")

    def __init__(self, index: int, owner: object, layout: int, keep: object) -> None:
        self.index = index
        self.owner = owner
        self.layout = layout
        self.keep = keep  # what must outlive the slot: the SRTP context the C side uses


class NativeGroup:
    """The slots of one Forwarder and the extension layouts they use."""

    __slots__ = ("_group", "_layout_index", "_layout_refs", "layouts", "slots")

    def __init__(self) -> None:
        if _fanout is None:
            raise RuntimeError(f"native fan-out kernel not available: {_IMPORT_ERROR}")
        self._group = _fanout.Group(protect_address())
        self.slots: list[Slot] = []
        #: the layouts slots refer to by index (None: free); extension blocks follow this order
        self.layouts: list[object | None] = []
        self._layout_refs: list[int] = []
        self._layout_index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.slots)

    def _use_layout(self, layout: object) -> int:
        index = self._layout_index.get(id(layout))
        if index is None:
            try:
                index = self.layouts.index(None)
                self.layouts[index] = layout
                self._layout_refs[index] = 0
            except ValueError:
                index = len(self.layouts)
                self.layouts.append(layout)
                self._layout_refs.append(0)
            self._layout_index[id(layout)] = index
        self._layout_refs[index] += 1
        return index

    def _release_layout(self, index: int) -> None:
        self._layout_refs[index] -= 1
        if self._layout_refs[index] == 0:
            layout = self.layouts[index]
            del self._layout_index[id(layout)]
            self.layouts[index] = None

    def add(
        self,
        owner: object,
        *,
        srtp_session: object,
        sock: socket.socket,
        addr: tuple[str, int],
        ssrc: int,
        payload_type: int,
        seq_offset: int,
        ts_offset: int,
        start_seq: int,
        layout: object,
        live: bool = True,
    ) -> Slot:
        """A new slot; ValueError when an argument cannot be served natively. A slot that is
        not ``live`` (catching up) gets only what :meth:`replay` and :meth:`resend` send."""
        layout_index = self._use_layout(layout)
        try:
            index = self._group.add(
                srtp_context_address(srtp_session),
                sock.fileno(),
                int(sock.family),
                addr[0],
                addr[1],
                ssrc,
                payload_type,
                seq_offset,
                ts_offset,
                start_seq,
                layout_index,
            )
        except BaseException:
            self._release_layout(layout_index)
            raise
        if not live:
            self._group.set_paused(index, True)
        self._attach_sequencer(index, owner, layout)
        slot = Slot(index, owner, layout_index, srtp_session)
        self.slots.append(slot)
        return slot

    def _attach_sequencer(self, index: int, owner: object, layout: object) -> None:
        sequencer = getattr(owner, "transport_seq", None)
        ext_id = getattr(layout, "twcc_id", None)
        if ext_id is not None and _fanout is not None and isinstance(sequencer, _fanout.Sequencer):
            self._group.set_sequencer(index, sequencer, ext_id)

    def set_layout(self, slot: Slot, layout: object) -> None:
        """The slot's viewer changed its extension layout (e.g. a new playout delay)."""
        if slot.index < 0:
            return
        index = self._use_layout(layout)
        self._group.set_layout(slot.index, index)
        self._release_layout(slot.layout)
        slot.layout = index
        self._group.set_sequencer(slot.index, None, 1)
        self._attach_sequencer(slot.index, slot.owner, layout)

    def remove(self, slot: Slot) -> None:
        if slot.index < 0:
            return
        moved = self._group.remove(slot.index)
        if moved >= 0:
            other = self.slots[moved]
            other.index = slot.index
            self.slots[slot.index] = other
        self.slots.pop()
        self._release_layout(slot.layout)
        slot.index = -1

    def set_addr(self, slot: Slot, sock: socket.socket, addr: tuple[str, int]) -> None:
        self._group.set_addr(slot.index, int(sock.family), addr[0], addr[1])

    def set_live(self, slot: Slot) -> None:
        """The viewer caught up: :meth:`forward` sends to it from the next packet."""
        self._group.set_paused(slot.index, False)

    def live(self, slot: Slot) -> bool:
        return not self._group.paused(slot.index)

    def take(self, slot: Slot) -> Counts:
        """(packets, wire bytes, payload bytes, keyframes, errors) since the last take."""
        return self._group.take(slot.index)

    def start_seq(self, slot: Slot) -> int:
        return self._group.start_seq(slot.index)

    def error_slots(self) -> list[Slot]:
        return [self.slots[index] for index in self._group.error_slots()]

    def forward(
        self,
        payload: bytes,
        seq: int,
        timestamp: int,
        marker: bool,
        keyframe: bool,
        exts: tuple[bytes, ...],
    ) -> int:
        """Send one packet to every slot; ``exts[i]`` is the block of ``layouts[i]``.
        Returns the number of datagrams that failed (counted per slot)."""
        return self._group.forward(payload, seq, timestamp, marker, keyframe, exts)

    def replay(self, slot: Slot, items: Sequence[Item], start: int, end: int) -> Counts:
        """Send ``items[start:end]`` to one slot as the live path would (the same rewrite, the
        same floor), the counts of this call; ``items`` are shared by every viewer with the
        slot's extension layout."""
        return self._group.replay(slot.index, items, start, end)

    def resend(self, slot: Slot, items: Sequence[Item], rtx: tuple[int, int, int] | None) -> Counts:
        """Retransmit ``items`` to one slot (RFC 4585 §6.2.1): under its own SSRC, or with
        ``rtx = (payload type, ssrc, first sequence number)`` as RFC 4588 §4 RTX packets
        numbered from there, the original sequence number leading each payload."""
        return self._group.resend(slot.index, items, rtx)
