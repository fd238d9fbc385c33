"""DTLS 1.2 for DTLS-SRTP (RFC 5764) with the certificate checked against the SDP fingerprint.

The handshake runs over OpenSSL memory BIOs (pyOpenSSL), so datagrams come in and go out through
the shared UDP socket of :class:`relaycast.net.udp_mux.UdpMux`. The server is passive (DTLS server)
unless the offer says ``a=setup:passive`` (FFmpeg's ``whip`` muxer), in which case we connect.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from relaycast.net.dtls_records import RecordKeys, ends_association

log = logging.getLogger(__name__)

# RFC 5764 §4.1.2 profile names as OpenSSL spells them, in our order of preference.
SRTP_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"

# key and salt lengths per profile (RFC 7714 §12, RFC 3711 §8.2)
_KEY_SALT = {
    "SRTP_AEAD_AES_128_GCM": (16, 12),
    "SRTP_AES128_CM_SHA1_80": (16, 14),
}

MAX_RESETS = 16  # pre-handshake garbage a server endpoint forgives before it gives up

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}


def certificate_fingerprint(cert: x509.Certificate, algorithm: str = "sha-256") -> str:
    """The ``a=fingerprint`` value of a certificate (RFC 8122 §5): upper-case hex with colons."""
    digest = cert.fingerprint(_HASHES[algorithm]())
    return ":".join(f"{b:02X}" for b in digest)


class DtlsCertificate:
    """One self-signed ECDSA P-256 certificate, shared by every session of a server."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relaycast")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(63))
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.fingerprint = certificate_fingerprint(cert)
        # cryptography objects: pyOpenSSL deprecates passing its own X509/PKey wrappers
        self._cert = cert
        self._key = key
        self._context: SSL.Context | None = None

    def context(self) -> SSL.Context:
        """The DTLS context every session's connection is made from (built once: a context
        holds no per-connection state, and loading the key per session cost time and memory).
        It demands a client certificate, checked later against the SDP fingerprint."""
        if self._context is None:
            self._context = self._new_context()
        return self._context

    def _new_context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        # WebRTC never resumes DTLS sessions; a shared context would otherwise cache every
        # session's state (OpenSSL keeps up to 20,480), memory an anonymous viewer could fill.
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # ... and no tickets either (5 KiB per session); idle record buffers are freed.
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        # Self-signed certificates are the norm in WebRTC: accept the chain here, verify the
        # fingerprint from the SDP once the handshake is done (RFC 8827 §6.5).
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        ctx.use_certificate(self._cert)
        ctx.use_privatekey(self._key)
        # ECDHE with ECDSA *and* RSA peers (GStreamer uses RSA certificates).
        ctx.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
            b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
            b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"
        )
        ctx.set_tlsext_use_srtp(SRTP_PROFILES)
        return ctx


@dataclass(frozen=True)
class SrtpKeys:
    """Keying material exported from the handshake (RFC 5764 §4.2)."""

    profile: str
    local_key: bytes  # key || salt we protect with
    remote_key: bytes  # key || salt we unprotect with


class DtlsError(Exception):
    """The handshake failed or the peer's certificate does not match its fingerprint."""


_CONTENT_TYPES = (20, 21, 22, 23)  # change_cipher_spec, alert, handshake, application_data
_HANDSHAKE_TYPES = frozenset((1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 20))  # RFC 6347 §4.3.2
_MAX_RECORD = 2**14 + 2048  # TLSCiphertext.length (RFC 5246 §6.2.3)


def valid_dtls_records(data: bytes) -> bool:
    """True when ``data`` is a sequence of well-framed DTLS 1.0/1.2 records (RFC 6347 §4.1).

    Invalid records SHOULD be silently discarded (RFC 6347 §4.1.2.7). OpenSSL aborts the whole
    handshake on some of them, so the transport checks the framing first: content type,
    version, lengths, and for plaintext (epoch 0) handshake records the handshake header too.
    """
    n = len(data)
    pos = 0
    if n < 13:
        return False
    while pos < n:
        if n - pos < 13:
            return False
        content_type = data[pos]
        if content_type not in _CONTENT_TYPES or data[pos + 1] != 0xFE:
            return False
        if data[pos + 2] not in (0xFF, 0xFD):
            return False
        epoch = (data[pos + 3] << 8) | data[pos + 4]
        length = (data[pos + 11] << 8) | data[pos + 12]
        body = pos + 13
        if length == 0 or length > _MAX_RECORD or body + length > n:
            return False
        if content_type == 22 and epoch == 0:
            # one or more handshake fragments: 12-byte header each (RFC 6347 §4.2.2)
            end = body + length
            while body < end:
                if end - body < 12 or data[body] not in _HANDSHAKE_TYPES:
                    return False
                total = int.from_bytes(data[body + 1 : body + 4], "big")
                offset = int.from_bytes(data[body + 6 : body + 9], "big")
                fragment = int.from_bytes(data[body + 9 : body + 12], "big")
                if offset + fragment > total or body + 12 + fragment > end:
                    return False
                body += 12 + fragment
        pos += 13 + length
    return True


class DtlsEndpoint:
    """One DTLS association. Feed datagrams to :meth:`receive`; outgoing ones go to ``send``.

    ``on_connected`` fires once with the SRTP keys; ``on_closed`` when the peer sends
    close_notify or the handshake fails. Once the peer has shown that it finished the
    handshake, :meth:`retire` swaps OpenSSL's connection for the few bytes of
    :class:`~relaycast.net.dtls_records.RecordKeys` (dtls_records.py says why).
    """

    def __init__(
        self,
        certificate: DtlsCertificate,
        remote_fingerprints: list[tuple[str, str]],
        *,
        is_client: bool,
        send: Callable[[bytes], None],
        on_connected: Callable[[SrtpKeys], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self._fingerprints = [(alg.lower(), value.upper()) for alg, value in remote_fingerprints]
        self._send = send
        self._on_connected = on_connected
        self._on_closed = on_closed
        self.is_client = is_client
        self.connected = False
        self.closed = False
        self._certificate = certificate
        self._sent = False  # whether we have answered anything yet
        self.resets = 0
        self._conn: SSL.Connection | None = self._new_connection()
        self._records: RecordKeys | None = None  # epoch-1 keys, kept for retire()
        self.retired = False

    def _new_connection(self) -> SSL.Connection:
        conn = SSL.Connection(self._certificate.context(), None)
        conn.set_ciphertext_mtu(1200)
        if self.is_client:
            conn.set_connect_state()
        else:
            conn.set_accept_state()
        return conn

    def start(self) -> None:
        """Send the ClientHello when we are the DTLS client; no-op for the server."""
        if self.is_client and not self.connected and not self.closed:
            self._handshake()

    def receive(self, data: bytes) -> None:
        """Process one DTLS datagram (RFC 7983 first byte 20..63)."""
        if self.closed:
            return
        conn = self._conn
        if conn is None:  # retired: only alerts matter (dtls_records.py)
            if self._records is not None and any(
                ends_association(alert) for alert in self._records.open_alerts(data)
            ):
                self._close("close_notify")
            return
        conn.bio_write(data)
        if not self.connected:
            self._handshake()
            return
        try:
            conn.recv(1500)  # application data (a data channel) is not used
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._close("close_notify")
        except SSL.Error as exc:
            log.debug("dtls record error: %s", exc)
        self._flush()

    def timeout(self) -> float | None:
        """Seconds until the next handshake retransmission is due (RFC 6347 §4.2.4)."""
        if self.connected or self.closed or self._conn is None:
            return None
        value = self._conn.DTLSv1_get_timeout()
        return None if value is None else float(value)

    def handle_timeout(self) -> None:
        if self.connected or self.closed or self._conn is None:
            return
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._close(f"dtls timeout: {exc}")
            return
        self._flush()

    def close(self) -> None:
        """Send close_notify (best effort) and stop."""
        if self.closed:
            return
        self.closed = True
        if self.connected:
            if self._conn is not None:
                with contextlib.suppress(SSL.Error):
                    self._conn.shutdown()
                self._flush()
            elif self._records is not None:
                self._send(self._records.seal_alert())
        self._conn = None

    def retire(self) -> None:
        """The peer has finished the handshake (it sent authenticated SRTP/SRTCP, which it
        does only after our last flight arrived, RFC 5764 §4.1): no retransmission of ours
        can be needed any more, so OpenSSL's connection goes and the record keys stay."""
        if self.retired or not self.connected or self.closed or self._records is None:
            return
        self.retired = True
        self._conn = None

    # -- internals ------------------------------------------------------------------------

    def _handshake(self) -> None:
        assert self._conn is not None
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as exc:
            if not self.is_client and not self._sent and self.resets < MAX_RESETS:
                # Nothing answered yet: whatever OpenSSL choked on was not a handshake of the
                # peer's we took part in. Drop it and wait for a proper ClientHello (the
                # handshake deadline ends sessions that never send one).
                log.debug("dtls: dropped a datagram before the handshake began: %s", exc)
                self.resets += 1
                self._conn = self._new_connection()
                return
            self._flush()
            self._close(f"dtls handshake failed: {exc}")
            return
        self._flush()
        try:
            keys = self._finish()
        except DtlsError as exc:
            self._close(str(exc))
            return
        self.connected = True
        conn = self._conn
        assert conn is not None
        self._records = RecordKeys.derive(
            conn.get_cipher_name() or "",
            conn.master_key() or b"",
            conn.client_random() or b"",
            conn.server_random() or b"",
            is_client=self.is_client,
        )
        self._on_connected(keys)

    def _finish(self) -> SrtpKeys:
        assert self._conn is not None
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            raise DtlsError("peer sent no certificate")
        if not self._fingerprint_matches(cert):
            raise DtlsError("peer certificate does not match the SDP fingerprint")
        profile_raw = self._conn.get_selected_srtp_profile()
        profile = profile_raw.decode() if profile_raw else ""
        if profile not in _KEY_SALT:
            raise DtlsError(f"no SRTP profile negotiated (got {profile!r})")
        key_len, salt_len = _KEY_SALT[profile]
        material = self._conn.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
        )
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        client, server = client_key + client_salt, server_key + server_salt
        if self.is_client:
            return SrtpKeys(profile, local_key=client, remote_key=server)
        return SrtpKeys(profile, local_key=server, remote_key=client)

    def _fingerprint_matches(self, cert: x509.Certificate) -> bool:
        for alg, expected in self._fingerprints:
            if alg not in _HASHES:
                continue
            actual = certificate_fingerprint(cert, alg)
            if hmac.compare_digest(actual.encode(), expected.encode()):
                return True
        return False

    def _flush(self) -> None:
        while self._conn is not None:
            try:
                data = self._conn.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            self._sent = True
            self._send(data)

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._conn = None
        self._on_closed(reason)
