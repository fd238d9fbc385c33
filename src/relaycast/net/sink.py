"""The one way a media leg's packets leave the server: protect, send, count.

A :class:`MediaSink` is bound once per transport, when DTLS has produced the SRTP keys; the legs
(the publisher's ingress, each viewer's egress) never see the socket, the SRTP context or the
peer's address. The transport moves :attr:`MediaSink.addr` when the peer's address changes on
fresh authenticated traffic, so a leg cannot be pointed anywhere else.

This is also the seam where the native fan-out kernel plugs in (relaycast/native): a sink
made with its transport's :class:`SrtpContext` and a real socket offers
:meth:`MediaSink.native_handles`, and the kernel sends the packets of the DownTracks in
:attr:`MediaSink.native_owners` itself: live ones, fast-start replays and NACK answers (RTX
too). Their counts are taken from the kernel whenever a counter is read, so ``packets``,
``bytes`` and ``errors`` always include them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

from relaycast.media.stats import ServerCounters, StreamCounters
from relaycast.net.srtp import SrtpContext, SrtpError
from relaycast.net.udp_mux import is_tcp

log = logging.getLogger(__name__)

Address = tuple[str, int]
_Bytes = bytes  # MediaSink has a ``bytes`` counter, which hides the type in its body


class PacketSink(Protocol):
    """What a leg sends through. ``send_rtp`` returns the bytes put on the wire (0: dropped)."""

    def send_rtp(self, packet: bytes) -> int: ...

    def send_rtcp(self, packet: bytes) -> int: ...


class NativeOwner(Protocol):
    """A DownTrack whose LIVE packets the native kernel sends through this sink's handles."""

    def native_drain(self) -> None:
        """Take the kernel's counts into the owner's and this sink's counters."""

    def native_moved(self, addr: Address) -> None:
        """The peer's address changed."""


class MediaSink:
    """SRTP-protects and sends one session's RTP/RTCP to its peer's current address."""

    __slots__ = (
        "_addr",
        "_bytes",
        "_errors",
        "_packets",
        "_protect",
        "_protect_rtcp",
        "_sendto",
        "_srtp",
        "native_owners",
        "server",
        "stream",
    )

    def __init__(
        self,
        *,
        protect: Callable[[_Bytes], _Bytes],
        protect_rtcp: Callable[[_Bytes], _Bytes],
        sendto: Callable[[_Bytes, Address], int],
        addr: Address,
        stream: StreamCounters,
        server: ServerCounters,
        srtp: SrtpContext | None = None,
    ) -> None:
        self._protect = protect
        self._protect_rtcp = protect_rtcp
        self._sendto = sendto
        self._addr = addr
        self._srtp = srtp  # where protect comes from: lets the native kernel use its context
        self.stream = stream
        self.server = server
        #: RTP sent through this sink and not yet folded into the stream's counters
        self._packets = 0
        self._bytes = 0
        self._errors = 0
        #: DownTracks the native kernel sends for through this sink's SRTP context and socket
        self.native_owners: list[NativeOwner] = []

    # -- the native kernel's view -------------------------------------------------------------

    def native_handles(self) -> tuple[object, socket.socket] | None:
        """(outbound pylibsrtp Session, socket) when the kernel can stand in for ``send_rtp``:
        the sink protects with its SrtpContext's ``protect`` and sends with a socket's
        ``sendto``."""
        srtp = self._srtp
        if srtp is None or self._protect is not srtp.protect:
            return None
        sock = getattr(self._sendto, "__self__", None)
        if not isinstance(sock, socket.socket) or sock.fileno() < 0:
            return None
        return srtp._tx, sock

    def native_sent(self, packets: int, wire_bytes: int, errors: int) -> None:
        """Counts the kernel took for one of :attr:`native_owners`."""
        self._packets += packets
        self._bytes += wire_bytes
        if errors:
            self._errors += errors
            self.server.send_errors += errors

    def _drain(self) -> None:
        for owner in self.native_owners:
            owner.native_drain()

    @property
    def addr(self) -> Address:
        return self._addr

    @addr.setter
    def addr(self, addr: Address) -> None:
        self._addr = addr
        for owner in list(self.native_owners):
            owner.native_moved(addr)

    def route(self, sendto: Callable[[_Bytes, Address], int], addr: Address) -> None:
        """Send to ``addr`` with ``sendto`` from now on: the peer moved, possibly between UDP
        and an ICE-TCP connection. The native owners see the move and, when the new
        ``sendto`` is no UDP socket's, go back to the Python path (native_handles is None)."""
        if is_tcp(addr) != is_tcp(self._addr):
            self.fold()  # what went so far counts for the old path's protocol
        self._sendto = sendto
        self.addr = addr

    # totals, with what the native kernel sent for this sink's DownTracks taken in first

    @property
    def packets(self) -> int:
        self._drain()
        return self._packets

    @property
    def bytes(self) -> int:
        self._drain()
        return self._bytes

    @property
    def errors(self) -> int:
        self._drain()
        return self._errors

    # -- the Python path ----------------------------------------------------------------------

    def send_rtp(self, packet: _Bytes) -> int:
        """The hot path: one protect, one ``sendto``, two additions. A packet libsrtp refuses
        (too long, or an index outside its window after a wild sequence jump) or the socket
        refuses (full buffer) is counted and dropped: the viewer NACKs or waits for a keyframe."""
        try:
            data = self._protect(packet)
            self._sendto(data, self._addr)
        except (OSError, SrtpError, ValueError):
            self._errors += 1
            self.server.send_errors += 1
            return 0
        size = len(data)
        self._packets += 1
        self._bytes += size
        return size

    def fold(self) -> None:
        """Move this sink's totals into the stream's and server's counters (at close; a
        snapshot adds the live sinks' own totals, so the hot path touches only ``self``)."""
        self._drain()
        self.stream.egress_packets += self._packets
        self.stream.egress_bytes += self._bytes
        if not is_tcp(self._addr):  # ICE-TCP connections count their own (tcp_bytes_out)
            self.server.udp_bytes_out += self._bytes
        self._packets = self._bytes = 0

    def send_rtcp(self, packet: _Bytes) -> int:
        try:
            data = self._protect_rtcp(packet)
            self._sendto(data, self._addr)
        except (OSError, SrtpError, ValueError) as exc:
            self._errors += 1
            self.server.send_errors += 1
            log.debug("rtcp to %s failed: %s", self._addr, exc)
            return 0
        if not is_tcp(self._addr):
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
