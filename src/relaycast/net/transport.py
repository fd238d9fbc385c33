"""The transport of one peer: ICE-lite state, DTLS association, SRTP contexts and its sink.

It owns no socket: the shared :class:`UdpMux` feeds it, and what it sends goes out through the
mux (STUN, DTLS) or through the :class:`MediaSink` it binds once DTLS is up (SRTP).

**Where media goes** (the send address) moves only on fresh authenticated traffic from an
address this session validated with STUN (RFC 8445 §7.3.1.5, RFC 7675 §5.1, RFC 3711 §3.3.2):

* while connecting, a Binding request whose MESSAGE-INTEGRITY covers USE-CANDIDATE, in a
  transaction not seen before (a replayed request is answered at most, never acted on);
* the DTLS flight that completes the handshake (it proves the fingerprint's key);
* once connected, SRTP/SRTCP that authenticates and passes libsrtp's replay protection, from
  an address that then answers a Binding request of ours (RFC 7675 §5.1: consent is the
  peer's answer at that address). The peer holds its own SRTP keys, so without that check it
  could forge its source address and aim its own media at a third party.

Unauthenticated bytes never move it: a DTLS record only decides where DTLS replies go. An
address another live session owns is never taken over (:meth:`UdpMux.bind`), and a session
validates at most :data:`MAX_ADDRESSES` addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable

from relaycast.media.stats import StreamCounters
from relaycast.net import stun
from relaycast.net.dtls import DtlsCertificate, DtlsEndpoint, SrtpKeys, valid_dtls_records
from relaycast.net.ice_lite import BindingVerdict, IceLite, random_ice_string
from relaycast.net.sink import MediaSink
from relaycast.net.srtp import SrtpContext, SrtpError
from relaycast.net.udp_mux import Address, UdpMux

log = logging.getLogger(__name__)

MAX_ADDRESSES = 8  # candidate pairs one session may validate (a browser uses 1-4)
ADDRESS_HOLD_US = 2_000_000  # a session holds its media address while heard from this recently
PROBE_INTERVAL = 1.0  # seconds between our Binding requests to one candidate media address
SEEN_TRANSACTIONS = 64  # Binding transaction ids remembered to tell replays from new checks


def _is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192..223 sit where RTP has marker + payload type."""
    return len(data) > 1 and 191 < data[1] < 224


class PeerTransport:
    """ICE-lite + DTLS + SRTP for one WHIP or WHEP session."""

    def __init__(
        self,
        *,
        mux: UdpMux,
        ice: IceLite,
        certificate: DtlsCertificate,
        remote_fingerprints: list[tuple[str, str]],
        dtls_client: bool,
        counters: StreamCounters,
        on_rtp: Callable[[bytes, int], None],
        on_rtcp: Callable[[bytes], None],
        on_connected: Callable[[MediaSink], None],
        on_closed: Callable[[str], None],
        remote_credentials: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        self.mux = mux
        #: the peer's ICE ufrag and pwd (they change with an ICE restart)
        self._remote_credentials = remote_credentials
        self._probe: tuple[bytes, Address, float] | None = None  # (transaction, where, when)
        #: once connected, read this peer's datagrams from a socket of its own (publishers:
        #: a flood on the shared socket must not cost the stream its packets, UdpMux.dedicate)
        self.wants_own_socket = False
        self._own_socket: socket.socket | None = None
        self._ice = ice
        self.counters = counters
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_connected = on_connected
        self._on_closed = on_closed
        self.local_ufrag = ice.new_ufrag()
        self.local_pwd = random_ice_string(24)
        self._old_credentials: tuple[str, str] | None = None
        ice.register(self.local_ufrag, self)
        #: where media and RTCP go; moves only on fresh authenticated traffic (module docstring)
        self.addr: Address | None = None
        self._dtls_addr: Address | None = None  # where DTLS replies go
        self._validated: set[Address] = set()
        self._transactions: OrderedDict[bytes, Address] = OrderedDict()
        self.created = time.monotonic()
        self.last_consent: float | None = None
        #: when authenticated traffic last came from ``addr`` (µs, CLOCK_REALTIME)
        self.last_heard_us = 0
        self.srtp: SrtpContext | None = None
        self.sink: MediaSink | None = None
        self.closed = False
        self.close_reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self.dtls = DtlsEndpoint(
            certificate,
            remote_fingerprints,
            is_client=dtls_client,
            send=self._send_dtls,
            on_connected=self._dtls_connected,
            on_closed=self.close,
        )

    @property
    def validated(self) -> frozenset[Address]:
        return frozenset(self._validated)

    # -- ICE ------------------------------------------------------------------------------------

    def password_for(self, ufrag: str) -> str | None:
        if ufrag == self.local_ufrag:
            return self.local_pwd
        if self._old_credentials and ufrag == self._old_credentials[0]:
            return self._old_credentials[1]
        return None

    def check_binding(self, addr: Address, transaction_id: bytes) -> BindingVerdict:
        """Classify an authenticated Binding request before it is answered.

        A transaction seen before is a retransmission when it comes from the same address
        (answer it again, RFC 8489 §6.3.1), else a replay (drop it). A new address must be free
        (not owned by another live session) and within :data:`MAX_ADDRESSES`.
        """
        if self.closed:
            return BindingVerdict.REFUSE
        seen = self._transactions.get(transaction_id)
        if seen is not None:
            if seen == addr:
                return BindingVerdict.RETRANSMIT
            self.mux.counters.stun_replayed += 1
            return BindingVerdict.REFUSE
        if addr not in self._validated:
            if len(self._validated) >= MAX_ADDRESSES or not self.mux.bind(addr, self):
                return BindingVerdict.REFUSE
            log.debug("ice: %s validated after %.3f s", addr, time.monotonic() - self.created)
            self._validated.add(addr)
        self._transactions[transaction_id] = addr
        if len(self._transactions) > SEEN_TRANSACTIONS:
            self._transactions.popitem(last=False)
        return BindingVerdict.FRESH

    def holds(self, addr: Address) -> bool:
        """Whether ``addr`` is this live session's media address, heard from just now: then no
        other session may take it over (a NAT or OS reuses the port of a vanished peer only)."""
        if self.closed or addr != self.addr:
            return False
        return time.time_ns() // 1000 - self.last_heard_us < ADDRESS_HOLD_US

    def release(self, addr: Address) -> None:
        """Another session validated ``addr`` after we stopped hearing from it there: a NAT or
        OS gave our peer's port to someone else, so a session whose media went there is over."""
        self._validated.discard(addr)
        if addr == self.addr:
            self.close("its address was taken over by a new session")

    def path_closed(self, addr: Address) -> None:
        """The ICE-TCP connection named ``addr`` closed (the mux has unbound it). The media
        path gone ends a connected session; one still connecting waits for another path."""
        self._validated.discard(addr)
        if self._dtls_addr == addr:
            self._dtls_addr = None
        if addr != self.addr:
            return
        if self.sink is None:
            self.addr = None
        else:
            self.close("its ICE-TCP connection closed")

    def on_binding(self, addr: Address, ufrag: str, use_candidate: bool) -> None:
        """A fresh, answered Binding request from validated ``addr`` (RFC 8445 §7.3.1.4-5)."""
        if self.closed:
            return
        self.last_consent = time.monotonic()
        if ufrag == self.local_ufrag and self._old_credentials is not None:
            # the peer moved to the restarted credentials: forget the old ones
            self._ice.unregister(self._old_credentials[0], self)
            self._old_credentials = None
        # A nomination picks the pair while connecting. Once DTLS is up, only SRTP/SRTCP moves
        # the media (libsrtp's replay window is exact; a transaction-id memory is not: a
        # capture older than SEEN_TRANSACTIONS checks could otherwise be replayed from anywhere).
        if self.addr is None or (use_candidate and addr != self.addr and not self.dtls.connected):
            self._move(addr)
        if addr == self.addr:
            self.last_heard_us = time.time_ns() // 1000
        if self.dtls.is_client and not self.dtls.connected:
            if self._dtls_addr is None:
                self._dtls_addr = addr
            self.dtls.start()
            self._arm_timer()

    def restart_ice(self) -> tuple[str, str]:
        """New local credentials (RFC 8445 §9); the old ones keep working until the peer moves."""
        if self._old_credentials is not None:
            self._ice.unregister(self._old_credentials[0], self)
        self._old_credentials = (self.local_ufrag, self.local_pwd)
        self.local_ufrag = self._ice.new_ufrag()
        self.local_pwd = random_ice_string(24)
        self._ice.register(self.local_ufrag, self)
        return self.local_ufrag, self.local_pwd

    def _move(self, addr: Address) -> None:
        if addr != self.addr:
            log.debug("media for %s now goes to %s", self.local_ufrag, addr)
        self.addr = addr
        if self.sink is not None:
            self.sink.route(self.mux.sender_for(addr), addr)  # UDP or an ICE-TCP connection
            if self.wants_own_socket:
                self._dedicate()

    def _dedicate(self) -> None:
        """Keep the peer's own socket connected to its current address."""
        own, addr = self._own_socket, self.addr
        if own is not None:
            with contextlib.suppress(OSError):
                if own.getpeername()[:2] == addr:
                    return
            self.mux.release(own)
            self._own_socket = None
        if addr is not None and not self.closed:
            self._own_socket = self.mux.dedicate(addr)

    # -- DTLS -----------------------------------------------------------------------------------

    def receive_dtls(self, data: bytes, addr: Address) -> None:
        """A DTLS datagram from a validated address: malformed records are dropped, not fatal."""
        if not valid_dtls_records(data):
            self.mux.counters.dtls_bad_records += 1
            return
        # Answer the handshake where the peer speaks from (a controlling agent may nominate
        # the pair only later); this moves no media.
        self._dtls_addr = addr
        if not self.dtls.connected:
            log.debug(
                "dtls: %d bytes from %s after %.3f s",
                len(data),
                addr,
                time.monotonic() - self.created,
            )
        self.dtls.receive(data)
        self._arm_timer()

    def _dtls_connected(self, keys: SrtpKeys) -> None:
        # The flight that completed the handshake came from _dtls_addr: authenticated traffic.
        if self._dtls_addr is not None:
            self._move(self._dtls_addr)
        self.last_heard_us = time.time_ns() // 1000
        srtp = self.srtp = SrtpContext(keys)
        assert self.addr is not None
        self.sink = MediaSink(
            protect=srtp.protect,
            protect_rtcp=srtp.protect_rtcp,
            sendto=self.mux.sender_for(self.addr),  # a TCP path's has no native handles
            addr=self.addr,
            stream=self.counters,
            server=self.mux.counters,
            srtp=srtp,
        )
        if self.wants_own_socket:
            self._dedicate()
        log.debug(
            "dtls connected (%s) with %s after %.3f s",
            keys.profile,
            self.addr,
            time.monotonic() - self.created,
        )
        self._on_connected(self.sink)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.dtls.timeout()
        if delay is not None and not self.closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(delay, 0.01), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.dtls.handle_timeout()
        self._arm_timer()

    def _send_dtls(self, data: bytes) -> None:
        addr = self._dtls_addr or self.addr
        if addr is not None:
            self.mux.sendto(data, addr)

    # -- SRTP -----------------------------------------------------------------------------------

    def receive_srtp(self, data: bytes, addr: Address, arrival_us: int) -> None:
        srtp = self.srtp
        if srtp is None:
            self.counters.bad_packets += 1
            return
        rtcp = _is_rtcp(data)
        try:
            plain = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
        except SrtpError:  # authentication or replay check failed (RFC 3711 §3.3)
            self.counters.srtp_auth_failures += 1
            return
        if not self.dtls.retired:  # the peer is past its handshake: OpenSSL's state can go
            self.dtls.retire()
        if addr == self.addr:
            self.last_heard_us = arrival_us
        else:  # authenticated, fresh media from another validated pair: is the peer there?
            self._probe_address(addr)
        if rtcp:
            self._on_rtcp(plain)
        else:
            self._on_rtp(plain, arrival_us)

    def send_rtcp(self, packet: bytes) -> None:
        if self.sink is not None:
            self.sink.send_rtcp(packet)

    # -- return routability (RFC 7675 §5.1) -----------------------------------------------------

    def _probe_address(self, addr: Address) -> None:
        """Ask ``addr`` for a Binding response before media goes there (at most once a
        second): only the peer, answering with its ice-pwd at that address, can give one."""
        now = time.monotonic()
        probe = self._probe
        if probe is not None and now - probe[2] < PROBE_INTERVAL:
            return
        if self._remote_credentials is None:
            return
        remote_ufrag, remote_pwd = self._remote_credentials()
        if not remote_ufrag or not remote_pwd:
            return
        if probe is not None:
            self._ice.forget_probe(probe[0])
        transaction = os.urandom(12)
        request = stun.StunMessage(
            stun.BINDING,
            stun.REQUEST,
            transaction,
            [
                (stun.USERNAME, f"{remote_ufrag}:{self.local_ufrag}".encode()),
                (stun.PRIORITY, struct.pack("!I", 0x7E0000FF)),
                (stun.ICE_CONTROLLED, os.urandom(8)),  # a lite agent is controlled (§6.1.1)
            ],
        )
        self._probe = (transaction, addr, now)
        self._ice.expect_probe(transaction, self)
        self.mux.sendto(request.encode(remote_pwd.encode()), addr)

    def on_probe_response(self, data: bytes, addr: Address, transaction: bytes) -> None:
        """A Binding success response: if it answers our probe from that address, signed with
        the peer's ice-pwd (RFC 8489 §14.5), media moves there."""
        probe = self._probe
        if self.closed or probe is None or self._remote_credentials is None:
            return
        if probe[0] != transaction or probe[1] != addr:
            return
        if not stun.check_integrity(data, self._remote_credentials()[1].encode()):
            self.mux.counters.stun_rejected += 1
            return
        self._probe = None
        self._ice.forget_probe(transaction)
        self._move(addr)
        self.last_heard_us = time.time_ns() // 1000

    # -- lifecycle ------------------------------------------------------------------------------

    def consent_expired(self, now: float, timeout: float) -> bool:
        """RFC 7675 §5.1: no valid Binding request for ``timeout`` seconds (or never)."""
        last = self.last_consent if self.last_consent is not None else self.created
        return now - last > timeout

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.dtls.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ice.unregister(self.local_ufrag, self)
        if self._old_credentials is not None:
            self._ice.unregister(self._old_credentials[0], self)
        for addr in self._validated:
            self.mux.unbind(addr, self)
        self._validated.clear()
        self._transactions.clear()
        if self._probe is not None:
            self._ice.forget_probe(self._probe[0])
            self._probe = None
        self.srtp = None
        if self._own_socket is not None:
            self.mux.release(self._own_socket)
            self._own_socket = None
        if self.sink is not None:
            self.sink.fold()
        self._on_closed(reason)
