"""HTTPS for the HTTP side: a server :class:`ssl.SSLContext` from PEM files (reloaded in
place on SIGHUP) or from a self-signed certificate made at start for the configured names.

Reloading calls ``load_cert_chain`` on the live context: new TLS handshakes use the new
certificate, connections already open keep theirs.  A pair that does not load (a missing
file, a key that does not match) is tried on a scratch context first and leaves the live one
untouched.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relaycast.config import Config, ConfigError

__all__ = [
    "SELF_SIGNED_DAYS",
    "ServerTls",
    "TlsError",
    "certificate_fingerprint",
    "make_self_signed",
    "self_signed_names",
    "server_tls",
]

log = logging.getLogger(__name__)

SELF_SIGNED_DAYS = 365


class TlsError(ConfigError):
    """The certificate or key cannot be used; the message names the file and the reason."""


def certificate_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as browsers show it: ``AB:CD:...`` (32 pairs)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return ":".join(f"{b:02X}" for b in digest.finalize())


def _pem_fingerprint(path: str) -> str:
    """Fingerprint of the first certificate in a PEM file."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return certificate_fingerprint(cert.public_bytes(serialization.Encoding.DER))


def self_signed_names(config: Config) -> tuple[list[str], list[str]]:
    """``(dns_names, ip_addresses)`` a self-signed certificate must cover: ``localhost``,
    ``host`` (a name, or an IP other than a wildcard; a wildcard brings in every interface
    address), the public IPs, and the loopback addresses."""
    from relaycast.net.addresses import host_addresses

    dns = ["localhost"]
    ips = ["127.0.0.1", "::1"]
    host = config.host.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host and host not in dns:
            dns.append(host)
    else:
        if ip.is_unspecified:
            ips.extend(host_addresses())
        else:
            ips.append(str(ip))
    ips.extend(config.public_ips)
    return dns, list(dict.fromkeys(str(ipaddress.ip_address(i)) for i in ips))


def make_self_signed(
    dns_names: list[str], ip_addresses: list[str], days: int = SELF_SIGNED_DAYS
) -> tuple[bytes, bytes]:
    """A self-signed ECDSA P-256 server certificate for the names: ``(cert_pem, key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns_names or ["relaycast"])[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsError(f"TLS: {exc.filename or cert} does not exist") from None
    except OSError as exc:  # PermissionError, and ssl.SSLError (an OSError) for bad PEM
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsError(
            f"TLS: cannot use certificate {cert!r} with key {key!r}: {reason} "
            "(both must be PEM; the key must belong to the first certificate of the chain)"
        ) from None


@dataclass
class ServerTls:
    """The live server context and where it comes from."""

    context: ssl.SSLContext
    fingerprint: str
    self_signed: bool
    cert_file: str | None = None
    key_file: str | None = None

    def reload(self) -> bool:
        """Load the PEM files again into the live context (SIGHUP); False when they cannot be
        used (logged, the served certificate stays) or the certificate is self-signed."""
        if self.cert_file is None or self.key_file is None:
            log.info("SIGHUP: the certificate is self-signed, nothing to reload")
            return False
        try:
            _load(_new_context(), self.cert_file, self.key_file)  # check on a scratch context
            _load(self.context, self.cert_file, self.key_file)
            self.fingerprint = _pem_fingerprint(self.cert_file)
        except (TlsError, ValueError) as exc:
            log.error("SIGHUP: keeping the current certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s (SHA-256 %s)", self.cert_file, self.fingerprint)
        return True


def server_tls(config: Config) -> ServerTls | None:
    """The TLS setup *config* asks for, or None for plain HTTP.  Raises :class:`TlsError`."""
    if config.tls_cert and config.tls_key:
        context = _new_context()
        _load(context, config.tls_cert, config.tls_key)
        try:
            fingerprint = _pem_fingerprint(config.tls_cert)
        except ValueError as exc:
            raise TlsError(f"TLS: {config.tls_cert!r}: {exc}") from None
        return ServerTls(context, fingerprint, False, config.tls_cert, config.tls_key)
    if config.tls_self_signed:
        dns, ips = self_signed_names(config)
        cert_pem, key_pem = make_self_signed(dns, ips)
        context = _new_context()
        # load_cert_chain reads files only: a private directory, removed right after.
        with tempfile.TemporaryDirectory(prefix="relaycast-tls-") as tmp:
            cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            _load(context, cert_path, key_path)
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        log.info("self-signed TLS certificate for %s", ", ".join(dns + ips))
        return ServerTls(context, certificate_fingerprint(der), True)
    return None
