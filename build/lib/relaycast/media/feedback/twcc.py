"""Transport-wide congestion control feedback, receive side
(draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).

`TwccRecorder.on_packet()` records the arrival time of every packet that carries
the transport-wide sequence number header extension (§2, parsed with
`parse_transport_seq`); `build()`, called from a periodic timer (every 50-100 ms),
returns the transport feedback packets for everything recorded since the previous
call. The publisher's congestion controller (GCC in browsers) derives its send
rate from them.

Coverage: each feedback run starts where the previous one ended (the first one
at the lowest sequence seen) and ends at the highest sequence received, so every
sequence number is reported exactly once, received or lost. A packet arriving
after the feedback that covered it was built is counted in `late` and not
reported again. A run is split into several packets when one would exceed
`max_packet_size` bytes, `max_status_count` statuses, or when two consecutive
arrivals are further apart than the 16-bit delta field allows (±8.19 s).

Pure and synchronous: times are injected (microseconds, monotonic).
"""

from __future__ import annotations

from relaycast.rtp.rtcp import RtcpTransportFeedback
from relaycast.rtp.seq import SeqUnwrapper

__all__ = ["TwccRecorder", "parse_transport_seq"]

#: RTPFB header (12) + base seq, status count, reference time, fb count (8).
_HEADER_BYTES = 20
_RUN_MIN = 7  # the encoder uses a run-length chunk for runs of 7+ equal symbols
_RUN_MAX = 0x1FFF  # longest run one run-length chunk holds (§3.1.3)
_TICK_US = 250  # receive delta unit (§3.1.5)
_REF_US = 64_000  # reference time unit (§3.1)


def parse_transport_seq(ext_value: bytes) -> int:
    """Transport-wide sequence number from its header extension value (§2): 16 bits, big-endian."""
    if len(ext_value) != 2:
        raise ValueError(
            f"transport-wide sequence number extension must be 2 bytes, got {len(ext_value)}"
        )
    return (ext_value[0] << 8) | ext_value[1]


class _Segment:
    """Arrivals for one feedback packet, with a running upper bound of its size."""

    __slots__ = (
        "arrivals",
        "delta_bytes",
        "long_runs",
        "prev_ticks",
        "received",
        "run_len",
        "run_symbol",
        "short_symbols",
        "start",
    )

    def __init__(self, start: int) -> None:
        self.start = start
        self.arrivals: list[int | None] = []
        self.delta_bytes = 0
        self.received = 0
        self.prev_ticks: int | None = None
        self.run_symbol = -1
        self.run_len = 0
        self.short_symbols = 0  # symbols in finished runs shorter than _RUN_MIN
        self.long_runs = 0  # run-length chunks for finished runs of _RUN_MIN or more

    def size_with(self, symbol: int, delta_bytes: int) -> int:
        """Upper bound on the serialized size if one more status were appended.

        Each stretch of short runs costs at most ceil(n / 7) two-byte status vector
        chunks, each long run ceil(n / 8191) run-length chunks; stretches of short
        runs are separated by long runs, hence the `long_runs + 1` slack.
        """
        run_len = self.run_len + 1 if symbol == self.run_symbol else 1
        short = self.short_symbols
        long_runs = self.long_runs
        if symbol != self.run_symbol and self.run_len:
            if self.run_len >= _RUN_MIN:
                long_runs += -(-self.run_len // _RUN_MAX)
            else:
                short += self.run_len
        if run_len >= _RUN_MIN:
            long_runs += -(-run_len // _RUN_MAX)
        else:
            short += run_len
        chunks = -(-short // 7) + 2 * long_runs + 1
        total = _HEADER_BYTES + 2 * chunks + self.delta_bytes + delta_bytes
        return (total + 3) & ~3

    def append(self, arrival: int | None, symbol: int, delta_bytes: int) -> None:
        self.arrivals.append(arrival)
        self.delta_bytes += delta_bytes
        if symbol == self.run_symbol:
            self.run_len += 1
        else:
            if self.run_len >= _RUN_MIN:
                self.long_runs += -(-self.run_len // _RUN_MAX)
            else:
                self.short_symbols += self.run_len
            self.run_symbol = symbol
            self.run_len = 1
        if arrival is not None:
            self.received += 1
            self.prev_ticks = arrival // _TICK_US


class TwccRecorder:
    """Records packet arrivals and builds transport-wide CC feedback (draft-holmer §3.1)."""

    __slots__ = (
        "_arrivals",
        "_feedback_count",
        "_highest",
        "_next_base",
        "_unwrapper",
        "dropped",
        "duplicates",
        "late",
        "max_packet_size",
        "max_pending",
        "max_status_count",
        "media_ssrc",
        "sender_ssrc",
    )

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int,
        *,
        max_packet_size: int = 1100,
        max_status_count: int = 16384,
        max_pending: int = 32768,
    ) -> None:
        if max_packet_size < 64:
            raise ValueError(f"max_packet_size must be at least 64 bytes, got {max_packet_size}")
        if not 1 <= max_status_count <= 0xFFFF:
            raise ValueError(f"max_status_count must be in 1..65535, got {max_status_count}")
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.max_packet_size = max_packet_size
        self.max_status_count = max_status_count
        self.max_pending = max_pending
        #: Packets ignored because their sequence number was already recorded.
        self.duplicates = 0
        #: Packets that arrived after the feedback covering them was built.
        self.late = 0
        #: Arrivals discarded unreported (memory cap, or an all-lost stretch of a split).
        self.dropped = 0
        self._unwrapper = SeqUnwrapper()
        self._arrivals: dict[int, int] = {}  # extended seq -> arrival µs, since last build
        self._highest: int | None = None
        self._next_base: int | None = None
        self._feedback_count = 0

    @property
    def feedback_count(self) -> int:
        """Feedback packet count the next packet will carry (8 bits, wraps)."""
        return self._feedback_count

    @property
    def pending(self) -> int:
        """Arrivals recorded and not yet reported."""
        return len(self._arrivals)

    def on_packet(self, transport_seq: int, arrival_us: int) -> None:
        """Records the arrival of the packet with 16-bit `transport_seq` at `arrival_us`."""
        ext = self._unwrapper.unwrap(transport_seq & 0xFFFF)
        next_base = self._next_base
        if next_base is not None and ext < next_base:
            self.late += 1
            return
        arrivals = self._arrivals
        if ext in arrivals:
            self.duplicates += 1
            return
        arrivals[ext] = arrival_us
        if self._highest is None or ext > self._highest:
            self._highest = ext
        if len(arrivals) > self.max_pending:
            # build() is not being called: forget the oldest arrival.
            oldest = next(iter(arrivals))
            del arrivals[oldest]
            self.dropped += 1
            if next_base is None or next_base <= oldest:
                self._next_base = oldest + 1

    def build(self, now_us: int) -> list[RtcpTransportFeedback]:
        """Feedback packets for every sequence number since the last build, [] if nothing new.

        `now_us` is accepted for clock uniformity; the feedback carries arrival times only.
        """
        del now_us
        arrivals = self._arrivals
        highest = self._highest
        if not arrivals or highest is None:
            return []
        lowest = min(arrivals)
        base = self._next_base
        if base is None or base > lowest or lowest - base > self.max_status_count // 2:
            # First feedback, or a jump so large that reporting the hole is pointless.
            base = lowest
        self._arrivals = {}
        self._next_base = highest + 1

        segments: list[_Segment] = []
        seg = _Segment(base)
        max_size = self.max_packet_size
        max_count = self.max_status_count
        for ext in range(base, highest + 1):
            arrival = arrivals.get(ext)
            symbol, nbytes, fits = self._classify(seg, arrival)
            if seg.arrivals and (
                not fits
                or len(seg.arrivals) >= max_count
                or seg.size_with(symbol, nbytes) > max_size
            ):
                segments.append(seg)
                seg = _Segment(ext)
                symbol, nbytes, _ = self._classify(seg, arrival)
            seg.append(arrival, symbol, nbytes)
        segments.append(seg)

        out: list[RtcpTransportFeedback] = []
        for seg in segments:
            if not seg.received:
                self.dropped += len(seg.arrivals)
                continue
            out.append(
                RtcpTransportFeedback.from_arrivals(
                    self.sender_ssrc,
                    self.media_ssrc,
                    seg.start & 0xFFFF,
                    self._feedback_count,
                    seg.arrivals,
                )
            )
            self._feedback_count = (self._feedback_count + 1) & 0xFF
        return out

    @staticmethod
    def _classify(seg: _Segment, arrival: int | None) -> tuple[int, int, bool]:
        """(status symbol, delta bytes, fits in this segment) for one more arrival (§3.1.1)."""
        if arrival is None:
            return 0, 0, True
        ticks = arrival // _TICK_US
        prev = seg.prev_ticks
        # The first delta of a packet is from the reference time, a multiple of 64 ms.
        base = (arrival // _REF_US) * (_REF_US // _TICK_US) if prev is None else prev
        delta = ticks - base
        if 0 <= delta <= 255:
            return 1, 1, True
        return 2, 2, -0x8000 <= delta <= 0x7FFF
