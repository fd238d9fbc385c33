"""The one way a media leg's packets leave the server: protect, send, count.

A :class:`MediaSink` is bound once per transport, when DTLS has produced the SRTP keys; the legs
(the publisher's ingress, each viewer's egress) never see the socket, the SRTP context or the
peer's address. The transport moves :attr:`MediaSink.addr` when the peer's address changes on
fresh authenticated traffic, so a leg cannot be pointed anywhere else.

This is also the seam where a native fan-out kernel plugs in: anything with ``send_rtp`` and
``send_rtcp`` of the same meaning can stand in for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from relaycast.media.stats import ServerCounters, StreamCounters
from relaycast.net.srtp import SrtpError

log = logging.getLogger(__name__)

Address = tuple[str, int]


class PacketSink(Protocol):
    """What a leg sends through. ``send_rtp`` returns the bytes put on the wire (0: dropped)."""

    def send_rtp(self, packet: bytes) -> int: ...

    def send_rtcp(self, packet: bytes) -> int: ...


class MediaSink:
    """SRTP-protects and sends one session's RTP/RTCP to its peer's current address."""

    __slots__ = (
        "_protect",
        "_protect_rtcp",
        "_sendto",
        "addr",
        "bytes",
        "errors",
        "packets",
        "server",
        "stream",
    )

    def __init__(
        self,
        *,
        protect: Callable[[bytes], bytes],
        protect_rtcp: Callable[[bytes], bytes],
        sendto: Callable[[bytes, Address], int],
        addr: Address,
        stream: StreamCounters,
        server: ServerCounters,
    ) -> None:
        self._protect = protect
        self._protect_rtcp = protect_rtcp
        self._sendto = sendto
        self.addr = addr
        self.stream = stream
        self.server = server
        #: RTP sent through this sink and not yet folded into the stream's counters
        self.packets = 0
        self.bytes = 0
        self.errors = 0

    def send_rtp(self, packet: bytes) -> int:
        """The hot path: one protect, one ``sendto``, two additions. A packet libsrtp refuses
        (too long, or an index outside its window after a wild sequence jump) or the socket
        refuses (full buffer) is counted and dropped: the viewer NACKs or waits for a keyframe."""
        try:
            data = self._protect(packet)
            self._sendto(data, self.addr)
        except (OSError, SrtpError, ValueError):
            self.errors += 1
            self.server.send_errors += 1
            return 0
        size = len(data)
        self.packets += 1
        self.bytes += size
        return size

    def fold(self) -> None:
        """Move this sink's totals into the stream's and server's counters (at close; a
        snapshot adds the live sinks' own totals, so the hot path touches only ``self``)."""
        self.stream.egress_packets += self.packets
        self.stream.egress_bytes += self.bytes
        self.server.udp_bytes_out += self.bytes
        self.packets = self.bytes = 0

    def send_rtcp(self, packet: bytes) -> int:
        try:
            data = self._protect_rtcp(packet)
            self._sendto(data, self.addr)
        except (OSError, SrtpError, ValueError) as exc:
            self.errors += 1
            self.server.send_errors += 1
            log.debug("rtcp to %s failed: %s", self.addr, exc)
            return 0
        self.server.udp_bytes_out += len(data)
        return len(data)


class NullSink:
    """A sink that drops everything: what a leg holds before its transport is connected."""

    __slots__ = ()

    def send_rtp(self, packet: bytes) -> int:
        return 0

    def send_rtcp(self, packet: bytes) -> int:
        return 0


NULL_SINK = NullSink()
