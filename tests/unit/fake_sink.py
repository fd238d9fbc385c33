"""A packet sink for unit tests: records what a leg or a DownTrack sends (no SRTP, no socket)."""

from __future__ import annotations

from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.rtcp import RtcpPli, parse_compound


class FakeSink:
    """Parses every RTP packet sent and keeps every RTCP compound as bytes."""

    def __init__(self) -> None:
        self.rtp: list[RtpPacket] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, packet: bytes) -> int:
        self.rtp.append(RtpPacket.parse(packet))
        return len(packet)

    def send_rtcp(self, packet: bytes) -> int:
        self.rtcp.append(packet)
        return len(packet)

    def rtcp_packets(self) -> list[object]:
        return [p for data in self.rtcp for p in parse_compound(data)]

    def plis(self) -> list[int]:
        """The media SSRCs of the PLIs sent (RFC 4585 §6.3.1)."""
        return [p.media_ssrc for p in self.rtcp_packets() if isinstance(p, RtcpPli)]
