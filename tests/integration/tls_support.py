"""A test certificate authority and HTTPS relaycast servers for the TLS tests.

The CA is made in the test with ``cryptography``; the server gets a leaf it signed, and
clients verify against that CA only (never the system store, never verification off), so a
test passes only when the server really serves that chain.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.conftest import RelaycastServer, ServerFactory


@dataclass
class Leaf:
    cert_pem: bytes
    key_pem: bytes
    serial: int

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )

    def spki_sha256_b64(self) -> str:
        """What Chromium's ``--ignore-certificate-errors-spki-list`` takes."""
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)


class TestCA:
    """A throw-away certificate authority."""

    __test__ = False  # not a test class

    def __init__(self, name: str = "relaycast test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def client_context(self) -> ssl.SSLContext:
        """Verifies servers against this CA only."""
        context = ssl.create_default_context(cadata=self.pem.decode())
        return context

    def issue(
        self, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), key_pem, serial)


def served_certificate(port: int, host: str = "127.0.0.1") -> x509.Certificate:
    """The certificate the server presents in a new TLS handshake (no verification: this
    reads what is served, the tests check it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def start_https(
    factory: ServerFactory,
    *extra_args: str,
    context: ssl.SSLContext,
    timeout: float = 20.0,
    **kwargs: object,
) -> RelaycastServer:
    """``factory.start(*extra_args)`` for a server that serves HTTPS: it is waited for over
    HTTPS with *context*, and its ``http`` is the ``https://`` base URL."""
    # the globals of the factory's own module (two conftest modules share the name "conftest")
    namespace = type(factory).start.__globals__
    original = namespace["_wait_until_up"]

    def wait_https(server: RelaycastServer, wait: float) -> None:
        deadline = time.monotonic() + wait
        url = f"https://127.0.0.1:{server.port}/"
        last = "no answer"
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                pytest.fail(
                    f"relaycast exited with {server.proc.returncode}\n--- stdout ---\n"
                    f"{server.stdout()}\n--- stderr ---\n{server.stderr()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:
                    if resp.status < 500:
                        server.http = url.rstrip("/")
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    server.http = url.rstrip("/")
                    return
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        server.stop()
        pytest.fail(f"relaycast did not answer HTTPS within {wait:.0f} s ({last})\n"
                    f"--- stderr ---\n{server.stderr()}")  # fmt: skip

    namespace["_wait_until_up"] = wait_https
    try:
        return factory.start(*extra_args, timeout=timeout, **kwargs)  # type: ignore[arg-type]
    finally:
        namespace["_wait_until_up"] = original
