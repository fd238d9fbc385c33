"""The little of DTLS 1.2 a session needs once its handshake is over: alerts.

After the handshake a WebRTC peer sends no DTLS application data (relaycast negotiates no
data channel); the only records left are alerts, close_notify above all. OpenSSL's connection
object costs ~75 KiB per session once the handshake is done (buffers, the peer's certificate,
the session), most of a viewer's memory. So when the peer has proven that it finished the
handshake (authenticated SRTP/SRTCP from it), :class:`DtlsEndpoint` drops the connection and
keeps these epoch-1 AEAD keys instead: enough to send a close_notify and to recognise the
peer's, both authenticated like OpenSSL's own records.

Keys: the key block of RFC 5246 §6.3 from the master secret (extended or not, RFC 7627 §4:
the expansion is the same) with the suite's PRF (RFC 5246 §5; SHA-384 for the *-SHA384
suites, RFC 5289 §3). AES-GCM records (RFC 5288 §3) carry an 8-byte explicit nonce after
the DTLS record header (RFC 6347 §4.1); the additional data is the 8-byte epoch+sequence,
type, version and plaintext length (RFC 6347 §4.1.2.1). Only the AES-GCM suites are handled:
with any other suite the endpoint keeps OpenSSL's connection.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ALERT", "CLOSE_NOTIFY", "RecordKeys", "ends_association"]

ALERT = 21
CLOSE_NOTIFY = 0
_WARNING, _FATAL = 1, 2
_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq (16+32 bits), length
_DTLS12 = 0xFEFD
_EXPLICIT_NONCE = 8
_TAG = 16
#: our first record sequence number after retirement: far above the handshake's few records of
#: epoch 1 (a nonce is never reused), and still accepted by a peer's sliding replay window
_FIRST_SEQ = 1 << 32

# suite name (as OpenSSL spells it) -> (key length, PRF hash name)
_AEAD_SUITES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": (16, "sha256"),
    "ECDHE-RSA-AES128-GCM-SHA256": (16, "sha256"),
    "ECDHE-ECDSA-AES256-GCM-SHA384": (32, "sha384"),
    "ECDHE-RSA-AES256-GCM-SHA384": (32, "sha384"),
}


def _prf(digest: str, secret: bytes, label: bytes, seed: bytes, size: int) -> bytes:
    """TLS 1.2 PRF: P_hash(secret, label + seed) truncated to ``size`` (RFC 5246 §5)."""
    seed = label + seed
    out = b""
    a = seed
    while len(out) < size:
        a = hmac.new(secret, a, digest).digest()
        out += hmac.new(secret, a + seed, digest).digest()
    return out[:size]


class RecordKeys:
    """Epoch-1 AES-GCM keys of one DTLS 1.2 association, to seal and open alert records."""

    __slots__ = ("_open", "_open_salt", "_seal", "_seal_salt", "_seq")

    def __init__(self, write_key: bytes, write_iv: bytes, read_key: bytes, read_iv: bytes) -> None:
        self._seal = AESGCM(write_key)
        self._seal_salt = write_iv
        self._open = AESGCM(read_key)
        self._open_salt = read_iv
        self._seq = _FIRST_SEQ

    @classmethod
    def derive(
        cls,
        cipher: str,
        master_secret: bytes,
        client_random: bytes,
        server_random: bytes,
        *,
        is_client: bool,
    ) -> RecordKeys | None:
        """Keys for ``cipher``, or None when it is not an AES-GCM suite (RFC 5246 §6.3)."""
        suite = _AEAD_SUITES.get(cipher)
        if suite is None or len(master_secret) != 48:
            return None
        key_len, digest = suite
        block = _prf(
            digest, master_secret, b"key expansion", server_random + client_random, 2 * key_len + 8
        )
        client_key, server_key = block[:key_len], block[key_len : 2 * key_len]
        client_iv, server_iv = block[2 * key_len : 2 * key_len + 4], block[2 * key_len + 4 :]
        if is_client:
            return cls(client_key, client_iv, server_key, server_iv)
        return cls(server_key, server_iv, client_key, client_iv)

    def seal_alert(self, description: int = CLOSE_NOTIFY, level: int = _WARNING) -> bytes:
        """One protected alert record (RFC 5246 §7.2), the next of our sequence numbers."""
        seq = self._seq
        self._seq += 1
        explicit = struct.pack("!HHI", 1, seq >> 32, seq & 0xFFFFFFFF)  # epoch 1 || seq
        plain = bytes((level, description))
        aad = explicit + struct.pack("!BHH", ALERT, _DTLS12, len(plain))
        sealed = self._seal.encrypt(self._seal_salt + explicit, plain, aad)
        return (
            _HEADER.pack(ALERT, _DTLS12, 1, seq >> 32, seq & 0xFFFFFFFF, 8 + len(sealed))
            + explicit
            + sealed
        )

    def open_alerts(self, data: bytes) -> list[tuple[int, int]]:
        """The authentic epoch-1 alerts (level, description) in a datagram of DTLS records;
        every other record (wrong epoch, another type, a failed tag) is skipped."""
        alerts: list[tuple[int, int]] = []
        pos, n = 0, len(data)
        while n - pos >= 13:
            ctype, version, epoch, seq_hi, seq_lo, length = _HEADER.unpack_from(data, pos)
            body, pos = pos + 13, pos + 13 + length
            if pos > n:
                break
            if ctype != ALERT or epoch != 1 or length < _EXPLICIT_NONCE + _TAG + 2:
                continue
            explicit = data[body : body + _EXPLICIT_NONCE]
            sealed = data[body + _EXPLICIT_NONCE : pos]
            header8 = struct.pack("!HHI", epoch, seq_hi, seq_lo)
            aad = header8 + struct.pack("!BHH", ctype, version, len(sealed) - _TAG)
            try:
                plain = self._open.decrypt(self._open_salt + explicit, sealed, aad)
            except InvalidTag:
                continue
            if len(plain) == 2:
                alerts.append((plain[0], plain[1]))
        return alerts


def ends_association(alert: tuple[int, int]) -> bool:
    """close_notify, or any fatal alert (RFC 5246 §7.2.1, §7.2.2)."""
    level, description = alert
    return description == CLOSE_NOTIFY or level == _FATAL
