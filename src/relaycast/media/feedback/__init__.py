"""Feedback components of the media legs: one RTCP feature per module, pure and clock-injected.

Every component a leg drives speaks the same small protocol (after pion/interceptor), so that
the wiring between them is visible in one place, the leg (``media/ingress.py``,
``media/egress.py``): packets in, feedback out on the timer, counters for the snapshot.
"""

from __future__ import annotations

from typing import Protocol

from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.rtcp import RtcpPacket


class Feedback(Protocol):
    """What a leg's feedback component does; synchronous, no I/O."""

    def on_rtp(self, packet: RtpPacket, arrival_us: int, now: float) -> None:
        """One RTP packet of the leg (``arrival_us``: kernel receive time, CLOCK_REALTIME)."""

    def on_rtcp(self, packet: RtcpPacket, now: float) -> None:
        """One RTCP packet the peer sent on this leg."""

    def poll(self, now: float) -> list[RtcpPacket]:
        """RTCP that is due now (called every 20 ms)."""

    def stats(self) -> dict[str, float]:
        """Numbers for the snapshot and the tests."""
