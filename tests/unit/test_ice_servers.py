"""TURN REST credentials (coturn use-auth-secret) and the ICE server lists clients get."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from relaycast.config import Config, ConfigError
from relaycast.http.ice_servers import client_ice_servers, ice_link_headers, turn_credentials

SECRET = "coturn-static-auth-secret"
NOW = 1_700_000_000


def coturn_accepts(secret: str, username: str, credential: str, now: float) -> bool:
    """What coturn does with use-auth-secret: the username's first field is the expiry, the
    password must be base64(HMAC-SHA1(static-auth-secret, username))."""
    expiry = int(username.split(":", 1)[0])
    if expiry < now:
        return False
    expected = base64.b64encode(
        hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()
    return hmac.compare_digest(expected, credential)


def test_credentials_match_known_vectors() -> None:
    # computed outside Python: printf '1700086400:live' | openssl dgst -sha1 -hmac SECRET -binary
    # | base64
    assert turn_credentials(SECRET, "live", 86400, NOW) == (
        "1700086400:live",
        "FBJ8YOiPyIoIf6jqLGOQFu8iwmI=",
    )
    assert turn_credentials(SECRET, "alice", 3600, NOW + 0.9) == (
        "1700003600:alice",
        "mQ2kk0sZoiEV+rzsWtRAfhjN8uE=",
    )


def test_credentials_recomputed_independently() -> None:
    username, credential = turn_credentials("another secret", "stream_1", 600, NOW)
    assert username == f"{NOW + 600}:stream_1"
    mac = hmac.new(b"another secret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == mac
    assert len(base64.b64decode(credential)) == 20  # SHA-1


def test_coturn_style_verification_accepts_until_expiry_only() -> None:
    username, credential = turn_credentials(SECRET, "live", 60, NOW)
    assert coturn_accepts(SECRET, username, credential, NOW)
    assert coturn_accepts(SECRET, username, credential, NOW + 60)
    assert not coturn_accepts(SECRET, username, credential, NOW + 61)  # expired
    assert not coturn_accepts("other secret", username, credential, NOW)
    forged = f"{NOW + 10**6}:live"  # a later expiry does not keep the credential valid
    assert not coturn_accepts(SECRET, forged, credential, NOW)


def test_turn_urls_get_credentials_stun_urls_do_not() -> None:
    config = Config(
        ice_servers=("stun:stun.example.org:3478", "turn:t.example.org:3478?transport=udp",
                     "turns:t.example.org:5349"),
        turn_secret=SECRET,
        turn_ttl=3600,
    )  # fmt: skip
    servers = client_ice_servers(config, "live", now=NOW)
    username, credential = turn_credentials(SECRET, "live", 3600, NOW)
    assert servers == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:t.example.org:3478?transport=udp", "username": username,
         "credential": credential},
        {"urls": "turns:t.example.org:5349", "username": username, "credential": credential},
    ]  # fmt: skip
    links = ice_link_headers(config, "live", now=NOW)
    assert links[0] == '<stun:stun.example.org:3478>; rel="ice-server"'
    assert links[1] == (
        f'<turn:t.example.org:3478?transport=udp>; rel="ice-server"; username="{username}"; '
        f'credential="{credential}"; credential-type="password"'
    )


def test_without_turn_secret_urls_only_and_default_clock() -> None:
    config = Config(ice_servers=("turn:t.example.org",))
    assert client_ice_servers(config, "live") == [{"urls": "turn:t.example.org"}]
    config = Config(ice_servers=("turn:t.example.org",), turn_secret=SECRET)
    before = int(time.time())
    username = client_ice_servers(config, "live")[0]["username"]
    expiry = int(username.split(":")[0])
    assert before + 86400 <= expiry <= int(time.time()) + 86400  # default ttl: one day


def test_turn_secret_needs_a_turn_url_and_a_sane_ttl() -> None:
    with pytest.raises(ConfigError, match="no --ice-server is a turn"):
        Config(ice_servers=("stun:s.example.org",), turn_secret=SECRET)
    with pytest.raises(ConfigError, match="turn_ttl"):
        Config(ice_servers=("turn:t.example.org",), turn_secret=SECRET, turn_ttl=10)
    with pytest.raises(ConfigError, match="must not be empty"):
        Config(ice_servers=("turn:t.example.org",), turn_secret="")
