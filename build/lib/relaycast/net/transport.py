"""The transport of one peer: ICE-lite state, DTLS association and SRTP contexts.

It owns no socket: it sends through the shared :class:`UdpMux` and is fed by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from relaycast.net.dtls import DtlsCertificate, DtlsEndpoint, SrtpKeys
from relaycast.net.ice_lite import IceLite, random_ice_string
from relaycast.net.srtp import SrtpContext, SrtpError
from relaycast.net.udp_mux import Address, UdpMux

log = logging.getLogger(__name__)


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
        on_rtp: Callable[[bytes], None],
        on_rtcp: Callable[[bytes], None],
        on_connected: Callable[[], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self.mux = mux
        self._ice = ice
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_connected = on_connected
        self._on_closed = on_closed
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)
        self._old_credentials: tuple[str, str] | None = None
        ice.register(self.local_ufrag, self)
        self.addr: Address | None = None
        self._validated: set[Address] = set()
        self.created = time.monotonic()
        self.last_consent: float | None = None
        self.srtp: SrtpContext | None = None
        self.closed = False
        self.close_reason = ""
        self.rtp_in = 0
        self.srtp_errors = 0
        self._timer: asyncio.TimerHandle | None = None
        self.dtls = DtlsEndpoint(
            certificate,
            remote_fingerprints,
            is_client=dtls_client,
            send=self._send_raw,
            on_connected=self._dtls_connected,
            on_closed=self.close,
        )

    # -- ICE ------------------------------------------------------------------------------------

    def password_for(self, ufrag: str) -> str | None:
        if ufrag == self.local_ufrag:
            return self.local_pwd
        if self._old_credentials and ufrag == self._old_credentials[0]:
            return self._old_credentials[1]
        return None

    def on_binding(self, addr: Address, ufrag: str, use_candidate: bool) -> None:
        """A valid Binding request arrived from ``addr`` (RFC 8445 §7.3.1.4-5)."""
        if self.closed:
            return
        self.last_consent = time.monotonic()
        if ufrag == self.local_ufrag and self._old_credentials is not None:
            # the peer moved to the restarted credentials: forget the old ones
            self._ice.unregister(self._old_credentials[0], self)
            self._old_credentials = None
        if addr not in self._validated:
            log.debug("ice: %s validated after %.3f s", addr, time.monotonic() - self.created)
            self._validated.add(addr)
            self.mux.bind(addr, self)
        if self.addr is None or (use_candidate and addr != self.addr):
            self.addr = addr
        if self.dtls.is_client and not self.dtls.connected:
            self.dtls.start()
            self._arm_timer()

    def restart_ice(self) -> tuple[str, str]:
        """New local credentials (RFC 8445 §9); the old ones keep working until the peer moves."""
        if self._old_credentials is not None:
            self._ice.unregister(self._old_credentials[0], self)
        self._old_credentials = (self.local_ufrag, self.local_pwd)
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)
        self._ice.register(self.local_ufrag, self)
        return self.local_ufrag, self.local_pwd

    # -- DTLS -----------------------------------------------------------------------------------

    def receive_dtls(self, data: bytes, addr: Address) -> None:
        # Every address the mux routes here passed a STUN check; answer where the peer speaks
        # from (a controlling agent may nominate another pair only later).
        if addr != self.addr:
            self.addr = addr
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
        self.srtp = SrtpContext(keys)
        log.debug(
            "dtls connected (%s) with %s after %.3f s",
            keys.profile,
            self.addr,
            time.monotonic() - self.created,
        )
        self._on_connected()

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

    # -- SRTP -----------------------------------------------------------------------------------

    def receive_srtp(self, data: bytes, addr: Address) -> None:
        srtp = self.srtp
        if srtp is None:
            return
        rtcp = _is_rtcp(data)
        try:
            plain = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
        except SrtpError:
            self.srtp_errors += 1
            return
        if addr != self.addr:  # authenticated media from another validated pair: follow it
            self.addr = addr
        if rtcp:
            self._on_rtcp(plain)
        else:
            self.rtp_in += 1
            self._on_rtp(plain)

    def send_rtp(self, packet: bytes) -> None:
        if self.srtp is not None and self.addr is not None:
            self.mux.sendto(self.srtp.protect(packet), self.addr)

    def send_rtcp(self, packet: bytes) -> None:
        if self.srtp is not None and self.addr is not None:
            self.mux.sendto(self.srtp.protect_rtcp(packet), self.addr)

    def _send_raw(self, data: bytes) -> None:
        if self.addr is not None:
            self.mux.sendto(data, self.addr)

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
        self.srtp = None
        self._on_closed(reason)
