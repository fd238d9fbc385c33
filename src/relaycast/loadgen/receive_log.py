"""What a lightweight viewer records per authenticated RTP packet, in pure Python.

This is the reference (and the fallback) for the native receive path (``_receiver.c``, fronted
by :mod:`relaycast.loadgen.receiver`): both keep, per viewer,

* a log of every RTP packet: crc32 of the payload, payload length, arrival time (ns,
  CLOCK_REALTIME), so that the runner can match it to the publisher's send log;
* (arrival, RTP timestamp) of every video packet with the marker bit (frame-based delivery for
  servers that re-encode);
* per SSRC (at most :data:`MAX_STREAMS`; packets of further SSRCs are logged but not tracked),
  extended sequence numbers (RFC 3550 Appendix A.1): base, highest, packets received, for
  receiver reports; a gap of 2..:data:`NACK_MAX_GAP` on a video SSRC asks for a NACK
  (RFC 4585 §6.2.1) of the missing numbers;
* when the first packet arrived, when the first packet of the first keyframe arrived and when
  that keyframe was complete (its marker packet).

A decrypted packet whose header or padding runs past its end is counted as ``malformed`` and
not logged. tests/unit/test_loadgen_receiver.py checks that the C code keeps exactly these logs.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Callable

from relaycast.rtp.codecs import is_keyframe_start

__all__ = [
    "KIND_AUDIO",
    "KIND_OTHER",
    "KIND_VIDEO",
    "MAX_STREAMS",
    "NACK_MAX_GAP",
    "ReceiveLog",
    "StreamState",
    "kind_table",
]

MAX_STREAMS = 8
NACK_MAX_GAP = 64
KIND_OTHER, KIND_VIDEO, KIND_AUDIO = 0, 1, 2
_KINDS = {"video": KIND_VIDEO, "audio": KIND_AUDIO}

_HDR = struct.Struct("!BBHII")

#: ``nack(ssrc, first_missing_extended_seq, count)``
NackCallback = Callable[[int, int, int], None]


def kind_table(payload_kinds: dict[int, str]) -> bytes:
    """Payload type -> kind code, one byte per payload type 0..127."""
    table = bytearray(128)
    for pt, kind in payload_kinds.items():
        if 0 <= pt < 128:
            table[pt] = _KINDS.get(kind, KIND_OTHER)
    return bytes(table)


class StreamState:
    """Extended sequence numbers of one SSRC (RFC 3550 Appendix A.1)."""

    __slots__ = ("base", "kind", "max_ext", "received", "ssrc")

    def __init__(self, ssrc: int, seq: int, kind: int) -> None:
        self.ssrc = ssrc
        self.kind = kind
        self.base = seq
        self.max_ext = seq
        self.received = 0

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.ssrc, self.kind, self.base, self.max_ext, self.received)


class ReceiveLog:
    """The logs and sequence bookkeeping of one viewer (see the module docstring)."""

    def __init__(self, codec: str, kinds: bytes = bytes(128), nack: NackCallback | None = None):
        self.codec = codec
        self.kinds = kinds
        self.nack = nack
        self.crc: array[int] = array("I")
        self.length: array[int] = array("H")
        self.t_ns: array[int] = array("q")
        self.frame_t: array[int] = array("q")
        self.frame_ts: array[int] = array("I")
        self.seq: dict[int, StreamState] = {}
        self.first_packet_ns = 0
        self.first_key_start_ns = 0
        self.first_key_ns = 0
        self.malformed = 0
        self.untracked = 0
        self._first_key_ts: int | None = None

    @property
    def packets(self) -> int:
        return len(self.t_ns)

    def streams(self) -> list[tuple[int, int, int, int, int]]:
        """(ssrc, kind, base, highest extended seq, received) per SSRC, first seen first."""
        return [s.as_tuple() for s in self.seq.values()]

    def on_rtp(self, plain: bytes, t: int) -> None:
        """One authenticated RTP packet, arrived at ``t`` (ns)."""
        size = len(plain)
        if size < 12:
            self.malformed += 1
            return
        b0, b1, seq, ts, ssrc = _HDR.unpack_from(plain, 0)
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if offset + 4 > size:
                self.malformed += 1
                return
            offset += 4 + 4 * ((plain[offset + 2] << 8) | plain[offset + 3])
        end = size
        if b0 & 0x20:
            pad = plain[-1]
            if pad > size:
                self.malformed += 1
                return
            end = size - pad
        if offset > end:
            self.malformed += 1
            return
        payload = plain[offset:end]
        self.crc.append(zlib.crc32(payload))
        self.length.append(end - offset)
        self.t_ns.append(t)
        state = self.seq.get(ssrc)
        if state is None:
            if len(self.seq) >= MAX_STREAMS:
                self.untracked += 1
                return
            state = self.seq[ssrc] = StreamState(ssrc, seq, self.kinds[b1 & 0x7F])
            if not self.first_packet_ns:
                self.first_packet_ns = t
        else:
            prev = state.max_ext
            ext = prev + ((seq - prev + 0x8000) & 0xFFFF) - 0x8000
            if ext > prev:
                gap = ext - prev
                if 1 < gap <= NACK_MAX_GAP and state.kind == KIND_VIDEO and self.nack is not None:
                    self.nack(ssrc, prev + 1, gap - 1)
                state.max_ext = ext
        state.received += 1
        if state.kind == KIND_VIDEO:
            if b1 & 0x80:
                self.frame_t.append(t)
                self.frame_ts.append(ts)
            if not self.first_key_ns:
                if self._first_key_ts is None:
                    if is_keyframe_start(self.codec, payload):
                        self._first_key_ts = ts
                        self.first_key_start_ns = t
                elif ts == self._first_key_ts and b1 & 0x80:
                    self.first_key_ns = t

    def arrays(self) -> tuple[array[int], array[int], array[int], array[int], array[int]]:
        """(crc, length, t_ns, frame_t, frame_ts)."""
        return self.crc, self.length, self.t_ns, self.frame_t, self.frame_ts
