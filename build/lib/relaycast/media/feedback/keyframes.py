"""Keyframe request coalescing: PLI (RFC 4585 §6.3.1) or FIR (RFC 5104 §4.3.1).

Every viewer that joins, loses packets it cannot recover, or switches tabs may ask
for a keyframe. The publisher must not see one request per viewer: a keyframe is
large and a burst of them would flood the publisher's uplink. `KeyframeRequester`
sends at most one request per `interval` towards one publisher SSRC; requests that
arrive inside the interval are folded into a single pending one that goes out when
the interval is over, unless a keyframe arrived in the meantime.

Pure and synchronous: the clock is injected as `now` (seconds, monotonic).
"""

from __future__ import annotations

from relaycast.rtp.rtcp import RtcpFir, RtcpPli

__all__ = ["KeyframeRequester"]


class KeyframeRequester:
    """Coalesces keyframe requests for one publisher media SSRC.

    `request()` returns a packet to send now when none went out within `interval`,
    otherwise it marks a request pending and returns None. `poll()` (called from a
    periodic timer) returns the pending request once the interval has passed.
    `keyframe_received()` drops a pending request: the keyframe it asked for is here.

    With `use_fir=True` a Full Intra Request is produced instead of a PLI; per
    RFC 5104 §4.3.1.1 its command sequence number is incremented for every new
    request (each packet this class emits is a new request).
    """

    __slots__ = (
        "_fir_seq",
        "_last_sent",
        "_pending",
        "interval",
        "media_ssrc",
        "requested",
        "sender_ssrc",
        "sent",
        "use_fir",
    )

    def __init__(
        self,
        media_ssrc: int,
        sender_ssrc: int,
        *,
        interval: float = 0.5,
        use_fir: bool = False,
    ) -> None:
        if interval < 0:
            raise ValueError(f"keyframe request interval must be >= 0, got {interval}")
        self.media_ssrc = media_ssrc
        self.sender_ssrc = sender_ssrc
        self.interval = interval
        self.use_fir = use_fir
        self.requested = 0
        self.sent = 0
        self._last_sent: float | None = None
        self._pending = False
        self._fir_seq = 0

    @property
    def pending(self) -> bool:
        """True when a request is waiting for the interval to pass."""
        return self._pending

    @property
    def fir_sequence(self) -> int:
        """Sequence number the next FIR will carry (8 bits, RFC 5104 §4.3.1.1)."""
        return self._fir_seq

    def _due(self, now: float) -> bool:
        # 1 µs tolerance so that float clocks do not push a request one tick late
        return self._last_sent is None or now - self._last_sent >= self.interval - 1e-6

    def _emit(self, now: float) -> RtcpPli | RtcpFir:
        self._pending = False
        self._last_sent = now
        self.sent += 1
        if self.use_fir:
            seq = self._fir_seq
            self._fir_seq = (seq + 1) & 0xFF
            return RtcpFir(self.sender_ssrc, [(self.media_ssrc, seq)])
        return RtcpPli(self.sender_ssrc, self.media_ssrc)

    def request(self, now: float) -> RtcpPli | RtcpFir | None:
        """A viewer (or the server itself) wants a keyframe.

        Returns the packet to send right now, or None when one was sent less than
        `interval` ago (the request then stays pending for `poll()`).
        """
        self.requested += 1
        if self._due(now):
            return self._emit(now)
        self._pending = True
        return None

    def poll(self, now: float) -> RtcpPli | RtcpFir | None:
        """Returns the pending request once `interval` has passed since the last one."""
        if self._pending and self._due(now):
            return self._emit(now)
        return None

    def keyframe_received(self, now: float) -> None:
        """A keyframe arrived from the publisher: a pending request is satisfied."""
        del now  # part of the uniform clock-injected API; nothing time-based to do
        self._pending = False

    def __repr__(self) -> str:
        kind = "FIR" if self.use_fir else "PLI"
        return (
            f"KeyframeRequester(media_ssrc={self.media_ssrc}, {kind}, "
            f"requested={self.requested}, sent={self.sent}, pending={self._pending})"
        )
