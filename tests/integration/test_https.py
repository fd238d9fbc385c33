"""HTTPS: a test CA signs the server's certificate; WHIP, WHEP, the API and the pages over TLS,
verified against that CA; SIGHUP swaps the served certificate; --tls-self-signed prints the
fingerprint of the certificate it serves."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.conftest import ServerFactory
from tests.integration.test_whip_whep_http import make_offer
from tests.integration.tls_support import TestCA, served_certificate, start_https

pytestmark = pytest.mark.integration

SDP = "application/sdp"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def fingerprint(cert: x509.Certificate) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


async def test_whip_whep_api_and_pages_over_https_verified_against_the_test_ca(
    server_factory: ServerFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ca = TestCA()
    leaf = ca.issue()
    leaf.write(tmp_path / "cert.pem", tmp_path / "key.pem")
    trust = ca.client_context()
    server = start_https(
        server_factory,
        "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
        context=trust,
    )  # fmt: skip
    base = server.http
    assert base.startswith("https://127.0.0.1:")

    # the banner speaks https and names the served certificate
    banner = server.stdout()
    assert f"relaycast listening: {base}  media udp/" in banner
    assert "http://" not in banner
    assert f"TLS certificate SHA-256: {fingerprint(served_certificate(server.port))}" in banner
    assert served_certificate(server.port).serial_number == leaf.serial

    # WHIP
    async with http.post(
        f"{base}/whip/live",
        data=await make_offer(send=True),
        headers={"Content-Type": SDP, "Authorization": "Bearer test-key"},
        ssl=trust,
    ) as r:
        assert r.status == 201, await r.text()
        whip_location = r.headers["Location"]
        assert (await r.text()).startswith("v=0")
    # WHEP
    async with http.post(
        f"{base}/whep/live",
        data=await make_offer(send=False),
        headers={"Content-Type": SDP},
        ssl=trust,
    ) as r:
        assert r.status == 201, await r.text()
        whep_location = r.headers["Location"]
    # API
    async with http.get(f"{base}/api/streams", ssl=trust) as r:
        assert r.status == 200
        assert "live" in [s["name"] for s in await r.json()]
    # pages: relative URLs, config says https
    async with http.get(f"{base}/watch/live", ssl=trust) as r:
        assert r.status == 200
        html = await r.text()
    match = re.search(r'<script id="relaycast-config" type="application/json">(.*?)</script>', html)
    assert match is not None
    assert json.loads(match.group(1)) == {"iceServers": [], "https": True}
    assert "http://" not in html
    async with http.delete(f"{base}{whep_location}", ssl=trust) as r:
        assert r.status == 200
    async with http.delete(
        f"{base}{whip_location}", headers={"Authorization": "Bearer test-key"}, ssl=trust
    ) as r:
        assert r.status == 200

    # the same requests fail against another CA and over plain HTTP
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with http.get(f"{base}/api/streams", ssl=TestCA().client_context()):
            pass
    with pytest.raises(aiohttp.ClientError):
        async with http.get(f"http://127.0.0.1:{server.port}/api/streams"):
            pass


def _serial_over_tls(port: int) -> int:
    return served_certificate(port).serial_number


async def test_sighup_reloads_the_certificate_files(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    ca = TestCA()
    first, second = ca.issue(), ca.issue()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first.write(cert, key)
    trust = ca.client_context()
    server = start_https(
        server_factory, "--tls-cert", str(cert), "--tls-key", str(key), context=trust
    )
    assert _serial_over_tls(server.port) == first.serial

    second.write(cert, key)
    assert _serial_over_tls(server.port) == first.serial  # nothing changes before the signal
    server.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if _serial_over_tls(server.port) == second.serial:
            break
        await asyncio.sleep(0.05)
    assert _serial_over_tls(server.port) == second.serial
    with urllib.request.urlopen(f"{server.http}/api/time", context=trust, timeout=5) as resp:
        assert resp.status == 200  # the new chain verifies

    # a broken pair is refused on reload: the server keeps serving the second certificate
    cert.write_bytes(ca.issue().cert_pem)  # a certificate whose key is not in key.pem
    server.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "keeping the current certificate" in server.stderr():
            break
        await asyncio.sleep(0.05)
    assert "keeping the current certificate" in server.stderr()
    assert _serial_over_tls(server.port) == second.serial
    with urllib.request.urlopen(f"{server.http}/api/time", context=trust, timeout=5) as resp:
        assert resp.status == 200
    assert server.proc.poll() is None


async def test_self_signed_certificate_fingerprint_is_printed_and_served(
    server_factory: ServerFactory,
) -> None:
    anything = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE  # only to wait for start-up; checked below
    server = start_https(server_factory, "--tls-self-signed", context=anything)
    served = served_certificate(server.port)
    match = re.search(r"TLS self-signed certificate SHA-256: ([0-9A-F:]{95})\n", server.stdout())
    assert match is not None, server.stdout()
    assert match.group(1) == fingerprint(served)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}
    # the printed certificate is the one to trust: verifying against it works
    pem = served.public_bytes(serialization.Encoding.PEM).decode()
    pinned = ssl.create_default_context(cadata=pem)
    with urllib.request.urlopen(f"{server.http}/api/time", context=pinned, timeout=5) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.http}/api/time", timeout=5)  # not trusted by default
