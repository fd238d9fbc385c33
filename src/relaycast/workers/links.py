"""Links between workers: one unix SOCK_SEQPACKET connection from each worker to each other.

Every worker listens on ``link-<index>.sock`` in the run directory (0700) and connects to every
peer's; it *sends* on the connections it made and *receives* on those it accepted, so a worker
that restarts simply connects again and is connected to. SEQPACKET keeps message boundaries,
is reliable, passes file descriptors (``SCM_RIGHTS``, ICE-TCP hand-over) and, unlike unix
datagram sockets, has no 10-message queue limit (``net.unix.max_dgram_qlen``): the sender's
buffer (4 MiB asked for) bounds what is in flight. Sends never block: a full buffer drops the
message and counts it (a relayed RTP packet is repaired by NACK, like a lost datagram).

The first byte of a message is its type; the first message on a connection is ``H`` with the
sender's index. Peer *down* is when the connection a peer made to us closes; peer *up* is when
ours to it connects.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

HELLO = b"H"
_HELLO = struct.Struct("!cH")
BUFFER_BYTES = 4 * 1024 * 1024
MAX_MESSAGE = 65536
READS_PER_WAKEUP = 256
RECONNECT_INTERVAL = 0.05
_FDS_SPACE = socket.CMSG_SPACE(4 * struct.calcsize("i"))

#: ``handler(sender index, message, received file descriptors)``
Handler = Callable[[int, bytes, list[int]], None]


def _seqpacket() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
    return sock


class PeerLinks:
    """The links of worker ``index`` to its ``count - 1`` peers."""

    def __init__(
        self,
        index: int,
        count: int,
        path_of: Callable[[int], Path],
        handler: Handler,
        on_up: Callable[[int], None],
        on_down: Callable[[int], None],
    ) -> None:
        self.index = index
        self.count = count
        self._path_of = path_of
        self._handler = handler
        self._on_up = on_up
        self._on_down = on_down
        self._out: dict[int, socket.socket] = {}
        self._in: dict[int, tuple[socket.socket, int | None]] = {}  # fd -> (sock, sender)
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.dropped = 0  # messages a full buffer refused
        self.sent = 0
        self.received = 0

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        path = self._path_of(self.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous life of this worker
        listener = _seqpacket()
        listener.bind(str(path))
        listener.listen(128)
        self._listener = listener
        loop.add_reader(listener.fileno(), self._accept)
        self._connect_missing()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        loop = self._loop
        for sock in [*self._out.values(), *(s for s, _ in self._in.values())]:
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._out.clear()
        self._in.clear()
        if self._listener is not None:
            if loop is not None:
                loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def up(self, peer: int) -> bool:
        return peer in self._out

    async def wait_connected(self, timeout: float) -> bool:
        """Until a link to every peer is up (a worker serves once it can steer), or timeout."""
        deadline = time.monotonic() + timeout
        while len(self._out) < self.count - 1:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- outbound -------------------------------------------------------------------------------

    def _connect_missing(self) -> None:
        self._retry = None
        missing = False
        for peer in range(self.count):
            if peer == self.index or peer in self._out:
                continue
            sock = _seqpacket()
            try:
                sock.connect(str(self._path_of(peer)))
                sock.send(_HELLO.pack(HELLO, self.index))
            except OSError:
                sock.close()
                missing = True
                continue
            self._out[peer] = sock
            assert self._loop is not None
            # nothing comes back on it; reading tells us when the peer closes it
            self._loop.add_reader(sock.fileno(), self._out_readable, peer, sock)
            log.debug("worker %d: link to worker %d up", self.index, peer)
            self._on_up(peer)
        if missing and self._loop is not None and self._listener is not None:
            self._retry = self._loop.call_later(RECONNECT_INTERVAL, self._connect_missing)

    def _out_readable(self, peer: int, sock: socket.socket) -> None:
        try:
            data = sock.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_out(peer, sock)

    def _drop_out(self, peer: int, sock: socket.socket) -> None:
        if self._out.get(peer) is not sock:
            return
        del self._out[peer]
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        if self._retry is None and self._loop is not None and self._listener is not None:
            self._retry = self._loop.call_later(RECONNECT_INTERVAL, self._connect_missing)

    def send(self, peer: int, message: bytes) -> bool:
        """Queue ``message`` for ``peer``; False (counted) when it could not be."""
        sock = self._out.get(peer)
        if sock is None:
            self.dropped += 1
            return False
        try:
            sock.send(message)
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError as exc:
            self.dropped += 1
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ECONNREFUSED):
                self._drop_out(peer, sock)
            return False
        self.sent += 1
        return True

    def send_fd(self, peer: int, message: bytes, fd: int) -> bool:
        """``message`` with a copy of file descriptor ``fd`` (SCM_RIGHTS)."""
        sock = self._out.get(peer)
        if sock is None:
            return False
        try:
            sock.sendmsg(
                [message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            )
        except OSError as exc:
            log.debug("worker %d: handing fd to %d failed: %s", self.index, peer, exc)
            return False
        self.sent += 1
        return True

    # -- inbound --------------------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("worker %d: accept failed: %s", self.index, exc)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
            self._in[sock.fileno()] = (sock, None)
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._readable, sock)

    def _readable(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        entry = self._in.get(fd)
        if entry is None:
            return
        sender = entry[1]
        for _ in range(READS_PER_WAKEUP):
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(MAX_MESSAGE, _FDS_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, ancillary = b"", []
            if not data:
                self._close_in(sock, sender)
                return
            fds: list[int] = []
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(value[: len(value) - len(value) % received.itemsize])
                    fds.extend(received)
            if sender is None:
                if data[:1] == HELLO and len(data) == _HELLO.size:
                    sender = _HELLO.unpack(data)[1]
                    if sender == self.index or sender >= self.count:
                        self._close_in(sock, None)
                        return
                    self._in[fd] = (sock, sender)
                else:
                    self._close_in(sock, None)
                for extra in fds:
                    os.close(extra)
                continue
            self.received += 1
            try:
                self._handler(sender, data, fds)
            except Exception:
                log.exception("worker %d: a message from worker %d failed", self.index, sender)
                for extra in fds:
                    with contextlib.suppress(OSError):
                        os.close(extra)

    def _close_in(self, sock: socket.socket, sender: int | None) -> None:
        fd = sock.fileno()
        self._in.pop(fd, None)
        if self._loop is not None:
            self._loop.remove_reader(fd)
        sock.close()
        if sender is not None:
            log.info("worker %d: worker %d went away", self.index, sender)
            out = self._out.get(sender)
            if out is not None:
                self._drop_out(sender, out)
            self._on_down(sender)
