"""ICE-lite (RFC 8445 §2.5, §7.3): answer Binding requests; send none but consent probes.

A Binding request's USERNAME is ``<our ufrag>:<their ufrag>``; our ufrag names the session.
Requests must carry a valid MESSAGE-INTEGRITY keyed with our ice-pwd and, when present, a valid
FINGERPRINT; anything else is dropped without an answer (no reflection for unauthenticated
senders). A validated source address is then bound to the session in the UDP mux. The time of
the last valid request is the session's consent (RFC 7675): the server closes sessions whose
consent is older than 30 s. The only requests we send are probes of a connected session's new
media address (return routability, RFC 7675 §5.1, see ``net/transport.py``); their success
responses come back here and are matched by transaction id.
"""

from __future__ import annotations

import enum
import logging
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast.media.stats import ServerCounters
from relaycast.net import stun
from relaycast.net.udp_mux import wire_address

if TYPE_CHECKING:
    from relaycast.net.transport import PeerTransport
    from relaycast.net.udp_mux import Address, UdpMux

log = logging.getLogger(__name__)

ICE_CHARS = string.ascii_letters + string.digits + "+/"
_ICE_CHARS = ICE_CHARS
UFRAG_LENGTH = 8


def random_ice_string(length: int) -> str:
    """An ice-char string (RFC 8839 §5.4): ufrag >= 4 chars, pwd >= 22 chars."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


class BindingVerdict(enum.Enum):
    """What a transport makes of an authenticated Binding request."""

    FRESH = "fresh"  # a new transaction: answer it and let it validate / nominate
    RETRANSMIT = "retransmit"  # the same transaction from the same address: answer only
    REFUSE = "refuse"  # a replay from elsewhere, or an address another session owns: drop


class IceLite:
    """Routes STUN Binding requests to the transport whose local ufrag they name."""

    def __init__(self, counters: ServerCounters | None = None) -> None:
        self.by_ufrag: dict[str, PeerTransport] = {}
        #: our own Binding requests awaiting an answer (return routability), by transaction
        self.probes: dict[bytes, PeerTransport] = {}
        self.mux: UdpMux | None = None
        self.counters = counters if counters is not None else ServerCounters()
        #: first characters of every ufrag this server makes (a worker's index, workers/)
        self.ufrag_prefix = ""
        #: called with (our ufrag, request, source) for a request naming no session here; True
        #: when it took the request (it belongs to another worker: workers/steering.py)
        self.foreign: Callable[[str, bytes, Address], bool] | None = None

    def new_ufrag(self) -> str:
        """A fresh local ufrag: the prefix, then random ice-chars (8 in all)."""
        prefix = self.ufrag_prefix
        return prefix + random_ice_string(UFRAG_LENGTH - len(prefix))

    def register(self, ufrag: str, peer: PeerTransport) -> None:
        self.by_ufrag[ufrag] = peer

    def unregister(self, ufrag: str, peer: PeerTransport) -> None:
        if self.by_ufrag.get(ufrag) is peer:
            del self.by_ufrag[ufrag]

    def expect_probe(self, transaction: bytes, peer: PeerTransport) -> None:
        self.probes[transaction] = peer

    def forget_probe(self, transaction: bytes) -> None:
        self.probes.pop(transaction, None)

    def on_stun(self, data: bytes, addr: Address) -> None:
        counters = self.counters
        try:
            message = stun.StunMessage.parse(data)
        except ValueError:
            counters.stun_rejected += 1
            return
        if message.method != stun.BINDING:
            return
        if message.msg_class == stun.SUCCESS:  # the answer to one of our probes?
            prober = self.probes.get(message.transaction_id)
            if prober is not None:
                prober.on_probe_response(data, addr, message.transaction_id)
            return
        if message.msg_class != stun.REQUEST:
            return  # indications (keepalives) and error responses need nothing from us
        username = message.username
        if not username or ":" not in username:
            counters.stun_rejected += 1
            return
        local_ufrag = username.split(":", 1)[0]
        peer = self.by_ufrag.get(local_ufrag)
        if peer is None:
            if self.foreign is not None and self.foreign(local_ufrag, data, addr):
                return
            counters.stun_rejected += 1
            log.debug("stun from %s names unknown ufrag %r", addr, local_ufrag)
            return
        if message.get(stun.FINGERPRINT) is not None and not stun.check_fingerprint(data):
            counters.stun_rejected += 1
            return
        pwd = peer.password_for(local_ufrag)
        if pwd is None or not stun.check_integrity(data, pwd.encode()):
            counters.stun_rejected += 1
            log.debug("stun from %s failed message integrity", addr)
            return
        # Only what MESSAGE-INTEGRITY covers counts (RFC 8489 §14.5), USERNAME included.
        covered = message.integrity_covered()
        if covered.username != username:
            counters.stun_rejected += 1
            return
        verdict = peer.check_binding(addr, message.transaction_id)
        if verdict is BindingVerdict.REFUSE:
            return
        if self.mux is not None:
            answer = stun.binding_success(message, wire_address(addr), pwd.encode())
            self.mux.sendto(answer, addr)  # to a UDP address or onto an ICE-TCP connection
        if verdict is BindingVerdict.FRESH:
            peer.on_binding(addr, local_ufrag, covered.get(stun.USE_CANDIDATE) is not None)
