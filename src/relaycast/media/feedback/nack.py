"""Generic NACK generation for one incoming media SSRC (RFC 4585 §6.2.1).

The receive side of NACK: `NackGenerator.on_packet()` is called for every media
packet from the publisher (for an RTX retransmission, with the original sequence
number carried in its payload, RFC 4588 §4), and `poll()` from a periodic timer
(every 10-20 ms is plenty). `poll()` returns one `RtcpNack` listing every missing
sequence number that is due:

* first request once a gap has been known for `reorder_delay` (a few ms, so plain
  reordering on the path is not NACKed);
* retries every `max(rtt, 20 ms)`;
* a sequence number is given up after `max_retries` requests (once the last one
  had its round trip to be answered) or `max_age` seconds after it was first
  found missing.

A forward jump of more than `max_missing` sequence numbers, or a stream that
restarts far behind (two consecutive packets more than `max_missing` behind),
resets the state instead of NACKing thousands of packets. After a reset or a
give-up the decoder cannot be made whole by retransmission:
`take_keyframe_request()` then returns True once, so the caller can ask for a
keyframe.

Pure and synchronous: the clock is injected as `now` (seconds, monotonic).
"""

from __future__ import annotations

from dataclasses import dataclass

from relaycast.rtp.rtcp import RtcpNack
from relaycast.rtp.seq import seq_diff

__all__ = ["NackGenerator", "NackStats"]

#: Retries are never sent more often than this, however small the RTT.
MIN_RETRY_INTERVAL = 0.020
#: Tolerance on time comparisons, so float clocks do not make a retry one tick late.
_EPS = 1e-6
#: Cap on FCI entries in one NACK (RFC 4585 §6.2.1: 4 bytes each); keeps the
#: compound packet well under the path MTU. Whatever does not fit stays due.
MAX_FCI_PER_NACK = 200


@dataclass(slots=True)
class NackStats:
    """Counters for metrics and tests."""

    nacks_sent: int = 0
    """RTCP NACK packets returned by `poll()`."""
    packets_requested: int = 0
    """Sequence-number requests in those NACKs (retries counted again)."""
    recovered: int = 0
    """Missing packets that arrived after being NACKed at least once."""
    reordered: int = 0
    """Missing packets that arrived before any NACK was sent for them."""
    gave_up: int = 0
    """Missing packets dropped after max_retries / max_age / overflow."""
    resets: int = 0
    """State resets after a jump larger than max_missing."""


class _Missing:
    __slots__ = ("first_seen", "last_sent", "retries")

    def __init__(self, first_seen: float) -> None:
        self.first_seen = first_seen
        self.last_sent = 0.0
        self.retries = 0


class NackGenerator:
    """Detects lost RTP packets of one SSRC and builds NACKs for them (RFC 4585 §6.2.1).

    Sequence numbers are tracked extended (unwrapped) internally so that
    wrap-around at 65535 is seamless; NACKs carry the 16-bit values.
    """

    __slots__ = (
        "_highest",
        "_keyframe_wanted",
        "_missing",
        "_restart_candidate",
        "max_age",
        "max_missing",
        "max_retries",
        "media_ssrc",
        "reorder_delay",
        "rtt",
        "sender_ssrc",
        "stats",
    )

    def __init__(
        self,
        media_ssrc: int,
        sender_ssrc: int,
        *,
        max_retries: int = 10,
        max_age: float = 1.0,
        max_missing: int = 512,
        reorder_delay: float = 0.005,
    ) -> None:
        if max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, got {max_retries}")
        if max_missing < 1 or max_missing > 0x7FFF:
            raise ValueError(f"max_missing must be in 1..32767, got {max_missing}")
        self.media_ssrc = media_ssrc
        self.sender_ssrc = sender_ssrc
        self.max_retries = max_retries
        self.max_age = max_age
        self.max_missing = max_missing
        self.reorder_delay = reorder_delay
        self.stats = NackStats()
        self._highest: int | None = None  # extended highest sequence number seen
        # extended seq -> state; insertion order == ascending seq order
        self._missing: dict[int, _Missing] = {}
        self._restart_candidate: int | None = None  # 16-bit seq expected next
        self._keyframe_wanted = False
        #: round trip to the sender measured from NACK to retransmission (seconds, smoothed as
        #: RFC 6298 §2 does; only packets NACKed once count: Karn's rule), None until measured
        self.rtt: float | None = None

    # -- receive path ---------------------------------------------------------

    @property
    def missing_count(self) -> int:
        """Sequence numbers currently considered lost and still being requested."""
        return len(self._missing)

    @property
    def missing(self) -> list[int]:
        """The 16-bit sequence numbers currently missing, oldest first."""
        return [s & 0xFFFF for s in self._missing]

    def _reset(self, ext: int) -> None:
        if self._missing:
            self._keyframe_wanted = True
        self._missing.clear()
        self._highest = ext
        self._restart_candidate = None
        self.stats.resets += 1

    def on_packet(self, seq: int, now: float) -> None:
        """Records the arrival of media packet `seq` (16 bits) at time `now`."""
        seq &= 0xFFFF
        highest = self._highest
        if highest is None:
            self._highest = seq
            return
        delta = seq_diff(seq, highest & 0xFFFF)
        if delta > 0:
            self._restart_candidate = None
            ext = highest + delta
            if delta > self.max_missing:
                # Too many lost to be worth NACKing: start again from here.
                self._keyframe_wanted = True
                self._reset(ext)
                return
            if delta > 1:
                missing = self._missing
                for s in range(highest + 1, ext):
                    missing[s] = _Missing(now)
                overflow = len(missing) - self.max_missing
                if overflow > 0:
                    self._drop_oldest(overflow)
            self._highest = ext
            return
        if delta == 0:
            return  # duplicate of the newest packet
        ext = highest + delta
        entry = self._missing.pop(ext, None)
        if entry is not None:
            if entry.retries:
                self.stats.recovered += 1
                if entry.retries == 1:
                    sample = max(now - entry.last_sent, 0.0)
                    rtt = self.rtt
                    self.rtt = sample if rtt is None else 0.875 * rtt + 0.125 * sample
            else:
                self.stats.reordered += 1
            self._restart_candidate = None
            return
        if -delta > self.max_missing:
            # Far behind: a stray ancient packet, or the sender restarted its
            # sequence numbers. Two in a row means a restart.
            if self._restart_candidate == seq:
                self._keyframe_wanted = True
                self._reset(ext)
            else:
                self._restart_candidate = (seq + 1) & 0xFFFF
            return
        # An old duplicate or a packet we already gave up on: nothing to do.

    def _drop_oldest(self, count: int) -> None:
        missing = self._missing
        for _ in range(count):
            del missing[next(iter(missing))]
        self.stats.gave_up += count
        self._keyframe_wanted = True

    # -- timer path -----------------------------------------------------------

    def poll(self, now: float, rtt: float | None = None) -> RtcpNack | None:
        """Returns a NACK for every missing sequence number that is due, or None.

        `rtt` is the round-trip time to the publisher in seconds; by default the one this
        generator measured (:attr:`rtt`, 0 when unknown). Retries are spaced by
        `max(rtt, 20 ms)`.
        """
        if rtt is None:
            rtt = self.rtt or 0.0
        missing = self._missing
        if not missing:
            return None
        retry_interval = max(rtt, MIN_RETRY_INTERVAL) - _EPS
        max_retries = self.max_retries
        max_age = self.max_age
        reorder_delay = self.reorder_delay - _EPS
        due: list[int] = []
        expired: list[int] = []
        fci = 0
        fci_base = -0x10000
        for ext, entry in missing.items():
            if now - entry.first_seen > max_age:
                expired.append(ext)
                continue
            if entry.retries == 0:
                if now - entry.first_seen < reorder_delay:
                    continue
            elif now - entry.last_sent < retry_interval:
                continue
            elif entry.retries >= max_retries:
                # The last request had its round trip and nothing came back.
                expired.append(ext)
                continue
            # Count FCI entries (PID + 16-bit BLP) the way a packer fills them.
            if ext - fci_base > 16:
                if fci >= MAX_FCI_PER_NACK:
                    continue
                fci += 1
                fci_base = ext
            entry.retries += 1
            entry.last_sent = now
            due.append(ext & 0xFFFF)
        if expired:
            for ext in expired:
                del missing[ext]
            self.stats.gave_up += len(expired)
            self._keyframe_wanted = True
        if not due:
            return None
        self.stats.nacks_sent += 1
        self.stats.packets_requested += len(due)
        return RtcpNack(self.sender_ssrc, self.media_ssrc, due)

    def take_keyframe_request(self) -> bool:
        """True once after packets were given up or the state was reset.

        Retransmission can no longer repair the decoder's reference chain then,
        so the caller should ask the publisher for a keyframe.
        """
        wanted = self._keyframe_wanted
        self._keyframe_wanted = False
        return wanted

    def __repr__(self) -> str:
        return (
            f"NackGenerator(media_ssrc={self.media_ssrc}, missing={len(self._missing)}, "
            f"stats={self.stats})"
        )
