"""RTP reception statistics and sender-report bookkeeping (RFC 3550 §6.4).

`ReceiverStats` runs on the publisher leg: one per incoming SSRC, it counts what
arrives (Appendix A.1 sequence tracking, A.3 loss, A.8 interarrival jitter),
remembers the publisher's last sender report (LSR / DLSR, and the NTP<->RTP pair
used to map timestamps for viewers) and produces the reception report block the
server sends back in its RR.

`SenderStats` runs on each viewer leg: it counts what the server sends, builds
the server's own sender reports, and turns the viewer's reception report blocks
into a round-trip time (§6.4.1).

Pure and synchronous: the clock is injected (`now` / `arrival` in seconds,
monotonic; NTP values are 64-bit 32.32 fixed-point integers).
"""

from __future__ import annotations

from relaycast.rtp.rtcp import RtcpReceptionReport, RtcpSenderReport, ntp_middle32
from relaycast.rtp.seq import ts_diff

__all__ = ["ReceiverStats", "SenderStats", "rtp_timestamp_at"]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 §A.1
MAX_MISORDER = 100  # RFC 3550 §A.1
_LOST_MIN = -(1 << 23)  # cumulative lost is a signed 24-bit field (§6.4.1)
_LOST_MAX = (1 << 23) - 1
_U32 = 0xFFFFFFFF


def rtp_timestamp_at(ntp: int, ref_ntp: int, ref_rtp: int, clock_rate: int) -> int:
    """RTP timestamp at wallclock `ntp`, extrapolated from the pair (`ref_ntp`, `ref_rtp`).

    NTP values are 64-bit 32.32 fixed point (RFC 3550 §4); the result is rounded to
    the nearest tick and wrapped modulo 2**32. `ntp` may precede `ref_ntp`.
    """
    delta = ntp - ref_ntp
    ticks = (delta * clock_rate + (1 << 31)) >> 32
    return (ref_rtp + ticks) & _U32


class ReceiverStats:
    """Reception statistics of one incoming SSRC (RFC 3550 §6.4.1, Appendix A.1/A.3/A.8).

    The sequence tracking follows Appendix A.1 (without probation: the SSRC is
    announced by signalling): a jump of more than MAX_DROPOUT ahead or MAX_MISORDER
    behind is ignored unless the next packet follows it, which restarts the
    statistics (the sender restarted its sequence). Jitter is updated on in-order
    packets only, so retransmissions and reordered packets do not inflate it.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_bytes",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_arrival",
        "_last_rtp_ts",
        "_last_sr",
        "_lsr",
        "_lsr_arrival",
        "_max_seq",
        "_received",
        "_received_prior",
        "_started",
        "clock_rate",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._bytes = 0
        self._jitter = 0.0  # RTP timestamp units
        self._last_arrival: float | None = None
        self._last_rtp_ts = 0
        self._lsr = 0
        self._lsr_arrival = 0.0
        self._last_sr: tuple[int, int, float] | None = None

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def on_packet(self, seq: int, rtp_ts: int, arrival: float, size: int = 0) -> None:
        """Accounts for one RTP packet (`size` in bytes, for the byte counter)."""
        seq &= 0xFFFF
        in_order = False
        if not self._started:
            self._started = True
            self._init_seq(seq)
            in_order = True
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta < MAX_DROPOUT:
                if udelta:
                    in_order = True
                    if seq < self._max_seq:
                        self._cycles += RTP_SEQ_MOD
                    self._max_seq = seq
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if seq == self._bad_seq:
                    # Two sequential packets after a big jump: the source restarted.
                    self._init_seq(seq)
                    in_order = True
                    self._last_arrival = None
                else:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return
            # else: duplicate or reordered packet, counted but not in order
        self._received += 1
        self._bytes += size
        if in_order:
            last_arrival = self._last_arrival
            if last_arrival is not None:
                # A.8: D(i-1,i) = (Rj - Ri) - (Sj - Si), in RTP units, wrap-safe.
                d = (arrival - last_arrival) * self.clock_rate - ts_diff(rtp_ts, self._last_rtp_ts)
                self._jitter += (abs(d) - self._jitter) / 16.0
            self._last_arrival = arrival
            self._last_rtp_ts = rtp_ts & _U32

    def on_sender_report(self, sr: RtcpSenderReport, now: float) -> None:
        """Remembers the sender report: LSR for our next block, the NTP/RTP pair for mapping."""
        self._lsr = ntp_middle32(sr.ntp_timestamp)
        self._lsr_arrival = now
        self._last_sr = (sr.ntp_timestamp, sr.rtp_timestamp, now)

    # -- derived values -------------------------------------------------------

    @property
    def extended_highest_sequence(self) -> int:
        """Cycles count plus highest sequence number received (§6.4.1)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first one (Appendix A.3)."""
        if self._received == 0:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative with duplicates), unclamped (A.3)."""
        return self.expected - self._received

    @property
    def packets_received(self) -> int:
        return self._received

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def jitter(self) -> int:
        """Interarrival jitter in RTP timestamp units, as reported (A.8)."""
        return int(self._jitter)

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self.clock_rate

    @property
    def loss_fraction_total(self) -> float:
        """Share of expected packets lost since the start, 0..1."""
        expected = self.expected
        if expected <= 0:
            return 0.0
        return max(0, expected - self._received) / expected

    @property
    def last_sr(self) -> tuple[int, int, float] | None:
        """(NTP timestamp, RTP timestamp, local arrival time) of the last SR, if any."""
        return self._last_sr

    def report_block(self, now: float) -> RtcpReceptionReport:
        """Reception report block for this SSRC (RFC 3550 §6.4.1, Appendix A.3).

        The fraction lost covers the interval since the previous call.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        cumulative = min(_LOST_MAX, max(_LOST_MIN, expected - self._received))
        dlsr = 0
        if self._lsr:
            dlsr = min(_U32, max(0, int((now - self._lsr_arrival) * 65536.0)))
        return RtcpReceptionReport(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            packets_lost=cumulative,
            highest_sequence=self.extended_highest_sequence & _U32,
            jitter=min(_U32, int(self._jitter)),
            lsr=self._lsr,
            dlsr=dlsr,
        )


class SenderStats:
    """Send-side counters of one outgoing SSRC and its receiver's feedback (RFC 3550 §6.4)."""

    __slots__ = (
        "clock_rate",
        "fraction_lost",
        "jitter",
        "last_rr_time",
        "octet_count",
        "packet_count",
        "packets_lost",
        "rtt",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.packet_count = 0
        self.octet_count = 0
        #: From the receiver's last report block: fraction lost (0..255, §6.4.1).
        self.fraction_lost = 0
        #: Cumulative packets lost as reported by the receiver.
        self.packets_lost = 0
        #: Interarrival jitter reported by the receiver, RTP units.
        self.jitter = 0
        #: Last round-trip time measured, seconds (None until one is measured).
        self.rtt: float | None = None
        self.last_rr_time: float | None = None

    def on_sent(self, size_payload: int) -> None:
        """Counts one RTP packet sent with `size_payload` payload octets (§6.4.1)."""
        self.packet_count += 1
        self.octet_count += size_payload

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def sender_report(self, now: float, ntp_now: int, rtp_ts_now: int) -> RtcpSenderReport:
        """SR for this SSRC at wallclock `ntp_now` / RTP time `rtp_ts_now` (§6.4.1).

        Counters wrap modulo 2**32 as the fields do. `now` is accepted for clock
        uniformity; the NTP time is what the receiver echoes back as LSR.
        """
        del now
        return RtcpSenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=ntp_now,
            rtp_timestamp=rtp_ts_now & _U32,
            packet_count=self.packet_count & _U32,
            octet_count=self.octet_count & _U32,
            reports=[],
        )

    def on_receiver_report(
        self, block: RtcpReceptionReport, now: float, ntp_now: int
    ) -> float | None:
        """Stores the receiver's report and returns the RTT in seconds, if measurable.

        RFC 3550 §6.4.1: RTT = A - LSR - DLSR with A the arrival time as the middle
        32 bits of NTP, all in 1/65536 s. No RTT when LSR is 0 (no SR received yet)
        or when the result is negative (clock trouble).
        """
        self.fraction_lost = block.fraction_lost
        self.packets_lost = block.packets_lost
        self.jitter = block.jitter
        self.last_rr_time = now
        if block.lsr == 0:
            return None
        units = (ntp_middle32(ntp_now) - block.lsr - block.dlsr) & _U32
        if units & 0x80000000:
            return None
        rtt = units / 65536.0
        self.rtt = rtt
        return rtt
