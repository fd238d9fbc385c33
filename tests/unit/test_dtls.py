"""DtlsEndpoint against independent DTLS peers over memory BIOs (RFC 5764, RFC 6347).

The peer is a plain pyOpenSSL DTLS connection (what aiortc and many stacks are built on),
with an RSA-2048 or an ECDSA P-256 certificate; datagrams are pumped between the two sides
by the test, so every flight is visible and nothing touches the network.
"""

from __future__ import annotations

import contextlib
import datetime
import struct
import time
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from relaycast.net.dtls import (
    DtlsCertificate,
    DtlsEndpoint,
    SrtpKeys,
    certificate_fingerprint,
)
from relaycast.net.srtp import SrtpContext, SrtpError

BOTH_PROFILES = b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
CM_ONLY = b"SRTP_AES128_CM_SHA1_80"
KEY_SALT = {"SRTP_AEAD_AES_128_GCM": (16, 12), "SRTP_AES128_CM_SHA1_80": (16, 14)}


def make_certificate(kind: str) -> tuple[x509.Certificate, object]:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-{kind}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


class OpenSslPeer:
    """An independent DTLS peer: pyOpenSSL over a memory BIO, client or server."""

    def __init__(
        self, kind: str, profiles: bytes, *, client: bool = True, ciphers: bytes = b""
    ) -> None:
        self.cert, key = make_certificate(kind)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        if ciphers:
            ctx.set_cipher_list(ciphers)
        ctx.use_certificate(self.cert)
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        ctx.set_tlsext_use_srtp(profiles)
        self.conn = SSL.Connection(ctx, None)
        if client:
            self.conn.set_connect_state()
        else:
            self.conn.set_accept_state()
        self.client = client
        self.done = False

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.cert)

    def step(self) -> None:
        if self.done:
            return
        try:
            self.conn.do_handshake()
            self.done = True
        except SSL.WantReadError:
            pass

    def feed(self, datagram: bytes) -> None:
        self.conn.bio_write(datagram)
        if not self.done:
            self.step()
        else:
            with contextlib.suppress(SSL.WantReadError, SSL.ZeroReturnError):
                self.conn.recv(1500)

    def outgoing(self) -> list[bytes]:
        out = []
        while True:
            try:
                data = self.conn.bio_read(65536)
            except SSL.WantReadError:
                return out
            if not data:
                return out
            out.append(data)

    def keys(self) -> SrtpKeys:
        profile = self.conn.get_selected_srtp_profile().decode()
        key_len, salt_len = KEY_SALT[profile]
        m = self.conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
        client = m[:key_len] + m[2 * key_len : 2 * key_len + salt_len]
        server = m[key_len : 2 * key_len] + m[2 * key_len + salt_len :]
        if self.client:
            return SrtpKeys(profile, local_key=client, remote_key=server)
        return SrtpKeys(profile, local_key=server, remote_key=client)


@dataclass
class Events:
    connected: list[SrtpKeys] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)


def endpoint(
    certificate: DtlsCertificate, fingerprints: list[tuple[str, str]], *, client: bool
) -> tuple[DtlsEndpoint, Events]:
    events = Events()
    ep = DtlsEndpoint(
        certificate,
        fingerprints,
        is_client=client,
        send=events.sent.append,
        on_connected=events.connected.append,
        on_closed=events.closed.append,
    )
    return ep, events


def pump_with_peer(ep: DtlsEndpoint, events: Events, peer: OpenSslPeer, rounds: int = 20) -> None:
    """Move datagrams both ways until nothing is in flight."""
    if peer.client:
        peer.step()
    else:
        ep.start()
    for _ in range(rounds):
        moved = False
        for datagram in peer.outgoing():
            ep.receive(datagram)
            moved = True
        while events.sent:
            peer.feed(events.sent.pop(0))
            moved = True
        if not moved:
            return


def rtp(seq: int, payload: bytes = b"\x90\xe0" + b"x" * 100) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, 1234 * seq, 0x11223344) + payload


def rtcp_rr(ssrc: int = 0x55667788) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def srtp_round_trip(a: SrtpKeys, b: SrtpKeys) -> None:
    ctx_a, ctx_b = SrtpContext(a), SrtpContext(b)
    for seq in (1, 2, 3):
        plain = rtp(seq)
        protected = ctx_a.protect(plain)
        assert protected != plain
        assert ctx_b.unprotect(protected) == plain
        back = ctx_b.protect(rtp(seq + 100))
        assert ctx_a.unprotect(back) == rtp(seq + 100)
    assert ctx_b.unprotect_rtcp(ctx_a.protect_rtcp(rtcp_rr())) == rtcp_rr()
    # a packet protected with other keys is rejected, not silently accepted
    stranger = SrtpContext(
        SrtpKeys(a.profile, local_key=b"\x01" * len(a.local_key), remote_key=a.remote_key)
    )
    with pytest.raises(SrtpError):
        ctx_b.unprotect(stranger.protect(rtp(50)))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize(
    ("offered", "expected"),
    [(BOTH_PROFILES, "SRTP_AEAD_AES_128_GCM"), (CM_ONLY, "SRTP_AES128_CM_SHA1_80")],
)
def test_server_handshake_profiles_keys_and_srtp(kind: str, offered: bytes, expected: str) -> None:
    certificate = DtlsCertificate()
    peer = OpenSslPeer(kind, offered)
    ep, events = endpoint(certificate, [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)

    assert peer.done, "the pyOpenSSL client did not finish the handshake"
    assert ep.connected and not events.closed
    assert len(events.connected) == 1
    server_keys = events.connected[0]
    client_keys = peer.keys()
    assert server_keys.profile == client_keys.profile == expected
    key_len, salt_len = KEY_SALT[expected]
    assert len(server_keys.local_key) == len(server_keys.remote_key) == key_len + salt_len
    assert client_keys.local_key == server_keys.remote_key
    assert client_keys.remote_key == server_keys.local_key
    assert server_keys.local_key != server_keys.remote_key
    # the client sees our certificate, whose fingerprint is the one we put in answers
    ours = peer.conn.get_peer_certificate(as_cryptography=True)
    assert ours is not None
    assert certificate_fingerprint(ours) == certificate.fingerprint
    srtp_round_trip(client_keys, server_keys)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_fingerprint_lowercase_and_other_hash_accepted(kind: str) -> None:
    """RFC 8122 §5: hex is case-insensitive; any listed hash function may be used."""
    peer = OpenSslPeer(kind, BOTH_PROFILES)
    fingerprint = certificate_fingerprint(peer.cert, "sha-384").lower()
    ep, events = endpoint(DtlsCertificate(), [("SHA-384", fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert len(events.connected) == 1 and not events.closed


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_certificate_not_matching_fingerprint_is_rejected(kind: str) -> None:
    peer = OpenSslPeer(kind, BOTH_PROFILES)
    impostor = OpenSslPeer(kind, BOTH_PROFILES)  # a different key pair
    ep, events = endpoint(DtlsCertificate(), [("sha-256", impostor.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert events.connected == []
    assert not ep.connected
    assert len(events.closed) == 1
    assert "fingerprint" in events.closed[0]
    # nothing more happens after the rejection
    ep.receive(b"\x17\xfe\xfd" + b"\x00" * 30)
    assert len(events.closed) == 1 and events.connected == []


def test_unknown_hash_function_only_is_rejected() -> None:
    peer = OpenSslPeer("ecdsa", BOTH_PROFILES)
    ep, events = endpoint(DtlsCertificate(), [("md5", "00:11")], client=False)
    pump_with_peer(ep, events, peer)
    assert events.connected == [] and len(events.closed) == 1


def test_client_without_srtp_extension_is_rejected() -> None:
    """RFC 5764 §4.1: no use_srtp agreement means no SRTP keys: the session must end."""
    cert, key = make_certificate("ecdsa")
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)  # type: ignore[arg-type]
    peer = OpenSslPeer("ecdsa", BOTH_PROFILES)
    peer.cert = cert
    peer.conn = SSL.Connection(ctx, None)
    peer.conn.set_connect_state()
    ep, events = endpoint(DtlsCertificate(), [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert events.connected == []
    assert len(events.closed) == 1


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_close_notify_from_client_closes(kind: str) -> None:
    peer = OpenSslPeer(kind, BOTH_PROFILES)
    ep, events = endpoint(DtlsCertificate(), [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert ep.connected
    assert events.closed == []
    # application data after the handshake is ignored without closing
    peer.conn.send(b"hello")
    for datagram in peer.outgoing():
        ep.receive(datagram)
    assert events.closed == []
    assert peer.conn.shutdown() is False  # close_notify sent, the peer's not yet seen
    datagrams = peer.outgoing()
    assert datagrams, "pyOpenSSL did not produce a close_notify"
    for datagram in datagrams:
        ep.receive(datagram)
    assert events.closed == ["close_notify"]
    assert ep.closed


def test_close_sends_close_notify_to_peer() -> None:
    peer = OpenSslPeer("ecdsa", BOTH_PROFILES)
    ep, events = endpoint(DtlsCertificate(), [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert ep.connected
    events.sent.clear()
    ep.close()
    assert events.sent, "no close_notify was sent"
    for datagram in events.sent:
        peer.conn.bio_write(datagram)
    with pytest.raises(SSL.ZeroReturnError):
        peer.conn.recv(1500)
    ep.close()  # idempotent
    assert events.closed == []  # our own close does not report the peer closing


def test_garbage_during_handshake_does_not_raise() -> None:
    ep, events = endpoint(DtlsCertificate(), [("sha-256", "00")], client=False)
    for junk in (b"\x16", b"\x16\xfe\xfd" + b"\xff" * 40, b"\x17" * 13, bytes(range(20, 64))):
        ep.receive(junk)  # must never raise into the UDP demultiplexer
    assert events.connected == []


@pytest.mark.parametrize(
    ("client_profiles",),
    [(BOTH_PROFILES,)],
)
def test_our_client_against_our_server(client_profiles: bytes) -> None:
    """FFmpeg's whip muxer offers a=setup:passive: relaycast is then the DTLS client."""
    client_cert, server_cert = DtlsCertificate(), DtlsCertificate()
    client, client_events = endpoint(
        client_cert, [("sha-256", server_cert.fingerprint)], client=True
    )
    server, server_events = endpoint(
        server_cert, [("sha-256", client_cert.fingerprint)], client=False
    )
    server.start()  # no-op for the server
    assert server_events.sent == []
    client.start()
    assert client_events.sent, "the client sent no ClientHello"
    assert client.timeout() is not None  # a retransmission timer is armed while connecting
    for _ in range(20):
        moved = False
        while client_events.sent:
            server.receive(client_events.sent.pop(0))
            moved = True
        while server_events.sent:
            client.receive(server_events.sent.pop(0))
            moved = True
        if not moved:
            break
    assert client.connected and server.connected
    assert client.timeout() is None
    (ck,) = client_events.connected
    (sk,) = server_events.connected
    assert ck.profile == sk.profile == "SRTP_AEAD_AES_128_GCM"
    assert ck.local_key == sk.remote_key and ck.remote_key == sk.local_key
    srtp_round_trip(ck, sk)
    client.close()
    for datagram in client_events.sent:
        server.receive(datagram)
    assert server_events.closed == ["close_notify"]
    assert client_events.closed == []


def test_our_client_rejects_server_with_wrong_fingerprint() -> None:
    server_cert, impostor = DtlsCertificate(), DtlsCertificate()
    client_cert = DtlsCertificate()
    client, client_events = endpoint(client_cert, [("sha-256", impostor.fingerprint)], client=True)
    server, server_events = endpoint(
        server_cert, [("sha-256", client_cert.fingerprint)], client=False
    )
    client.start()
    for _ in range(20):
        moved = False
        while client_events.sent:
            server.receive(client_events.sent.pop(0))
            moved = True
        while server_events.sent:
            client.receive(server_events.sent.pop(0))
            moved = True
        if not moved:
            break
    assert client_events.connected == []
    assert len(client_events.closed) == 1 and "fingerprint" in client_events.closed[0]


def test_client_retransmits_lost_client_hello() -> None:
    """RFC 6347 §4.2.4: a lost flight is sent again when the timer fires."""
    client, events = endpoint(DtlsCertificate(), [("sha-256", "00")], client=True)
    client.start()
    first = list(events.sent)
    events.sent.clear()
    assert first
    delay = client.timeout()
    assert delay is not None and 0 < delay <= 3.5
    time.sleep(delay + 0.05)
    client.handle_timeout()
    assert events.sent, "nothing retransmitted after the timeout"
    assert events.sent[0][0] == 22  # a handshake record again (ClientHello)


# -- retirement: OpenSSL's connection dropped, alerts still authenticated (dtls_records.py) --


def retired_with_peer(
    kind: str = "ecdsa", ciphers: bytes = b""
) -> tuple[DtlsEndpoint, Events, OpenSslPeer]:
    peer = OpenSslPeer(kind, BOTH_PROFILES, ciphers=ciphers)
    ep, events = endpoint(DtlsCertificate(), [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert ep.connected
    ep.retire()
    assert ep.retired
    return ep, events, peer


def test_retire_needs_a_finished_handshake() -> None:
    ep, _events = endpoint(DtlsCertificate(), [("sha-256", "00")], client=False)
    ep.retire()
    assert not ep.retired


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_retired_endpoint_recognises_the_peers_close_notify(kind: str) -> None:
    ep, events, peer = retired_with_peer(kind)
    peer.conn.send(b"data channel bytes we never negotiated")
    for datagram in peer.outgoing():
        ep.receive(datagram)
    assert events.closed == []
    assert peer.conn.shutdown() is False
    for datagram in peer.outgoing():
        ep.receive(datagram)
    assert events.closed == ["close_notify"]


def test_retired_endpoint_ignores_forged_alerts() -> None:
    ep, events, peer = retired_with_peer()
    assert peer.conn.shutdown() is False
    (real,) = peer.outgoing()
    forged = bytearray(real)
    forged[-1] ^= 0x01  # tag no longer matches
    replayed_epoch0 = bytes((21, 0xFE, 0xFD, 0, 0)) + bytes(6) + b"\x00\x02\x01\x00"
    for datagram in (bytes(forged), replayed_epoch0, real[:20], b"\x15" * 13):
        ep.receive(datagram)
    assert events.closed == []
    ep.receive(real)
    assert events.closed == ["close_notify"]


@pytest.mark.parametrize(
    "ciphers", [b"", b"ECDHE-ECDSA-AES256-GCM-SHA384", b"ECDHE-ECDSA-AES128-GCM-SHA256"]
)
def test_retired_endpoint_sends_a_close_notify_the_peer_accepts(ciphers: bytes) -> None:
    ep, events, peer = retired_with_peer(ciphers=ciphers)
    events.sent.clear()
    ep.close()
    assert len(events.sent) == 1
    peer.conn.bio_write(events.sent[0])
    with pytest.raises(SSL.ZeroReturnError):
        peer.conn.recv(1500)


def test_record_keys_only_for_aes_gcm_suites() -> None:
    from relaycast.net.dtls_records import RecordKeys

    args = (bytes(48), bytes(32), bytes(32))
    assert RecordKeys.derive("ECDHE-RSA-AES128-SHA", *args, is_client=False) is None
    assert (
        RecordKeys.derive("ECDHE-ECDSA-AES128-GCM-SHA256", bytes(47), *args[1:], is_client=False)
        is None
    )
    assert RecordKeys.derive("ECDHE-RSA-AES256-GCM-SHA384", *args, is_client=True) is not None


def test_cbc_suites_keep_openssls_connection() -> None:
    peer = OpenSslPeer("ecdsa", BOTH_PROFILES, ciphers=b"ECDHE-ECDSA-AES128-SHA")
    ep, events = endpoint(DtlsCertificate(), [("sha-256", peer.fingerprint)], client=False)
    pump_with_peer(ep, events, peer)
    assert ep.connected
    ep.retire()
    assert not ep.retired  # no record keys for CBC: close_notify still goes through OpenSSL
    events.sent.clear()
    ep.close()
    peer.conn.bio_write(events.sent[0])
    with pytest.raises(SSL.ZeroReturnError):
        peer.conn.recv(1500)
