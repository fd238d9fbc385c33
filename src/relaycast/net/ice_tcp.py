"""ICE over TCP (RFC 6544): passive host candidates on the media port number, over TCP.

For clients whose networks drop UDP. The server listens on TCP at the same port number as
the media UDP socket and advertises ``tcptype passive`` candidates there (``sdp/answer.py``,
at a lower priority than UDP). Each accepted connection is a new *path*: it carries the
STUN, DTLS and SRTP/SRTCP of one session, each packet framed with a 2-byte length
(RFC 4571 §2, as RFC 6544 §3 requires).

A path is known to the rest of the media plane by a key that looks like an address,
``("tcp:<ip>", <port>)`` (:func:`relaycast.net.udp_mux.tcp_key`): the transport validates,
moves to and holds it like any UDP address, and :class:`UdpMux` sends to it through the
connection. A UDP datagram can never match it.

Rules (docs/security.md, "ICE over TCP"):

* the first frame must be a STUN Binding request that :class:`IceLite` accepts exactly as on
  UDP (USERNAME, MESSAGE-INTEGRITY, FINGERPRINT); anything else first closes the connection,
  and so does no such request within :data:`BINDING_DEADLINE` seconds;
* a frame longer than :data:`MAX_FRAME`, an empty frame, or a frame whose first byte is not
  STUN, DTLS or RTP/RTCP (RFC 7983) closes the connection; every such close is counted;
* connections per client address and in all are capped (:class:`IceTcpListener`);
* a connection whose session ends is closed; a session whose media path's connection closes
  ends (or, still connecting, waits for another path);
* what does not fit the socket's send buffer plus :data:`WRITE_BUFFER_LIMIT` is dropped a
  whole frame at a time, like a full UDP buffer (the peer NACKs): the stream stays framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections import Counter

from relaycast.net.ice_lite import IceLite
from relaycast.net.udp_mux import Address, UdpMux, tcp_key

log = logging.getLogger(__name__)

#: the longest frame we take: a full-size UDP datagram and some (we read UDP with 2048 bytes)
MAX_FRAME = 2048
#: seconds a new connection has to send a Binding request that authenticates
BINDING_DEADLINE = 5.0
#: bytes queued in user space per connection before frames are dropped
WRITE_BUFFER_LIMIT = 512 * 1024
_LENGTH = struct.Struct("!H")


class FrameError(ValueError):
    """The byte stream is not RFC 4571 framing we accept (too long or empty a frame)."""


class FrameReader:
    """RFC 4571 de-framing: feed the bytes as they arrive, get whole frames back.

    Holds at most one partial frame (``max_frame`` + 2 bytes).
    """

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a frame not complete yet."""
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """The bytes of a frame not complete yet, handed on (the reader is emptied)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes, in order. Raises :class:`FrameError` at the first
        length field that is 0 or over ``max_frame`` (the frames before it are lost too: the
        connection is closed anyway)."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            (length,) = _LENGTH.unpack_from(buffer, pos)
            if length == 0 or length > self.max_frame:
                raise FrameError(f"frame of {length} bytes (1..{self.max_frame} accepted)")
            if end - pos - 2 < length:
                break
            frames.append(bytes(buffer[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        if pos:
            del buffer[:pos]
        return frames


def frame(data: bytes) -> bytes:
    """``data`` with its RFC 4571 length prefix."""
    if not 0 < len(data) <= 0xFFFF:
        raise ValueError(f"cannot frame {len(data)} bytes")
    return _LENGTH.pack(len(data)) + data


class IceTcpConnection(asyncio.Protocol):
    """One accepted TCP connection: a candidate path of (at most) one session."""

    def __init__(self, listener: IceTcpListener) -> None:
        self.listener = listener
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)  # the client's IP and port
        self.key: Address = ("", 0)  # tcp_key(peer): the path's name in the mux
        self.authenticated = False
        self.closed = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername")
        self.peer = (str(peername[0]), int(peername[1]))
        self.key = tcp_key(self.peer)
        if not self.listener.admit(self):
            self.closed = True
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(BINDING_DEADLINE, self._deadline_passed)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        mux = self.listener.mux
        mux.counters.tcp_bytes_in += len(data)
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            self.drop(str(exc))
            return
        arrival_us = time.time_ns() // 1000
        for packet in frames:
            if self.closed:
                return
            self._frame(packet, arrival_us)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.listener.forget(self)

    # -- frames -------------------------------------------------------------------------------

    def _frame(self, data: bytes, arrival_us: int) -> None:
        """One packet off the stream, demultiplexed by its first byte like a datagram."""
        mux = self.listener.mux
        first = data[0]
        key = self.key
        if first < 4:
            self.listener.ice.on_stun(data, key)
            if self.closed:  # handed over to the worker that owns its ufrag (workers/)
                return
            if not self.authenticated:
                if key not in mux.by_address:  # not a Binding request that validated the path
                    self.drop("its first packet was not a valid STUN Binding request")
                    return
                self.authenticated = True
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
            return
        if not self.authenticated:
            self.drop("media before a valid STUN Binding request")
            return
        peer = mux.by_address.get(key)
        if peer is None:  # the session is gone (its close closes this connection, soon)
            return
        if 127 < first < 192:
            peer.receive_srtp(data, key, arrival_us)
        elif 19 < first < 64:
            peer.receive_dtls(data, key)
        else:
            self.drop(f"a packet starting with byte {first} (RFC 7983: none of ours)")

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self.authenticated and not self.closed:
            self.listener.mux.counters.tcp_timeouts += 1
            self.close("no valid STUN Binding request in time")

    # -- sending ------------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: Address | None = None) -> int:
        """Send one packet as one frame (``addr`` is ignored: a connection has one peer).

        Raises OSError when the connection is closed or its queue is full: the caller counts
        the drop, as for a UDP socket's ``sendto``."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise OSError(errno.ENOTCONN, "the ICE-TCP connection is closed")
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            raise OSError(errno.ENOBUFS, "the ICE-TCP connection's queue is full")
        transport.write(frame(data))
        self.listener.mux.counters.tcp_bytes_out += len(data) + 2
        return len(data)

    # -- closing ------------------------------------------------------------------------------

    def drop(self, why: str) -> None:
        """Close for a protocol violation, counted."""
        self.listener.mux.counters.tcp_dropped += 1
        log.debug("ice-tcp: closing %s: %s", self.peer, why)
        self.close(why, abort=True)

    def close(self, why: str = "closed", abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        transport = self.transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        self.listener.forget(self)


class IceTcpListener:
    """The TCP side of the media port: accepts, caps and tracks ICE-TCP connections."""

    def __init__(self, mux: UdpMux, ice: IceLite, *, per_ip: int, total: int) -> None:
        self.mux = mux
        self.ice = ice
        self.per_ip = per_ip
        self.total = total
        self.connections: dict[Address, IceTcpConnection] = {}
        self._per_ip: Counter[str] = Counter()
        self.server: asyncio.Server | None = None

    def admit(self, conn: IceTcpConnection) -> bool:
        """Count a new connection in, or refuse it (counted) when a cap is reached."""
        counters = self.mux.counters
        stale = self.connections.get(conn.key)
        if stale is not None:  # the same client port again: the old one is over
            stale.close("replaced by a new connection from the same port")
        ip = conn.peer[0]
        if len(self.connections) >= self.total or self._per_ip[ip] >= self.per_ip:
            counters.tcp_refused += 1
            log.debug("ice-tcp: refusing %s: connection limit", conn.peer)
            return False
        counters.tcp_connections += 1
        self.connections[conn.key] = conn
        self._per_ip[ip] += 1
        self.mux.tcp_paths[conn.key] = conn
        return True

    def forget(self, conn: IceTcpConnection) -> None:
        """A connection closed: free its place, and tell its session (idempotent)."""
        if self.connections.get(conn.key) is not conn:
            return
        del self.connections[conn.key]
        ip = conn.peer[0]
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        self.mux.tcp_path_closed(conn.key, conn)

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.connections.values()):
            conn.close("server shutting down")


async def open_ice_tcp(
    host: str,
    port: int,
    mux: UdpMux,
    ice: IceLite,
    *,
    per_ip: int,
    total: int,
    reuse_port: bool = False,
) -> IceTcpListener:
    """Listen on TCP ``port`` (the media port's number) on ``host`` (all interfaces when
    empty). Raises OSError when the port is taken. ``reuse_port``: workers share it."""
    loop = asyncio.get_running_loop()
    listener = IceTcpListener(mux, ice, per_ip=per_ip, total=total)
    listener.server = await loop.create_server(
        lambda: IceTcpConnection(listener),
        host=host or None,
        port=port,
        family=socket.AF_INET6 if ":" in host else socket.AF_UNSPEC,
        backlog=128,
        reuse_port=reuse_port or None,
    )
    return listener
