"""Viewer tokens for private streams, and who may see a private stream in the API.

A viewer token is a JWT (RFC 7519) signed with HS256 and the server's ``token_secret``; its
``sub`` claim names the stream and ``exp`` ends it.  ``POST /whep/{stream}`` on a private
stream takes it as ``Authorization: Bearer <jwt>`` or, for players that cannot set headers,
as ``?token=<jwt>``: no token is 401 (with ``WWW-Authenticate: Bearer``), a token with a bad
signature, past its ``exp`` or for another stream is 403.

Private streams stay out of ``/api/streams``, ``/api/events`` and the ``/metrics`` stream
labels unless the request carries the stream's publish key as ``Authorization: Bearer``.
Tokens and keys are never logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from relaycast.config import Config
from relaycast.http.problems import ProblemError

__all__ = [
    "ALGORITHM",
    "TokenError",
    "bearer",
    "check_viewer_token",
    "make_viewer_token",
    "require_viewer_token",
    "verify_viewer_token",
    "visible_streams",
]

#: The only algorithm accepted: the list is passed explicitly to every decode, so a token
#: cannot choose ``none`` or an asymmetric algorithm keyed with our secret.
ALGORITHM = "HS256"
DEFAULT_TTL = 86400


class TokenError(ValueError):
    """A token that does not let its bearer watch; ``reason`` says why, for the 403 detail."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def make_viewer_token(secret: str, stream: str, ttl: int, now: float | None = None) -> str:
    """A viewer token for *stream*, valid for *ttl* seconds from *now*."""
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl!r}")
    issued = int(time.time() if now is None else now)
    claims = {"sub": stream, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True)
class ViewerClaims:
    stream: str
    expires: int


def verify_viewer_token(
    secret: str, stream: str, token: str, now: float | None = None
) -> ViewerClaims:
    """The claims of *token* when it lets its bearer watch *stream*; else :class:`TokenError`.

    *now* (seconds since the epoch) is for tests; PyJWT checks ``exp`` against the clock
    otherwise.
    """
    options: jwt.types.Options = {"require": ["exp", "sub"], "verify_exp": now is None}
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=options)
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("the token's signature does not match this server's secret") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise TokenError("the token is not a valid HS256 JWT") from None
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise TokenError("the token's 'exp' claim is not a number of seconds")
    if now is not None and exp <= now:
        raise TokenError("the token has expired")
    if claims.get("sub") != stream:
        raise TokenError(f"the token is not for stream {stream!r}")
    return ViewerClaims(stream, exp)


def bearer(request: web.Request) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header, or None."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


def check_viewer_token(config: Config, stream: str, token: str | None) -> None:
    """401 without a token, 403 with one that does not let its bearer watch *stream*."""
    if not token:
        raise ProblemError(
            401,
            "Viewer token required",
            f"{stream!r} is a private stream: send a viewer token as 'Authorization: Bearer "
            "<token>' or append ?token=<token> to the WHEP URL (the streamer makes one with "
            "'relaycast token NAME')",
            headers={"WWW-Authenticate": 'Bearer realm="relaycast"'},
        )
    secret = config.token_secret
    if secret is None:  # Config refuses private streams without a secret; never reached
        raise ProblemError(403, "Viewer token refused", "this server checks no viewer tokens")
    try:
        verify_viewer_token(secret, stream, token)
    except TokenError as exc:
        raise ProblemError(
            403,
            "Viewer token refused",
            f"{exc.reason}; ask the streamer for a new watch link",
            headers={"WWW-Authenticate": 'Bearer realm="relaycast", error="invalid_token"'},
        ) from None


def require_viewer_token(request: web.Request, config: Config, stream: str) -> None:
    """On a private stream, the WHEP POST's token (header, else ``?token=``) must be good."""
    if not config.is_private(stream):
        return
    token = bearer(request) or request.query.get("token", "").strip() or None
    check_viewer_token(config, stream, token)


def presents_key_for(request: web.Request, config: Config, stream: str) -> bool:
    """True when the request carries *stream*'s publish key as a Bearer credential."""
    key = bearer(request)
    return key is not None and config.check_key(stream, key)


def visible_streams(request: web.Request, config: Config, names: list[str]) -> set[str]:
    """Which of *names* this request may see: every public stream, and the private ones whose
    publish key it presents."""
    key = bearer(request)
    return {
        name
        for name in names
        if not config.is_private(name) or (key is not None and config.check_key(name, key))
    }
