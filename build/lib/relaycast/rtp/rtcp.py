"""RTCP packets (RFC 3550 §6.4-6.6), feedback messages (RFC 4585 §6, RFC 5104 §4.3.1, REMB,
transport-wide congestion control) and compound packets.

Every class has ``parse(data)`` for one complete RTCP packet (4-byte header included) and
``__bytes__``. ``parse_compound`` splits a compound packet and never fails on packet types it
does not know (they become ``RtcpUnknown``); it raises ValueError on a malformed header/length
or on a malformed packet of a known type.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

__all__ = [
    "PSFB",
    "RTPFB",
    "RtcpBye",
    "RtcpFir",
    "RtcpNack",
    "RtcpPacket",
    "RtcpPli",
    "RtcpReceiverReport",
    "RtcpReceptionReport",
    "RtcpRemb",
    "RtcpSdes",
    "RtcpSenderReport",
    "RtcpTransportFeedback",
    "RtcpUnknown",
    "ntp_middle32",
    "ntp_now",
    "parse_compound",
    "serialize_compound",
]

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206

SDES_CNAME = 1

_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_HEADER = struct.Struct("!BBH")
_II = struct.Struct("!II")
_I = struct.Struct("!I")
_REPORT = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")


def ntp_now() -> int:
    """The current wall-clock time as a 64-bit NTP timestamp (RFC 3550 §4)."""
    return int((time.time() + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp, as used in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _pack(packet_type: int, count: int, body: bytes) -> bytes:
    """Prefix ``body`` with an RTCP header (RFC 3550 §6.4.1); bodies that are not a multiple of
    4 bytes are completed with RTCP padding (P bit, last byte = padding count).
    """
    if not 0 <= count <= 31:
        raise ValueError(f"RTCP count/format {count} does not fit in 5 bits")
    rem = len(body) & 3
    b0 = 0x80 | count
    if rem:
        pad = 4 - rem
        body = body + b"\x00" * (pad - 1) + bytes((pad,))
        b0 |= 0x20
    return _HEADER.pack(b0, packet_type, len(body) >> 2) + body


def _split(data: bytes, packet_type: int | None = None) -> tuple[int, int, bytes]:
    """Validate the header of exactly one RTCP packet; return (count, type, body without
    header and padding).
    """
    if len(data) < 4:
        raise ValueError("RTCP packet is shorter than its 4-byte header")
    b0, pt, words = _HEADER.unpack_from(data, 0)
    if b0 >> 6 != 2:
        raise ValueError(f"RTCP version is {b0 >> 6}, expected 2")
    if len(data) != 4 + 4 * words:
        raise ValueError(f"RTCP length field says {4 + 4 * words} bytes, packet has {len(data)}")
    if packet_type is not None and pt != packet_type:
        raise ValueError(f"RTCP packet type {pt}, expected {packet_type}")
    body = data[4:]
    if b0 & 0x20:
        if not body:
            raise ValueError("RTCP padding bit set on an empty packet")
        pad = body[-1]
        if pad == 0 or pad > len(body):
            raise ValueError(f"RTCP padding count {pad} is invalid")
        body = body[:-pad]
    return b0 & 0x1F, pt, body


@dataclass(slots=True)
class RtcpReceptionReport:
    """A reception report block (RFC 3550 §6.4.1); ``packets_lost`` is signed 24-bit and is
    clamped to that range when serialised.
    """

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    def __bytes__(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _REPORT.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RtcpReceptionReport:
        """Parse one 24-byte report block at ``offset``."""
        if len(data) < offset + 24:
            raise ValueError("RTCP reception report block is truncated")
        ssrc, fl, highest, jitter, lsr, dlsr = _REPORT.unpack_from(data, offset)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, fl >> 24, lost, highest, jitter, lsr, dlsr)


def _parse_reports(body: bytes, offset: int, count: int) -> list[RtcpReceptionReport]:
    if len(body) < offset + 24 * count:
        raise ValueError(f"RTCP report too short for {count} reception report blocks")
    return [RtcpReceptionReport.parse(body, offset + 24 * i) for i in range(count)]


@dataclass(slots=True)
class RtcpSenderReport:
    """Sender report, PT=200 (RFC 3550 §6.4.1). Profile-specific extensions after the report
    blocks are ignored.
    """

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[RtcpReceptionReport] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _pack(SR, len(self.reports), body + b"".join(bytes(r) for r in self.reports))

    @classmethod
    def parse(cls, data: bytes) -> RtcpSenderReport:
        count, _, body = _split(data, SR)
        if len(body) < 24:
            raise ValueError("RTCP sender report is shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 0)
        return cls(ssrc, ntp, rtp_ts, packets, octets, _parse_reports(body, 24, count))


@dataclass(slots=True)
class RtcpReceiverReport:
    """Receiver report, PT=201 (RFC 3550 §6.4.2)."""

    ssrc: int
    reports: list[RtcpReceptionReport] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _I.pack(self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _pack(RR, len(self.reports), body)

    @classmethod
    def parse(cls, data: bytes) -> RtcpReceiverReport:
        count, _, body = _split(data, RR)
        if len(body) < 4:
            raise ValueError("RTCP receiver report is shorter than its SSRC")
        return cls(_I.unpack_from(body, 0)[0], _parse_reports(body, 4, count))


@dataclass(slots=True)
class RtcpSdes:
    """Source description, PT=202 (RFC 3550 §6.5): chunks of ``(ssrc, [(item type, value)])``."""

    chunks: list[tuple[int, list[tuple[int, bytes]]]] = field(default_factory=list)

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> RtcpSdes:
        """An SDES packet with a single CNAME item (RFC 3550 §6.5.1)."""
        return cls([(ssrc, [(SDES_CNAME, cname.encode())])])

    def __bytes__(self) -> bytes:
        parts: list[bytes] = []
        for ssrc, items in self.chunks:
            chunk = bytearray(_I.pack(ssrc))
            for item_type, value in items:
                if not 1 <= item_type <= 255 or len(value) > 255:
                    raise ValueError(f"SDES item type {item_type} / length {len(value)} invalid")
                chunk += bytes((item_type, len(value)))
                chunk += value
            # one or more null octets end the item list and pad to 32 bits (§6.5)
            chunk += b"\x00" * (4 - (len(chunk) & 3))
            parts.append(bytes(chunk))
        return _pack(SDES, len(self.chunks), b"".join(parts))

    @classmethod
    def parse(cls, data: bytes) -> RtcpSdes:
        count, _, body = _split(data, SDES)
        chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
        pos = 0
        n = len(body)
        for _ in range(count):
            if pos + 4 > n:
                raise ValueError("RTCP SDES chunk is truncated")
            ssrc = _I.unpack_from(body, pos)[0]
            pos += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if pos >= n:
                    raise ValueError("RTCP SDES chunk has no terminating null item")
                item_type = body[pos]
                if item_type == 0:
                    pos = (pos + 4) & ~3  # skip the null octet(s) up to the next 32-bit word
                    break
                if pos + 2 > n or pos + 2 + body[pos + 1] > n:
                    raise ValueError("RTCP SDES item is truncated")
                end = pos + 2 + body[pos + 1]
                items.append((item_type, body[pos + 2 : end]))
                pos = end
            chunks.append((ssrc, items))
        return cls(chunks)


@dataclass(slots=True)
class RtcpBye:
    """Goodbye, PT=203 (RFC 3550 §6.6), with an optional reason."""

    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None

    def __bytes__(self) -> bytes:
        body = b"".join(_I.pack(s) for s in self.sources)
        if self.reason is not None:
            if len(self.reason) > 255:
                raise ValueError("RTCP BYE reason is longer than 255 bytes")
            body += bytes((len(self.reason),)) + self.reason
            rem = len(body) & 3
            if rem:
                body += b"\x00" * (4 - rem)
        return _pack(BYE, len(self.sources), body)

    @classmethod
    def parse(cls, data: bytes) -> RtcpBye:
        count, _, body = _split(data, BYE)
        if len(body) < 4 * count:
            raise ValueError(f"RTCP BYE too short for {count} sources")
        sources = list(struct.unpack_from(f"!{count}I", body, 0))
        pos = 4 * count
        reason = None
        if pos < len(body):
            end = pos + 1 + body[pos]
            if end > len(body):
                raise ValueError("RTCP BYE reason is truncated")
            reason = body[pos + 1 : end]
        return cls(sources, reason)


def _feedback_header(data: bytes, packet_type: int, fmt: int) -> tuple[int, int, bytes]:
    count, _, body = _split(data, packet_type)
    if count != fmt:
        raise ValueError(f"RTCP feedback FMT {count}, expected {fmt}")
    if len(body) < 8:
        raise ValueError("RTCP feedback packet is shorter than its two SSRCs")
    sender, media = _II.unpack_from(body, 0)
    return sender, media, body


@dataclass(slots=True)
class RtcpNack:
    """Generic NACK, RTPFB FMT=1 (RFC 4585 §6.2.1). ``lost`` lists sequence numbers; they are
    packed as PID + BLP pairs (pass them ascending for the most compact encoding); a bit only
    extends an item when it follows the item's last one, so ``parse(bytes(nack)).lost`` gives the
    list back in its order (without duplicates, which parse() drops too).
    """

    FMT: ClassVar[int] = 1

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        parts = [_II.pack(self.sender_ssrc, self.media_ssrc)]
        pid = -1
        blp = 0
        last = 0  # distance from pid of the last sequence number put in this item
        seen: set[int] = set()
        for seq in self.lost:
            seq &= 0xFFFF
            if seq in seen:
                continue  # each packet is named once, as parse() reads it back
            seen.add(seq)
            if pid >= 0:
                d = (seq - pid) & 0xFFFF
                if last < d <= 16:  # only ascending bits: parse() gives the list back as is
                    blp |= 1 << (d - 1)
                    last = d
                    continue
                parts.append(struct.pack("!HH", pid, blp))
            pid = seq
            blp = 0
            last = 0
        if pid >= 0:
            parts.append(struct.pack("!HH", pid, blp))
        return _pack(RTPFB, self.FMT, b"".join(parts))

    @classmethod
    def parse(cls, data: bytes) -> RtcpNack:
        sender, media, body = _feedback_header(data, RTPFB, cls.FMT)
        if len(body) & 3:
            raise ValueError("RTCP NACK FCI is not a multiple of 4 bytes")
        lost: list[int] = []
        seen: set[int] = set()
        for pos in range(8, len(body), 4):
            pid, blp = struct.unpack_from("!HH", body, pos)
            for seq in (pid, *((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)):
                if seq not in seen:  # overlapping items name a packet once
                    seen.add(seq)
                    lost.append(seq)
        return cls(sender, media, lost)


# Transport-wide CC status symbols (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1.1)
_NOT_RECEIVED = 0
_SMALL_DELTA = 1
_LARGE_DELTA = 2


@dataclass(slots=True)
class RtcpTransportFeedback:
    """Transport-wide congestion control feedback, RTPFB FMT=15
    (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).

    ``packets`` lists consecutive transport sequence numbers from ``base_sequence`` with the
    receive delta in 250 µs ticks from the previous received packet (the first one from
    ``reference_time`` × 64 ms), or None when not received. ``reference_time`` is the raw
    24-bit field. Deltas 0..255 use one byte, others two bytes signed (-32768..32767).
    """

    FMT: ClassVar[int] = 15

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int
    feedback_count: int
    packets: list[tuple[int, int | None]] = field(default_factory=list)

    @classmethod
    def from_arrivals(
        cls,
        sender_ssrc: int,
        media_ssrc: int,
        base_sequence: int,
        feedback_count: int,
        arrivals_us: list[int | None],
    ) -> RtcpTransportFeedback:
        """Build feedback from absolute arrival times in µs (None = lost), one per transport
        sequence number from ``base_sequence``. Raises ValueError if nothing was received or a
        gap between arrivals exceeds the 16-bit delta range (about ±8.2 s).
        """
        first = next((a for a in arrivals_us if a is not None), None)
        if first is None:
            raise ValueError("transport feedback needs at least one received packet")
        reference = first // 64000
        prev_ticks = reference * 256  # 64 ms = 256 ticks of 250 µs
        packets: list[tuple[int, int | None]] = []
        for i, arrival in enumerate(arrivals_us):
            seq = (base_sequence + i) & 0xFFFF
            if arrival is None:
                packets.append((seq, None))
                continue
            ticks = arrival // 250
            delta = ticks - prev_ticks
            if not -0x8000 <= delta <= 0x7FFF:
                raise ValueError(f"receive delta {delta} ticks does not fit in 16 bits")
            packets.append((seq, delta))
            prev_ticks = ticks
        return cls(
            sender_ssrc,
            media_ssrc,
            base_sequence & 0xFFFF,
            reference & 0xFFFFFF,
            feedback_count & 0xFF,
            packets,
        )

    def __bytes__(self) -> bytes:
        symbols: list[int] = []
        deltas: list[bytes] = []
        expected = self.base_sequence & 0xFFFF
        for seq, delta in self.packets:
            if seq & 0xFFFF != expected:
                raise ValueError("transport feedback packets must have consecutive sequences")
            expected = (expected + 1) & 0xFFFF
            if delta is None:
                symbols.append(_NOT_RECEIVED)
            elif 0 <= delta <= 255:
                symbols.append(_SMALL_DELTA)
                deltas.append(bytes((delta,)))
            elif -0x8000 <= delta <= 0x7FFF:
                symbols.append(_LARGE_DELTA)
                deltas.append(struct.pack("!h", delta))
            else:
                raise ValueError(f"receive delta {delta} does not fit in 16 bits")
        if len(symbols) > 0xFFFF:
            raise ValueError("too many packets for one transport feedback")
        body = [
            _II.pack(self.sender_ssrc, self.media_ssrc),
            struct.pack(
                "!HHI",
                self.base_sequence & 0xFFFF,
                len(symbols),
                ((self.reference_time & 0xFFFFFF) << 8) | (self.feedback_count & 0xFF),
            ),
            _encode_chunks(symbols),
            *deltas,
        ]
        return _pack(RTPFB, self.FMT, b"".join(body))

    @classmethod
    def parse(cls, data: bytes) -> RtcpTransportFeedback:
        sender, media, body = _feedback_header(data, RTPFB, cls.FMT)
        if len(body) < 16:
            raise ValueError("RTCP transport feedback is shorter than its 16-byte header")
        base, status_count, ref_fb = struct.unpack_from("!HHI", body, 8)
        n = len(body)
        pos = 16
        symbols: list[int] = []
        while len(symbols) < status_count:
            if pos + 2 > n:
                raise ValueError("RTCP transport feedback packet chunks are truncated")
            chunk = (body[pos] << 8) | body[pos + 1]
            pos += 2
            if chunk & 0x8000 == 0:  # run length chunk
                symbol = (chunk >> 13) & 0x3
                run = chunk & 0x1FFF
                if run == 0:
                    raise ValueError("RTCP transport feedback run length chunk of length 0")
                symbols.extend([symbol] * min(run, status_count - len(symbols)))
            elif chunk & 0x4000 == 0:  # status vector, 14 one-bit symbols
                symbols.extend((chunk >> (13 - i)) & 1 for i in range(14))
            else:  # status vector, 7 two-bit symbols
                symbols.extend((chunk >> (12 - 2 * i)) & 3 for i in range(7))
        del symbols[status_count:]
        packets: list[tuple[int, int | None]] = []
        for i, symbol in enumerate(symbols):
            seq = (base + i) & 0xFFFF
            if symbol == _NOT_RECEIVED:
                packets.append((seq, None))
            elif symbol == _SMALL_DELTA:
                if pos >= n:
                    raise ValueError("RTCP transport feedback receive deltas are truncated")
                packets.append((seq, body[pos]))
                pos += 1
            elif symbol == _LARGE_DELTA:
                if pos + 2 > n:
                    raise ValueError("RTCP transport feedback receive deltas are truncated")
                packets.append((seq, struct.unpack_from("!h", body, pos)[0]))
                pos += 2
            else:
                raise ValueError("RTCP transport feedback uses the reserved status symbol 3")
        return cls(sender, media, base, ref_fb >> 8, ref_fb & 0xFF, packets)


def _encode_chunks(symbols: list[int]) -> bytes:
    """Packet status chunks: run length chunks for runs of 7 or more equal symbols, one-bit
    status vectors when the next 14 symbols have no large delta, two-bit vectors otherwise.
    """
    out = bytearray()
    i = 0
    n = len(symbols)
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and symbols[i + run] == symbol and run < 0x1FFF:
            run += 1
        if run >= 7 or i + run == n:
            out += struct.pack("!H", (symbol << 13) | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if _LARGE_DELTA not in window:
            value = 0x8000
            for k, s in enumerate(window):
                value |= s << (13 - k)
            out += struct.pack("!H", value)
            i += 14
        else:
            value = 0xC000
            for k, s in enumerate(symbols[i : i + 7]):
                value |= s << (12 - 2 * k)
            out += struct.pack("!H", value)
            i += 7
    return bytes(out)


@dataclass(slots=True)
class RtcpPli:
    """Picture loss indication, PSFB FMT=1 (RFC 4585 §6.3.1)."""

    FMT: ClassVar[int] = 1

    sender_ssrc: int
    media_ssrc: int

    def __bytes__(self) -> bytes:
        return _pack(PSFB, self.FMT, _II.pack(self.sender_ssrc, self.media_ssrc))

    @classmethod
    def parse(cls, data: bytes) -> RtcpPli:
        sender, media, _ = _feedback_header(data, PSFB, cls.FMT)
        return cls(sender, media)


@dataclass(slots=True)
class RtcpFir:
    """Full intra request, PSFB FMT=4 (RFC 5104 §4.3.1): entries of (media SSRC, sequence nr).
    The common-header media SSRC is sent as 0.
    """

    FMT: ClassVar[int] = 4

    sender_ssrc: int
    entries: list[tuple[int, int]] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _II.pack(self.sender_ssrc, 0) + b"".join(
            _II.pack(ssrc, (seq & 0xFF) << 24) for ssrc, seq in self.entries
        )
        return _pack(PSFB, self.FMT, body)

    @classmethod
    def parse(cls, data: bytes) -> RtcpFir:
        sender, _, body = _feedback_header(data, PSFB, cls.FMT)
        if len(body) & 7:
            raise ValueError("RTCP FIR FCI is not a multiple of 8 bytes")
        entries = []
        for pos in range(8, len(body), 8):
            ssrc, word = _II.unpack_from(body, pos)
            entries.append((ssrc, word >> 24))
        return cls(sender, entries)


@dataclass(slots=True)
class RtcpRemb:
    """Receiver estimated max bitrate, PSFB FMT=15 with "REMB" (draft-alvestrand-rmcat-remb §2.2).

    The bitrate is sent as an 18-bit mantissa and 6-bit exponent: values above 2**18 - 1 bps
    lose their low bits, so ``parse(bytes(r)).bitrate`` equals ``bitrate`` rounded down to
    18 significant bits.
    """

    FMT: ClassVar[int] = 15

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        if self.bitrate < 0 or len(self.ssrcs) > 255:
            raise ValueError("REMB bitrate must be >= 0 and list at most 255 SSRCs")
        mantissa = self.bitrate
        exp = 0
        while mantissa > 0x3FFFF:
            mantissa >>= 1
            exp += 1
        if exp > 63:
            raise ValueError("REMB bitrate is too large")
        body = (
            _II.pack(self.sender_ssrc, 0)
            + b"REMB"
            + _I.pack((len(self.ssrcs) << 24) | (exp << 18) | mantissa)
            + b"".join(_I.pack(s) for s in self.ssrcs)
        )
        return _pack(PSFB, self.FMT, body)

    @classmethod
    def parse(cls, data: bytes) -> RtcpRemb:
        sender, _, body = _feedback_header(data, PSFB, cls.FMT)
        if len(body) < 16 or body[8:12] != b"REMB":
            raise ValueError("RTCP PSFB FMT 15 is not a REMB message")
        word = _I.unpack_from(body, 12)[0]
        num = word >> 24
        if len(body) < 16 + 4 * num:
            raise ValueError(f"REMB too short for {num} SSRCs")
        bitrate = (word & 0x3FFFF) << ((word >> 18) & 0x3F)
        return cls(sender, bitrate, list(struct.unpack_from(f"!{num}I", body, 16)))


@dataclass(slots=True)
class RtcpUnknown:
    """Any other RTCP packet (APP, XR, other feedback formats), kept as its raw body (padding
    removed) so that compound parsing never fails on types it does not understand.
    """

    packet_type: int
    fmt: int
    body: bytes = b""

    def __bytes__(self) -> bytes:
        return _pack(self.packet_type, self.fmt, self.body)

    @classmethod
    def parse(cls, data: bytes) -> RtcpUnknown:
        fmt, pt, body = _split(data)
        return cls(pt, fmt, bytes(body))


RtcpPacket: TypeAlias = (
    RtcpSenderReport
    | RtcpReceiverReport
    | RtcpSdes
    | RtcpBye
    | RtcpNack
    | RtcpTransportFeedback
    | RtcpPli
    | RtcpFir
    | RtcpRemb
    | RtcpUnknown
)


def _parse_one(data: bytes, packet_type: int, fmt: int) -> RtcpPacket:
    if packet_type == SR:
        return RtcpSenderReport.parse(data)
    if packet_type == RR:
        return RtcpReceiverReport.parse(data)
    if packet_type == SDES:
        return RtcpSdes.parse(data)
    if packet_type == BYE:
        return RtcpBye.parse(data)
    if packet_type == RTPFB:
        if fmt == RtcpNack.FMT:
            return RtcpNack.parse(data)
        if fmt == RtcpTransportFeedback.FMT:
            return RtcpTransportFeedback.parse(data)
    elif packet_type == PSFB:
        if fmt == RtcpPli.FMT:
            return RtcpPli.parse(data)
        if fmt == RtcpFir.FMT:
            return RtcpFir.parse(data)
        if fmt == RtcpRemb.FMT and data[12:16] == b"REMB":
            return RtcpRemb.parse(data)
    return RtcpUnknown.parse(data)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet (RFC 3550 §6.1). Raises ValueError on a bad
    version or length, or a malformed packet of a known type; unknown types become RtcpUnknown.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n == 0:
        raise ValueError("empty RTCP packet")
    while pos < n:
        if pos + 4 > n:
            raise ValueError("RTCP compound packet ends with a truncated header")
        b0, pt, words = _HEADER.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise ValueError(f"RTCP version is {b0 >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > n:
            raise ValueError("RTCP packet length runs past the end of the compound packet")
        packets.append(_parse_one(data[pos:end], pt, b0 & 0x1F))
        pos = end
    return packets


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    """Concatenate RTCP packets into one compound packet (RFC 3550 §6.1)."""
    return b"".join(bytes(p) for p in packets)
