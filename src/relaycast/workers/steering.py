"""Steering: whatever lands on a worker that does not own it goes to the one that does.

* **HTTP.** The kernel spreads connections over the workers (``SO_REUSEPORT``). A request of
  a session (``/whip|whep/{stream}/{session}``: PATCH, DELETE, and any path under it such as
  the WHEP layer extension's ``/layer``) whose id names another worker
  is proxied to that worker's internal site, a unix socket in the run directory, with the
  run's secret and the client's address; so is a WHIP POST for a stream whose publisher is on
  another worker (it decides 409 or replacement as one process would). The owner takes the
  client address from the proxied request, so per-address limits count the real client.
* **UDP.** Our ufrags start with the owner's index. A Binding request naming another worker's
  ufrag is handed over (``S``: source address + datagram) through the worker links; the owner
  checks it as if it had come in itself, binds the address (which gives it a socket connected
  to that client: :attr:`UdpMux.pin_addresses`) and answers from its own socket on the same
  port. Everything the client sends after that reaches the owner directly: Linux delivers a
  datagram to the connected socket whose 4-tuple it matches before the port's reuseport group.
* **ICE-TCP.** The first frame of a connection is a Binding request; when it names another
  worker's ufrag, the connection's file descriptor goes to the owner (``T``, SCM_RIGHTS) with
  that frame, and this worker forgets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from relaycast.http.problems import ProblemError
from relaycast.net.ice_tcp import IceTcpConnection, frame
from relaycast.net.udp_mux import Address, is_tcp, wire_address
from relaycast.workers.plan import (
    INTERNAL_CLIENT,
    INTERNAL_HEADER,
    WorkerPlan,
    session_owner,
    ufrag_owner,
)

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.workers.links import PeerLinks
    from relaycast.workers.relay import Relay

log = logging.getLogger(__name__)

STUN = b"S"
TCP = b"T"
_ADDR = struct.Struct("!B")  # length of the address text that follows
PROXY_TIMEOUT = 10.0
#: request headers not passed on by the proxy (hop-by-hop, or set again by aiohttp)
_SKIP_REQUEST = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Host", "TE",
        "Upgrade", "Proxy-Connection", INTERNAL_HEADER, INTERNAL_CLIENT,
    )
)  # fmt: skip
_SKIP_RESPONSE = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
              "Content-Encoding", "Date", "Server")
)  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _encode_addr(addr: Address) -> bytes:
    text = f"{addr[0]}|{addr[1]}".encode()
    return _ADDR.pack(len(text)) + text


def _decode_addr(data: bytes, pos: int) -> tuple[Address, int]:
    (length,) = _ADDR.unpack_from(data, pos)
    pos += _ADDR.size
    host, _, port = data[pos : pos + length].decode().rpartition("|")
    return (host, int(port)), pos + length


class Steering:
    """One worker's steering: the HTTP proxy and the STUN / ICE-TCP hand-over."""

    def __init__(
        self, plan: WorkerPlan, server: MediaServer, links: PeerLinks, relay: Relay
    ) -> None:
        self.plan = plan
        self.server = server
        self.links = links
        self.relay = relay
        self._clients: dict[int, aiohttp.ClientSession] = {}
        self.stun_handed = 0
        self.tcp_handed = 0
        self.proxied = 0

    # -- internal HTTP --------------------------------------------------------------------------

    def client(self, index: int) -> aiohttp.ClientSession:
        """An HTTP client for worker ``index``'s internal site (kept open)."""
        session = self._clients.get(index)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=str(self.plan.http_path(index)))
            session = self._clients[index] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT)
            )
        return session

    def internal_headers(self) -> dict[str, str]:
        return {INTERNAL_HEADER: self.plan.secret}

    async def close(self) -> None:
        for session in self._clients.values():
            await session.close()
        self._clients.clear()

    def is_internal(self, request: web.Request) -> bool:
        """The request carries the run's secret (a proxied or aggregating request)."""
        given = request.headers.get(INTERNAL_HEADER)
        return given is not None and hmac.compare_digest(given.encode(), self.plan.secret.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if INTERNAL_HEADER in request.headers:
            if not self.is_internal(request):
                raise ProblemError(403, "Forbidden", "not a request of this server's workers")
            client = request.headers.get(INTERNAL_CLIENT)
            if client:
                request = request.clone(remote=client)
            return await handler(request)
        if request.path.startswith("/internal/") or not isinstance(
            request.transport and request.transport.get_extra_info("peername"), tuple
        ):
            # the internal site, or its routes, without the secret
            raise ProblemError(403, "Forbidden", "internal to relaycast's workers")
        owner = self.owner(request)
        if owner is not None and owner != self.plan.index:
            return await self.proxy(owner, request)
        return await handler(request)

    def owner(self, request: web.Request) -> int | None:
        """The worker that must answer ``request``, when it is known to be another one."""
        parts = request.path.split("/")
        if len(parts) >= 4 and parts[1] in ("whip", "whep") and request.method != "OPTIONS":
            # the session URL and anything under it (the WHEP layer extension's /layer)
            return session_owner(parts[3], self.plan.count)
        if len(parts) == 3 and parts[1] == "whip" and request.method == "POST":
            return self.relay.publishers.get(parts[2])
        return None

    async def proxy(self, owner: int, request: web.Request) -> web.StreamResponse:
        """Pass ``request`` to worker ``owner`` and its answer back, as they are."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
        headers.update(self.internal_headers())
        headers[INTERNAL_CLIENT] = request.remote or ""
        body = await request.read()
        self.proxied += 1
        try:
            async with self.client(owner).request(
                request.method,
                f"http://worker{owner}{request.path_qs}",
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                response = web.Response(status=answer.status, body=payload)
                for name, value in answer.headers.items():
                    if name.lower() not in _SKIP_RESPONSE:
                        response.headers.add(name, value)
                return response
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("worker %d: proxy to worker %d failed: %s", self.plan.index, owner, exc)
            if request.method == "POST":
                raise ProblemError(
                    503,
                    "Worker restarting",
                    "the worker holding this stream's publisher is restarting; try again",
                    headers={"Retry-After": "2"},
                ) from exc
            raise ProblemError(
                404, "Unknown session", "no such session: its worker restarted, start a new one"
            ) from exc

    # -- STUN and ICE-TCP -----------------------------------------------------------------------

    def foreign(self, ufrag: str, data: bytes, addr: Address) -> bool:
        """``IceLite.foreign``: hand a Binding request for another worker's ufrag over."""
        owner = ufrag_owner(ufrag, self.plan.count)
        if owner is None or owner == self.plan.index:
            return False
        if is_tcp(addr):
            return self._hand_tcp(owner, data, addr)
        if self.links.send(owner, STUN + _encode_addr(addr) + data):
            self.stun_handed += 1
        return True  # not ours either way (a dead owner's sessions are gone)

    def _hand_tcp(self, owner: int, data: bytes, key: Address) -> bool:
        mux = self.server.mux
        conn = mux.tcp_paths.get(key)
        transport = conn.transport if conn is not None else None
        sock = transport.get_extra_info("socket") if transport is not None else None
        if conn is None or transport is None or sock is None or conn.authenticated:
            return False
        pending = conn.reader.take_pending()
        message = TCP + _encode_addr(wire_address(key)) + frame(data) + pending
        if not self.links.send_fd(owner, message, sock.fileno()):
            return False
        self.tcp_handed += 1
        # our copy of the descriptor goes; the connection lives on in the owner
        conn.closed = True
        listener = conn.listener
        listener.forget(conn)
        transport.abort()
        return True

    def on_message(self, sender: int, message: bytes, fds: list[int]) -> None:
        kind = message[:1]
        if kind == STUN:
            addr, pos = _decode_addr(message, 1)
            self.server.ice.on_stun(message[pos:], addr)
        elif kind == TCP:
            addr, pos = _decode_addr(message, 1)
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                return
            asyncio.get_running_loop().create_task(self._adopt_tcp(fds[0], message[pos:]))
        else:
            for fd in fds:
                os.close(fd)

    async def _adopt_tcp(self, fd: int, data: bytes) -> None:
        """An ICE-TCP connection another worker accepted: ours now, its bytes fed again."""
        listener = self.server.ice_tcp
        sock = socket.socket(fileno=fd)
        if listener is None:
            sock.close()
            return
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            _transport, protocol = await loop.connect_accepted_socket(
                lambda: IceTcpConnection(listener), sock
            )
        except OSError as exc:
            log.debug("worker %d: adopting an ICE-TCP connection failed: %s", self.plan.index, exc)
            with contextlib.suppress(OSError):
                sock.close()
            return
        if not protocol.closed:
            protocol.data_received(data)


def describe_steering(steering: Steering) -> dict[str, int]:
    return {
        "stun_handed_over": steering.stun_handed,
        "tcp_handed_over": steering.tcp_handed,
        "http_proxied": steering.proxied,
    }


def dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"))
