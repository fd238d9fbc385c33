"""The bench viewers' native receive path and its Python face.

A worker process has one :class:`ReceiverSet`: the C ``Receiver`` (``_receiver.c``) holding the
sockets of all its viewers whose SRTP keys exist in an epoll set of its own. Every
``interval`` (20 ms by default; 0: whenever that epoll set is readable, as one descriptor on the
asyncio loop) :meth:`ReceiverSet.drain` makes one call that,
with the GIL released, reads every readable socket with ``recvmmsg`` (kernel receive times,
``SO_TIMESTAMPNS``), authenticates and decrypts each SRTP packet with libsrtp's
``srtp_unprotect`` (pylibsrtp's own, through its cffi function pointer: the same library and
context the Python path uses, both SRTP profiles relaycast negotiates, and its replay check) and
keeps the logs of :class:`relaycast.loadgen.receive_log.ReceiveLog` in C. What is not SRTP
(STUN, DTLS) and SRTCP comes back as bytes for the Python transport; NACK requests come back
for the viewer to send.

Draining on a timer rather than on every readable socket lets a few packets queue per socket
(about 6 per 20 ms for a 2.5 Mbps viewer, often more as video comes in frame bursts), so each
``recvmmsg`` carries several datagrams: the cost per visit of a socket, not the per-packet
work, is what a lightly loaded event-driven receiver pays most (``bench/receiver.py``,
``--queue``). It costs the measurement nothing: arrival times are the kernel's stamps, taken
when a datagram is queued, and the sockets' buffers hold far more than 20 ms. NACKs and
answers to STUN and SRTCP leave up to one interval later.

The Python path (``ClientTransport._readable`` + ``ReceiveLog``) stays the reference and the
fallback: used when the extension is not built or ``RELAYCAST_LOADGEN_NATIVE=0``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from array import array
from typing import Protocol

__all__ = [
    "ENV",
    "NativeLog",
    "ReceiverSet",
    "available",
    "crc32_address",
    "describe",
    "enabled",
    "new_receiver",
    "unprotect_address",
]

try:
    from relaycast.loadgen import _receiver
except ImportError as exc:  # not built (no compiler), or built for another interpreter
    _receiver = None  # type: ignore[assignment]
    _IMPORT_ERROR = f"relaycast.loadgen._receiver did not import, is it built? ({exc})"
else:
    _IMPORT_ERROR = ""

ENV = "RELAYCAST_LOADGEN_NATIVE"
CODECS = {"vp8": 1, "h264": 2}

_unprotect: int | None = None
_crc32: int | None = None


def available() -> bool:
    """The extension is built and imports."""
    return _receiver is not None


def enabled() -> bool:
    """Use the native receive path: built, and not switched off with
    ``RELAYCAST_LOADGEN_NATIVE=0``."""
    if _receiver is None:
        return False
    return os.environ.get(ENV, "").strip().lower() not in ("0", "no", "off", "false")


def describe() -> str:
    if enabled():
        return "native (recvmmsg + libsrtp + logs in C, relaycast.loadgen._receiver)"
    if _receiver is None:
        return f"python (native receive path not available: {_IMPORT_ERROR})"
    return f"python ({ENV}={os.environ.get(ENV, '')})"


def unprotect_address() -> int:
    """The address of libsrtp's ``srtp_unprotect`` as pylibsrtp loaded it."""
    global _unprotect
    if _unprotect is None:
        from pylibsrtp._binding import ffi, lib

        _unprotect = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect")))
    return _unprotect


def crc32_address() -> int:
    """The address of zlib's ``crc32`` (what ``zlib.crc32`` computes), or 0 when libz cannot
    be loaded."""
    global _crc32
    if _crc32 is None:
        _crc32 = 0
        for name in ("libz.so.1", ctypes.util.find_library("z")):
            if not name:
                continue
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            _crc32 = ctypes.cast(lib.crc32, ctypes.c_void_p).value or 0
            break
    return _crc32


def srtp_context_address(session: object) -> int:
    """The ``srtp_t`` of a pylibsrtp Session."""
    from pylibsrtp._binding import ffi

    return int(ffi.cast("uintptr_t", session._srtp[0]))  # type: ignore[attr-defined]


def new_receiver(*, crc: str = "auto") -> _receiver.Receiver:
    """A C receiver. ``crc``: "builtin" (the extension's own crc32: carry-less multiplication
    when the CPU has PCLMULQDQ, about 3x zlib 1.2's on a 1,150-byte payload, else
    slicing-by-8), "zlib" (zlib's ``crc32`` through its function pointer) or "auto" (builtin
    with PCLMULQDQ, else zlib when it loads)."""
    if _receiver is None:
        raise RuntimeError(f"native receive path not available: {_IMPORT_ERROR}")
    if crc == "auto":
        crc = "builtin" if _receiver.HAVE_CLMUL or not crc32_address() else "zlib"
    return _receiver.Receiver(unprotect_address(), crc32_address() if crc == "zlib" else 0)


class SlotOwner(Protocol):
    """What a slot hands back to: its viewer."""

    def on_datagram(self, data: bytes) -> None: ...

    def on_nack(self, ssrc: int, first: int, count: int) -> None: ...


class NativeLog:
    """The C-side logs of one slot, read like a :class:`ReceiveLog`."""

    __slots__ = ("receiver", "slot")

    def __init__(self, receiver: _receiver.Receiver, slot: int) -> None:
        self.receiver = receiver
        self.slot = slot

    @property
    def packets(self) -> int:
        return self.receiver.counts(self.slot)[2]

    def counts(self) -> dict[str, int]:
        keys = (
            "datagrams",
            "bytes_in",
            "packets",
            "auth_failures",
            "replays",
            "malformed",
            "untracked",
            "log_failures",
        )
        return dict(zip(keys, self.receiver.counts(self.slot), strict=True))

    @property
    def first_packet_ns(self) -> int:
        return self.receiver.firsts(self.slot)[0]

    @property
    def first_key_start_ns(self) -> int:
        return self.receiver.firsts(self.slot)[1]

    @property
    def first_key_ns(self) -> int:
        return self.receiver.firsts(self.slot)[2]

    def streams(self) -> list[tuple[int, int, int, int, int]]:
        return self.receiver.streams(self.slot)

    def arrays(self) -> tuple[array[int], array[int], array[int], array[int], array[int]]:
        """(crc, length, t_ns, frame_t, frame_ts), copied out of C."""
        out = []
        for code, raw in zip("IHqqI", self.receiver.logs(self.slot), strict=True):
            a: array[int] = array(code)
            a.frombytes(raw)
            out.append(a)
        return out[0], out[1], out[2], out[3], out[4]


class ReceiverSet:
    """One worker's C receiver on its asyncio loop, and who owns each slot."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, interval: float = 0.02, budget: int = 65536
    ) -> None:
        self.receiver = new_receiver()
        self.loop = loop
        self.budget = budget
        self.interval = interval
        self.owners: list[SlotOwner | None] = []
        self.datagrams = 0
        self.drains = 0
        self._fd = self.receiver.fileno()
        self._timer: asyncio.TimerHandle | None = None
        if interval > 0:
            self._timer = loop.call_later(interval, self._tick)
        else:
            loop.add_reader(self._fd, self.drain)

    def _tick(self) -> None:
        try:
            self.drain()
        finally:
            self._timer = self.loop.call_later(self.interval, self._tick)

    def attach(
        self, owner: SlotOwner, fd: int, srtp_session: object, codec: str, kinds: bytes
    ) -> int:
        """Watch ``fd`` from now on; the caller stops reading it. Returns the slot."""
        slot = self.receiver.add(
            fd, srtp_context_address(srtp_session), CODECS.get(codec, 0), kinds
        )
        self.owners.append(owner)
        assert len(self.owners) == slot + 1
        return slot

    def detach(self, slot: int) -> None:
        """Stop watching the slot's socket (before it is closed); its logs stay."""
        self.receiver.remove(slot)
        self.owners[slot] = None

    def drain(self) -> int:
        back, nacks, count = self.receiver.drain(self.budget)
        self.datagrams += count
        self.drains += 1
        owners = self.owners
        for slot, data in back:
            owner = owners[slot]
            if owner is not None:
                owner.on_datagram(data)
        for slot, ssrc, first, n in nacks:
            owner = owners[slot]
            if owner is not None:
                owner.on_nack(ssrc, first, n)
        return count

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        else:
            self.loop.remove_reader(self._fd)
        self.receiver.close()
