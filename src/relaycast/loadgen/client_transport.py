"""A lightweight WebRTC client transport built from relaycast's own protocol stack: one UDP
socket per peer, full ICE as the controlling agent (RFC 8445 §7.2.5: Binding requests with
PRIORITY, ICE-CONTROLLING and USE-CANDIDATE, integrity keyed with the remote ice-pwd), answers
to the remote's checks (needed when the far end is a full ICE agent such as aiortc), consent
freshness every few seconds (RFC 7675 §5.1), DTLS 1.2 as client (``a=setup:active``, RFC 5763
§5) and SRTP/SRTCP (RFC 3711) whose authentication failures are counted, never ignored.

The socket is ``connect``-ed to the remote candidate, so receiving is one ``recv`` per datagram
in a drain loop driven by ``loop.add_reader`` (no per-datagram asyncio protocol call). Once SRTP
keys exist, ``on_srtp`` may take the socket over (the bench viewers' native receive path,
:mod:`relaycast.loadgen.receiver`): from then on this transport reads nothing itself and gets
the datagrams that are not SRTP through :meth:`ClientTransport.handle_datagram`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relaycast.net import stun
from relaycast.net.dtls import DtlsCertificate, DtlsEndpoint, SrtpKeys
from relaycast.net.ice_lite import random_ice_string
from relaycast.net.srtp import SrtpContext, SrtpError
from relaycast.sdp import SessionDescription, parse_sdp

CONSENT_INTERVAL = 5.0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; not exported by Python
_TIMESPEC = struct.Struct("@qq")
CHECK_RETRANSMIT = 0.05

VP8_PT = 96
H264_PT = 102
OPUS_PT = 111
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"


def srtp_kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """The SRTP key derivation function (RFC 3711 §4.3.1, AES-CM PRF; RFC 7714 §11 uses it
    with the 96-bit master salt, zero-padded to 112 bits) with key derivation rate 0."""
    x = bytearray(master_salt.ljust(14, b"\0"))
    x[7] ^= label
    enc = Cipher(algorithms.AES(master_key), modes.ECB()).encryptor()
    out = b"".join(enc.update(bytes(x) + i.to_bytes(2, "big")) for i in range((length + 15) // 16))
    return out[:length]


class GcmRtpReceiver:
    """The receive side of SRTP with AEAD_AES_128_GCM (RFC 7714 §8.1, §9.1, §11), on OpenSSL's
    AES-GCM through ``cryptography``: about half the per-packet cost of going through libsrtp's
    Python binding, which matters when one core stands in for hundreds of viewers. The rollover
    counter is estimated per SSRC as in RFC 3711 §3.3.1 / Appendix A. No replay list: duplicates
    are the caller's to count. Raises ``InvalidTag`` when authentication fails."""

    def __init__(self, remote_key: bytes) -> None:
        master_key, master_salt = remote_key[:16], remote_key[16:28]
        self._aead = AESGCM(srtp_kdf(master_key, master_salt, 0x00, 16))
        self._salt = int.from_bytes(srtp_kdf(master_key, master_salt, 0x02, 12), "big")
        self._state: dict[int, tuple[int, int]] = {}  # ssrc -> (roc, highest seq)

    def unprotect(self, data: bytes) -> bytes:
        b0 = data[0]
        hlen = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            hlen += 4 + 4 * ((data[hlen + 2] << 8) | data[hlen + 3])
        seq = (data[2] << 8) | data[3]
        ssrc = int.from_bytes(data[8:12], "big")
        state = self._state.get(ssrc)
        if state is None:
            roc, s_l = 0, seq
        else:
            roc, s_l = state
        v = roc
        if s_l < 0x8000:
            if seq - s_l > 0x8000 and roc > 0:
                v = roc - 1
        elif s_l - 0x8000 > seq:
            v = roc + 1
        iv = (((ssrc << 48) | ((v & 0xFFFFFFFF) << 16) | seq) ^ self._salt).to_bytes(12, "big")
        view = memoryview(data)
        payload = self._aead.decrypt(iv, view[hlen:], view[:hlen])
        if state is None or v > roc:
            self._state[ssrc] = (v, seq)
        elif v == roc and seq > s_l:
            self._state[ssrc] = (roc, seq)
        return data[:hlen] + payload


@dataclass(frozen=True)
class RemoteDescription:
    """What a client needs from the SDP answer: ICE credentials, fingerprints, the address to
    send checks to, and payload type -> kind for the sections the answer accepted."""

    ufrag: str
    pwd: str
    fingerprints: list[tuple[str, str]]
    address: tuple[str, int]
    payload_kinds: dict[int, str]


def _candidate_address(line: str) -> tuple[str, int] | None:
    """``candidate:<foundation> <component> <transport> <priority> <ip> <port> typ <type>``
    (RFC 8839 §5.1); returns (ip, port) for a UDP IPv4 candidate."""
    parts = line.removeprefix("a=").removeprefix("candidate:").split()
    if len(parts) < 8 or parts[2].lower() != "udp" or ":" in parts[4]:
        return None
    return parts[4], int(parts[5])


def parse_answer(text: str) -> RemoteDescription:
    """Extract the transport parameters from an SDP answer. Raises ValueError when the answer
    lacks a usable candidate or credentials."""
    sdp: SessionDescription = parse_sdp(text)
    accepted = [m for m in sdp.media if m.port != 0]
    if not accepted:
        raise ValueError("the answer rejected every media section")
    first = accepted[0]
    address = None
    for m in accepted:
        for cand in m.candidates:
            address = _candidate_address(cand)
            if address is not None:
                break
        if address is not None:
            break
    if address is None:
        raise ValueError("the answer has no UDP IPv4 candidate")
    kinds = {c.payload_type: m.kind for m in accepted for c in m.codecs}
    return RemoteDescription(
        ufrag=first.ice_ufrag or "",
        pwd=first.ice_pwd or "",
        fingerprints=list(first.fingerprints),
        address=address,
        payload_kinds=kinds,
    )


def build_offer(
    *,
    ufrag: str,
    pwd: str,
    fingerprint: str,
    local: tuple[str, int],
    direction: str,
    video_codec: str,
    ssrcs: dict[str, int] | None = None,
    cname: str = "relaycast-bench",
) -> str:
    """A BUNDLEd audio + video offer (JSEP RFC 9429 §5.2) with rtcp-mux, ``a=setup:active``, our
    host candidate and, for a sender, ``a=ssrc`` lines (RFC 5576)."""
    if video_codec == "vp8":
        video = [f"a=rtpmap:{VP8_PT} VP8/90000"]
        vpt = VP8_PT
    elif video_codec == "h264":
        video = [f"a=rtpmap:{H264_PT} H264/90000", f"a=fmtp:{H264_PT} {H264_FMTP}"]
        vpt = H264_PT
    else:
        raise ValueError(f"video codec must be vp8 or h264, not {video_codec!r}")
    video += [f"a=rtcp-fb:{vpt} nack", f"a=rtcp-fb:{vpt} nack pli"]
    audio = [f"a=rtpmap:{OPUS_PT} opus/48000/2", f"a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1"]
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
    ]
    ip, port = local
    for mid, kind, pt, body in (("0", "video", vpt, video), ("1", "audio", OPUS_PT, audio)):
        lines += [
            f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}",
            f"c=IN IP4 {ip}",
            f"a=mid:{mid}",
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:active",
            f"a={direction}",
            "a=rtcp-mux",
            "a=rtcp-rsize",
            *body,
        ]
        if ssrcs and kind in ssrcs:
            ssrc = ssrcs[kind]
            lines += [
                f"a=msid:bench bench-{kind}",
                f"a=ssrc:{ssrc} cname:{cname}",
                f"a=ssrc:{ssrc} msid:bench bench-{kind}",
            ]
        lines += [f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host", "a=end-of-candidates"]
    return "\r\n".join(lines) + "\r\n"


class ClientTransport:
    """ICE (controlling) + DTLS client + SRTP over one connected UDP socket.

    ``on_rtp(plain, arrival_ns)`` gets every authenticated RTP packet with the kernel's receive
    time (``SO_TIMESTAMPNS``, CLOCK_REALTIME ns), so a busy load process does not inflate the
    measured delay; ``on_rtcp(plain)`` every
    authenticated RTCP compound packet. Counters: ``auth_failures`` (SRTP/SRTCP authentication
    failed), ``replays`` (libsrtp replay check), ``bytes_in``.
    """

    def __init__(
        self,
        certificate: DtlsCertificate,
        *,
        on_rtp: Callable[[bytes, int], None],
        on_rtcp: Callable[[bytes], None] | None = None,
        rcvbuf: int = 1 << 19,
        fast_gcm: bool = True,
        on_srtp: Callable[[], bool] | None = None,
    ) -> None:
        self.certificate = certificate
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)
        self._tiebreaker = secrets.randbits(64).to_bytes(8, "big")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # capped by the kernel, not fatal
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        with contextlib.suppress(OSError):  # kernel receive timestamps (socket(7))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.local: tuple[str, int] = sock.getsockname()[:2]
        self.remote: RemoteDescription | None = None
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpContext | None = None
        self.ice_connected = asyncio.Event()
        self.connected = asyncio.Event()
        self.failed: str | None = None
        self.auth_failures = 0
        self.replays = 0
        self.bytes_in = 0
        self.send_errors = 0
        self.closed = False
        self.fast_gcm = fast_gcm
        #: called once SRTP keys exist; True: the caller reads the socket from now on
        self.on_srtp = on_srtp
        #: called first by close() (a native receiver must forget the socket before it closes)
        self.on_close: Callable[[], None] | None = None
        self.handed_over = False
        self._rtp_unprotect: Callable[[bytes], bytes] | None = None
        self._check_tid: bytes | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, remote: RemoteDescription) -> None:
        """Connect the socket to the remote candidate and begin ICE checks."""
        self.remote = remote
        self._loop = asyncio.get_running_loop()
        self.sock.connect(remote.address)
        self._loop.add_reader(self.sock.fileno(), self._readable)
        self.dtls = DtlsEndpoint(
            self.certificate,
            remote.fingerprints,
            is_client=True,
            send=self.send,
            on_connected=self._dtls_connected,
            on_closed=self._dtls_closed,
        )
        self._send_check()
        self._timers.append(self._loop.call_later(CHECK_RETRANSMIT, self._retransmit_check, 1))

    async def wait_connected(self, timeout: float) -> None:
        """Wait for SRTP keys; raises TimeoutError or RuntimeError when the handshake failed."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        if self.failed:
            raise RuntimeError(self.failed)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_close is not None:
            self.on_close()
        for t in self._timers:
            t.cancel()
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
        if self.dtls is not None and self.dtls.connected:
            self.dtls.close()
        if self._loop is not None and not self.handed_over:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.srtp = None

    # -- sending ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            self.send_errors += 1

    def send_rtp(self, plain: bytes) -> None:
        if self.srtp is not None:
            try:
                self.send(self.srtp.protect(plain))
            except SrtpError:  # e.g. a retransmission older than libsrtp's replay window
                self.send_errors += 1

    def send_rtcp(self, plain: bytes) -> None:
        if self.srtp is not None:
            try:
                self.send(self.srtp.protect_rtcp(plain))
            except SrtpError:
                self.send_errors += 1

    # -- ICE ----------------------------------------------------------------------------------

    def _send_check(self) -> None:
        """A Binding request (RFC 8445 §7.2.4, §7.2.5.3): nominating, as controlling agent."""
        remote = self.remote
        if remote is None or self.closed:
            return
        tid = secrets.token_bytes(12)
        self._check_tid = tid
        priority = (110 << 24) | (65535 << 8) | 255  # prflx type preference, component 1
        msg = stun.StunMessage(
            stun.BINDING,
            stun.REQUEST,
            tid,
            [
                (stun.USERNAME, f"{remote.ufrag}:{self.local_ufrag}".encode()),
                (stun.PRIORITY, struct.pack("!I", priority)),
                (stun.ICE_CONTROLLING, self._tiebreaker),
                (stun.USE_CANDIDATE, b""),
            ],
        )
        self.send(msg.encode(remote.pwd.encode(), fingerprint=True))

    def _retransmit_check(self, attempt: int) -> None:
        if self.closed:
            return
        if self.ice_connected.is_set():
            delay = CONSENT_INTERVAL * random.uniform(0.8, 1.0)
            self._send_check()
            self._timers = [self._loop.call_later(delay, self._retransmit_check, 0)]  # type: ignore[union-attr]
            return
        if attempt > 200:
            self._fail("ICE: no Binding success response within 10 s")
            return
        self._send_check()
        self._timers = [
            self._loop.call_later(CHECK_RETRANSMIT, self._retransmit_check, attempt + 1)  # type: ignore[union-attr]
        ]

    def _on_stun(self, data: bytes) -> None:
        try:
            msg = stun.StunMessage.parse(data)
        except ValueError:
            return
        if msg.method != stun.BINDING:
            return
        if msg.msg_class == stun.REQUEST:
            # the remote is a full agent checking us (RFC 8445 §7.3): answer with our password
            if stun.check_integrity(data, self.local_pwd.encode()):
                addr = self.remote.address if self.remote else ("127.0.0.1", 0)
                self.send(stun.binding_success(msg, addr, self.local_pwd.encode()))
            return
        if msg.msg_class == stun.SUCCESS and msg.transaction_id == self._check_tid:
            if self.remote is None or not stun.check_integrity(data, self.remote.pwd.encode()):
                return
            if not self.ice_connected.is_set():
                self.ice_connected.set()
                assert self.dtls is not None
                self.dtls.start()
                self._arm_dtls_timer()
        elif msg.msg_class == stun.ERROR and msg.transaction_id == self._check_tid:
            self._fail("ICE: Binding error response")

    # -- DTLS ---------------------------------------------------------------------------------

    def _arm_dtls_timer(self) -> None:
        if self._dtls_timer is not None:
            self._dtls_timer.cancel()
            self._dtls_timer = None
        if self.dtls is None or self.closed:
            return
        delay = self.dtls.timeout()
        if delay is not None and self._loop is not None:
            self._dtls_timer = self._loop.call_later(max(delay, 0.01), self._on_dtls_timer)

    def _on_dtls_timer(self) -> None:
        self._dtls_timer = None
        if self.dtls is not None:
            self.dtls.handle_timeout()
        self._arm_dtls_timer()

    def _dtls_connected(self, keys: SrtpKeys) -> None:
        self.srtp = SrtpContext(keys)
        if self.fast_gcm and keys.profile == "SRTP_AEAD_AES_128_GCM":
            self._rtp_unprotect = GcmRtpReceiver(keys.remote_key).unprotect
        else:
            self._rtp_unprotect = self.srtp.unprotect
        if self.on_srtp is not None and self._loop is not None and self.on_srtp():
            self._loop.remove_reader(self.sock.fileno())
            self.handed_over = True
        self.connected.set()

    def _dtls_closed(self, reason: str) -> None:
        if not self.connected.is_set():
            self._fail(f"DTLS: {reason}")

    def _fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
        self.connected.set()

    # -- receiving ----------------------------------------------------------------------------

    def _readable(self) -> None:
        recvmsg = self.sock.recvmsg
        unpack = _TIMESPEC.unpack
        while True:
            try:
                data, anc, _, _ = recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable on a connected socket, and the like
                return
            if anc:  # the kernel's receive time (SO_TIMESTAMPNS, CLOCK_REALTIME)
                sec, nsec = unpack(anc[0][2])
                arrival = sec * 1_000_000_000 + nsec
            else:
                arrival = time.time_ns()
            self.bytes_in += len(data)
            first = data[0] if data else 0
            srtp = self.srtp
            if 127 < first < 192 and srtp is not None:
                if len(data) > 1 and 191 < data[1] < 224:  # RTCP (RFC 5761 §4)
                    try:
                        plain = srtp.unprotect_rtcp(data)
                    except SrtpError as exc:
                        self._srtp_error(exc)
                        continue
                    if self.on_rtcp is not None:
                        self.on_rtcp(plain)
                    continue
                try:
                    plain = self._rtp_unprotect(data)  # type: ignore[misc]
                except InvalidTag:
                    self.auth_failures += 1
                    continue
                except SrtpError as exc:
                    self._srtp_error(exc)
                    continue
                except (IndexError, ValueError):  # too short to be SRTP
                    self.auth_failures += 1
                    continue
                self.on_rtp(plain, arrival)
            elif first < 4:
                self._on_stun(data)
            elif 19 < first < 64 and self.dtls is not None:
                self.dtls.receive(data)
                self._arm_dtls_timer()
                if self.handed_over:  # the native receiver reads the rest
                    return

    def handle_datagram(self, data: bytes) -> None:
        """A datagram the native receiver handed back: SRTCP, STUN or DTLS."""
        if self.closed:
            return
        first = data[0] if data else 0
        if 127 < first < 192:
            if self.srtp is None:
                return
            try:
                plain = self.srtp.unprotect_rtcp(data)
            except SrtpError as exc:
                self._srtp_error(exc)
                return
            if self.on_rtcp is not None:
                self.on_rtcp(plain)
        elif first < 4:
            self._on_stun(data)
        elif 19 < first < 64 and self.dtls is not None:
            self.dtls.receive(data)
            self._arm_dtls_timer()

    def _srtp_error(self, exc: Exception) -> None:
        if "replay" in str(exc):
            self.replays += 1
        else:
            self.auth_failures += 1
