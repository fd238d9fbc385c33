"""Viewer tokens: JWT HS256 with ``sub`` = stream and ``exp``; only HS256 is accepted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from relaycast.http.tokens import TokenError, make_viewer_token, verify_viewer_token

SECRET = "a-token-secret-of-at-least-32-bytes!!"
NOW = 1_700_000_000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(claims: dict[str, object], secret: str = SECRET, alg: str = "HS256") -> str:
    """A JWT built by hand (RFC 7519 §7.1), independent of PyJWT."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    signature = b64url(hmac.new(secret.encode(), signing_input, digest).digest())
    return f"{header}.{payload}.{signature}"


def test_made_token_is_hs256_with_sub_and_exp() -> None:
    token = make_viewer_token(SECRET, "live", 600, now=NOW)
    header_b64, payload_b64, signature_b64 = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    header = json.loads(base64.urlsafe_b64decode(pad(header_b64)))
    payload = json.loads(base64.urlsafe_b64decode(pad(payload_b64)))
    assert header["alg"] == "HS256"
    assert payload["sub"] == "live"
    assert payload["exp"] == NOW + 600
    expected = hmac.new(
        SECRET.encode(), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
    ).digest()
    assert base64.urlsafe_b64decode(pad(signature_b64)) == expected
    claims = verify_viewer_token(SECRET, "live", token, now=NOW + 599)
    assert (claims.stream, claims.expires) == ("live", NOW + 600)


def test_hand_made_token_is_accepted() -> None:
    token = hand_made({"sub": "live", "exp": NOW + 10})
    assert verify_viewer_token(SECRET, "live", token, now=NOW).stream == "live"


def test_token_lives_until_exp_against_the_real_clock() -> None:
    good = make_viewer_token(SECRET, "live", 60)
    assert verify_viewer_token(SECRET, "live", good).stream == "live"
    expired = hand_made({"sub": "live", "exp": int(time.time()) - 5})
    with pytest.raises(TokenError, match="expired"):
        verify_viewer_token(SECRET, "live", expired)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hand_made({"sub": "live", "exp": NOW}), "expired"),
        (hand_made({"sub": "live", "exp": NOW - 1}), "expired"),
        (hand_made({"sub": "other", "exp": NOW + 60}), "not for stream 'live'"),
        (hand_made({"sub": "live", "exp": NOW + 60}, secret="x" * 40), "signature"),
        (hand_made({"exp": NOW + 60}), "'sub'"),
        (hand_made({"sub": "live"}), "'exp'"),
        (hand_made({"sub": "live", "exp": NOW + 60}, alg="HS512"), "not a valid"),
        ("not.a.jwt", "not a valid"),
        ("", "not a valid"),
    ],
)
def test_refused_tokens(token: str, reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        verify_viewer_token(SECRET, "live", token, now=NOW)


def test_alg_none_is_refused() -> None:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "live", "exp": NOW + 60}).encode())
    with pytest.raises(TokenError):
        verify_viewer_token(SECRET, "live", f"{header}.{payload}.", now=NOW)


def test_tampered_payload_is_refused() -> None:
    token = make_viewer_token(SECRET, "live", 600, now=NOW)
    header, _payload, signature = token.split(".")
    forged = b64url(json.dumps({"sub": "live", "exp": NOW + 10**6}).encode())
    with pytest.raises(TokenError, match="signature"):
        verify_viewer_token(SECRET, "live", f"{header}.{forged}.{signature}", now=NOW)


def test_pyjwt_round_trip_with_explicit_algorithms() -> None:
    token = make_viewer_token(SECRET, "cam_2", 60)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "cam_2"


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        make_viewer_token(SECRET, "live", 0)
