"""One UDP socket for every peer, demultiplexed by first byte (RFC 7983 §7).

* 0..3     STUN    -> :class:`relaycast.net.ice_lite.IceLite` (keyed by USERNAME)
* 20..63   DTLS    -> the transport bound to the source address
* 128..191 RTP/RTCP -> the transport bound to the source address

Anything else, or DTLS/SRTP from an address no session has validated with STUN, is dropped and
counted: garbage on the port never reaches a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relaycast.net.transport import PeerTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]


class UdpMux(asyncio.DatagramProtocol):
    """The media socket. ``bind`` maps a peer address to its transport after ICE validates it."""

    def __init__(self, on_stun: Callable[[bytes, Address], None]) -> None:
        self._on_stun = on_stun
        self.by_address: dict[Address, PeerTransport] = {}
        self.sock: socket.socket | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self.dropped = 0
        self.send_errors = 0
        self.bytes_in = 0
        self.bytes_out = 0  # what went through sendto (not the DownTracks' direct sends)
        self.fanout_bytes_ended = 0  # media sent by DownTracks that have closed

    # -- asyncio protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.bytes_in += len(data)
        if not data:
            return
        first = data[0]
        if first < 4:
            self._on_stun(data, addr)
            return
        peer = self.by_address.get(addr[:2])
        if peer is None:
            self.dropped += 1
            return
        if 127 < first < 192:
            peer.receive_srtp(data, addr)
        elif 19 < first < 64:
            peer.receive_dtls(data, addr)
        else:
            self.dropped += 1

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    # -- sending ------------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send without awaiting: a full socket buffer drops the datagram (the peer NACKs)."""
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
            self.bytes_out += len(data)
        except (BlockingIOError, InterruptedError):
            self.send_errors += 1
        except OSError as exc:
            self.send_errors += 1
            log.debug("udp send to %s failed: %s", addr, exc)

    def bind(self, addr: Address, peer: PeerTransport) -> None:
        self.by_address[addr[:2]] = peer

    def unbind(self, addr: Address, peer: PeerTransport) -> None:
        if self.by_address.get(addr[:2]) is peer:
            del self.by_address[addr[:2]]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.sock = None


async def open_udp_mux(host: str, port: int, on_stun: Callable[[bytes, Address], None]) -> UdpMux:
    """Bind the media port (all interfaces when ``host`` is empty).

    We create the socket ourselves and keep it: the fan-out calls ``sock.sendto`` directly,
    which skips asyncio's per-call bookkeeping.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # capped by the kernel, not fatal
            sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 1024 * 1024)
    sock.bind((host or "0.0.0.0", port))
    mux = UdpMux(on_stun)
    await loop.create_datagram_endpoint(lambda: mux, sock=sock)
    mux.sock = sock
    return mux
