"""One UDP socket for every peer, demultiplexed by first byte (RFC 7983 §7).

* 0..3     STUN    -> :class:`relaycast.net.ice_lite.IceLite` (keyed by USERNAME)
* 20..63   DTLS    -> the transport bound to the source address
* 128..191 RTP/RTCP -> the transport bound to the source address

Anything else, or DTLS/SRTP from an address no session has validated with STUN, is dropped and
counted: garbage on the port never reaches a session.

ICE-TCP connections (``net/ice_tcp.py``) are paths of the same mux: each has a key shaped like
an address, ``("tcp:<ip>", <port>)``, that sessions validate, bind and send to like a UDP
address; :meth:`UdpMux.sendto` frames what goes there onto the connection.

Datagrams are read with ``recvmsg`` and the kernel's receive timestamp (``SO_TIMESTAMPNS``):
transport-wide congestion control feedback reports when a packet reached the host, not when the
event loop got to it, so a fan-out burst that keeps the loop busy for a few milliseconds does not
look like network queueing to the publisher's bandwidth estimator.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast.media.stats import ServerCounters

if TYPE_CHECKING:
    from relaycast.net.ice_tcp import IceTcpConnection
    from relaycast.net.transport import PeerTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value, absent from Python's module
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
READS_PER_WAKEUP = 256  # drain the socket in batches, but let timers run in between
TCP_PREFIX = "tcp:"


def tcp_key(peer: Address) -> Address:
    """The name of the ICE-TCP path from ``peer``: never equal to a UDP address."""
    return (TCP_PREFIX + peer[0], peer[1])


def is_tcp(addr: Address) -> bool:
    """Whether ``addr`` names an ICE-TCP path (:func:`tcp_key`)."""
    return addr[0].startswith(TCP_PREFIX)


def wire_address(addr: Address) -> Address:
    """The peer's IP and port as the network sees them (XOR-MAPPED-ADDRESS), for UDP
    addresses and ICE-TCP paths alike."""
    return (addr[0].removeprefix(TCP_PREFIX), addr[1])


def _closed_path(data: bytes, addr: Address) -> int:
    raise OSError(errno.ENOTCONN, f"no connection for {addr}")


class UdpMux:
    """The media socket. ``bind`` maps a peer address to its transport after ICE validates it."""

    def __init__(
        self,
        on_stun: Callable[[bytes, Address], None],
        counters: ServerCounters | None = None,
    ) -> None:
        self._on_stun = on_stun
        self.counters = counters if counters is not None else ServerCounters()
        self.by_address: dict[Address, PeerTransport] = {}
        #: open ICE-TCP connections by path key (net/ice_tcp.py), validated or not
        self.tcp_paths: dict[Address, IceTcpConnection] = {}
        self.sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the media socket has SO_REUSEPORT, so publishers can get a socket of their own
        self.reuse_port = False
        self.dedicated = 0  # dedicated sockets open
        #: workers share the port: every validated UDP address gets a connected socket before
        #: it is answered, so what it sends next reaches this process (workers/steering.py)
        self.pin_addresses = False
        self.pinned: dict[Address, socket.socket] = {}

    # -- receiving ----------------------------------------------------------------------------

    def start(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        """Own ``sock`` and read it from ``loop``."""
        self.sock = sock
        self._loop = loop
        loop.add_reader(sock.fileno(), self.read_ready)

    def read_ready(self, sock: socket.socket | None = None) -> None:
        """Event-loop callback: read what is queued on the media socket (or a dedicated one),
        a bounded number, and dispatch each datagram."""
        sock = sock or self.sock
        if sock is None:
            return
        for _ in range(READS_PER_WAKEUP):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(2048, _ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("udp receive error: %s", exc)
                continue
            arrival_us = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    arrival_us = seconds * 1_000_000 + nanoseconds // 1000
            self.datagram_received(data, addr, arrival_us or time.time_ns() // 1000)

    def datagram_received(self, data: bytes, addr: Address, arrival_us: int) -> None:
        """Dispatch one datagram; ``arrival_us`` is its receive time (µs, CLOCK_REALTIME)."""
        counters = self.counters
        counters.udp_packets_in += 1
        counters.udp_bytes_in += len(data)
        if not data:
            counters.garbage_dropped += 1
            return
        first = data[0]
        if first < 4:
            self._on_stun(data, addr)
            return
        peer = self.by_address.get(addr[:2])
        if peer is None:
            counters.garbage_dropped += 1
            return
        if 127 < first < 192:
            peer.receive_srtp(data, addr, arrival_us)
        elif 19 < first < 64:
            peer.receive_dtls(data, addr)
        else:
            counters.garbage_dropped += 1

    # -- sending ------------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send without awaiting: a full socket buffer drops the datagram (the peer NACKs)."""
        if is_tcp(addr):  # never a name lookup of "tcp:..." by the UDP socket
            try:
                self.sender_for(addr)(data, addr)
            except OSError as exc:
                self.counters.send_errors += 1
                log.debug("ice-tcp send to %s failed: %s", addr, exc)
            return
        sock = self.sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
            self.counters.udp_bytes_out += len(data)
        except OSError as exc:
            self.counters.send_errors += 1
            log.debug("udp send to %s failed: %s", addr, exc)

    def bind(self, addr: Address, peer: PeerTransport) -> bool:
        """Route ``addr`` to ``peer``; refused (False) while another live session holds it as its
        media address (:meth:`PeerTransport.holds`)."""
        key = addr[:2]
        owner = self.by_address.get(key)
        if owner is not None and owner is not peer:
            if owner.holds(key):
                self.counters.stun_address_conflicts += 1
                return False
            owner.release(key)
        if self.pin_addresses and key not in self.pinned and not is_tcp(key):
            sock = self._connected_socket(key)
            if sock is None:
                return False  # another worker would get its packets: refuse the address
            self.pinned[key] = sock
        self.by_address[key] = peer
        return True

    def unbind(self, addr: Address, peer: PeerTransport) -> None:
        if self.by_address.get(addr[:2]) is peer:
            del self.by_address[addr[:2]]
            pinned = self.pinned.pop(addr[:2], None)
            if pinned is not None:
                self._close_socket(pinned)
            conn = self.tcp_paths.get(addr)
            if conn is not None:  # the session let go of its ICE-TCP path: close it
                conn.close("its session let go of it")

    def sender_for(self, addr: Address) -> Callable[[bytes, Address], int]:
        """What sends to ``addr``: the media socket's ``sendto`` for a UDP address (the native
        fan-out kernel recognises it), the connection's for an ICE-TCP path."""
        if is_tcp(addr):
            conn = self.tcp_paths.get(addr)
            return conn.sendto if conn is not None else _closed_path
        if self.sock is None:
            return _closed_path
        return self.sock.sendto

    def tcp_path_closed(self, key: Address, conn: IceTcpConnection) -> None:
        """An ICE-TCP connection closed: its session (if any) loses that path."""
        if self.tcp_paths.get(key) is conn:
            del self.tcp_paths[key]
        owner = self.by_address.pop(key, None)
        if owner is not None:
            owner.path_closed(key)

    # -- dedicated sockets ----------------------------------------------------------------------

    def dedicate(self, addr: Address) -> socket.socket | None:
        """A socket of its own for the datagrams from ``addr`` (a publisher's media address).

        It is bound to the media port too (SO_REUSEPORT: the same user only) and connected to
        ``addr``; Linux delivers a datagram to the connected socket whose 4-tuple matches before
        the unconnected one, so a flood of garbage that fills the main socket's queue cannot
        push the publisher's packets out of the kernel, and each socket gets its share of reads
        per event-loop turn. None where that is not possible (then all stays on one socket).
        """
        if self.pin_addresses:  # it has one already (bind), closed with the address
            return self.pinned.get(addr[:2])
        if is_tcp(addr):
            return None
        sock = self._connected_socket(addr)
        if sock is not None:
            self.dedicated += 1
        return sock

    def _connected_socket(self, addr: Address) -> socket.socket | None:
        """A socket bound to the media port (SO_REUSEPORT) and connected to ``addr``, read by
        this mux; None where that is not possible."""
        main, loop = self.sock, self._loop
        if main is None or loop is None or not self.reuse_port:
            return None
        sock = _media_socket(main.family)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(main.getsockname())
            sock.connect(addr)
        except OSError as exc:
            log.debug("no dedicated socket for %s: %s", addr, exc)
            sock.close()
            return None
        loop.add_reader(sock.fileno(), self.read_ready, sock)
        return sock

    def _close_socket(self, sock: socket.socket) -> None:
        if sock.fileno() < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def release(self, sock: socket.socket) -> None:
        """Close a socket :meth:`dedicate` made (idempotent; a pinned one stays open until
        its address is unbound)."""
        if sock.fileno() < 0 or self.pin_addresses:
            return
        self._close_socket(sock)
        self.dedicated -= 1

    def close(self) -> None:
        for pinned in self.pinned.values():
            self._close_socket(pinned)
        self.pinned.clear()
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop = None
        sock.close()


async def open_udp_mux(
    host: str,
    port: int,
    on_stun: Callable[[bytes, Address], None],
    counters: ServerCounters | None = None,
    *,
    shared: bool = False,
) -> UdpMux:
    """Bind the media port (all interfaces when ``host`` is empty).

    ``shared``: other workers of this server bind the same port (the supervisor checked it
    was free); every address this mux validates then gets a connected socket of its own.

    We create the socket ourselves and keep it: reads use ``recvmsg`` for the kernel timestamp,
    and the fan-out calls ``sock.sendto`` directly, skipping asyncio's per-call bookkeeping.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = (host or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port)
    reuse_port = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")
    if shared and not reuse_port:
        raise OSError(errno.EOPNOTSUPP, "workers need SO_REUSEPORT (Linux)")
    if reuse_port and not shared:
        # SO_REUSEPORT would let a second server share the port silently: see that the port is
        # free first, as a plain bind would (EADDRINUSE), then bind for real.
        with _media_socket(family) as probe:
            probe.bind(address)
            address = probe.getsockname()[:2]  # the port the kernel chose, when 0 was asked
    sock = _media_socket(family)
    if reuse_port:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:
            reuse_port = False
    sock.bind(address)
    mux = UdpMux(on_stun, counters)
    mux.reuse_port = reuse_port
    mux.pin_addresses = shared
    mux.start(sock, loop)
    return mux


def _media_socket(family: int) -> socket.socket:
    """A non-blocking UDP socket with large buffers and kernel receive timestamps."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):  # capped by the kernel, not fatal
            sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 1024 * 1024)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock
