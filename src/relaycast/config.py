"""One frozen :class:`Config`, built from flags, environment and a TOML file, nowhere else.

Precedence, highest first: command-line flags > ``RELAYCAST_*`` environment variables >
TOML file (``--config FILE`` / ``RELAYCAST_CONFIG``) > defaults.  A list-valued setting given
at a higher level replaces the whole list of a lower level (it is not merged).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import re
import secrets
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "LOG_LEVELS",
    "MAX_WORKERS",
    "MIN_KEYFRAME_INTERVAL",
    "MIN_TOKEN_SECRET_BYTES",
    "STREAM_NAME_RE",
    "Config",
    "ConfigError",
    "load_config",
    "parse_stream_keys",
    "valid_stream_name",
]

#: Stream names as they appear in ``/whip/{stream}``, ``/watch/{stream}`` and key names.
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ICE_URL_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
ENV_PREFIX = "RELAYCAST_"
#: Smallest ``keyframe_interval``: below it, viewers could make the publisher send keyframes
#: back to back (0 used to disable coalescing altogether).
MIN_KEYFRAME_INTERVAL = 0.1
#: Shortest ``token_secret``: an HS256 key shorter than the hash output (32 bytes) is weaker
#: than the algorithm (RFC 7518 §3.2).
MIN_TOKEN_SECRET_BYTES = 32
#: Most worker processes: a worker's index is the first character of its ICE ufrags, one of
#: the 64 ice-chars (RFC 8839 §5.4).
MAX_WORKERS = 64
#: Default lifetime of TURN REST credentials handed to clients (seconds).
DEFAULT_TURN_TTL = 86400
#: Whole-number settings that must be >= 1.
_LIMIT_COUNTS = (
    "max_sessions",
    "max_sessions_per_ip",
    "max_viewers_per_stream",
    "max_streams",
    "whep_burst",
    "bad_key_limit",
)


class ConfigError(ValueError):
    """A setting has a value relaycast cannot use; the message says which and why."""


def valid_stream_name(name: str) -> bool:
    """True when *name* is a usable stream name: 1-64 of ``A-Z a-z 0-9 _ -``."""
    return bool(STREAM_NAME_RE.fullmatch(name))


def _empty_keys() -> Mapping[str, str]:
    return MappingProxyType({})


def _empty_flags() -> Mapping[str, bool]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Config:
    """Every setting of a relaycast server.  Immutable; build it with :func:`load_config`.

    ``stream_keys`` maps a stream name to its publish secret.  When it is empty a
    ``generated_key`` (valid for any stream name) is made at construction, unless one is given.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    udp_port: int = 8443
    public_ips: tuple[str, ...] = ()
    #: None: advertise interface addresses only when no public IP is configured.
    host_candidates: bool | None = None
    stream_keys: Mapping[str, str] = field(default_factory=_empty_keys, hash=False)
    generated_key: str | None = None
    ice_servers: tuple[str, ...] = ()
    #: ICE over TCP (RFC 6544 passive candidates) on the media port number
    ice_tcp: bool = True
    #: send each viewer playout-delay hints from its loss and jitter (media/feedback)
    playout_delay: bool = True
    max_bitrate: int = 10_000_000
    keyframe_interval: float = 0.5
    consent_timeout: float = 30.0
    handshake_timeout: float = 10.0
    log_level: str = "info"
    web_root: str | None = None
    # Admission limits (relaycast.http.limits); every viewer is anonymous.
    max_sessions: int = 5000
    max_sessions_per_ip: int = 50
    max_viewers_per_stream: int = 2000
    max_streams: int = 200
    whep_rate: float = 10.0
    whep_burst: int = 20
    bad_key_limit: int = 10
    bad_key_window: float = 60.0
    trust_proxy: bool = False
    # HTTPS: a PEM certificate chain and key (reloaded on SIGHUP), or a self-signed one.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_self_signed: bool = False
    # Private streams: WHEP needs a viewer token (JWT HS256 signed with token_secret).
    private_streams: tuple[str, ...] = ()
    token_secret: str | None = field(default=None, repr=False)
    # TURN REST credentials (coturn use-auth-secret) for the turn:/turns: ice_servers.
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = DEFAULT_TURN_TTL
    # Recording (relaycast.media.recording): every stream under this directory, unless its
    # ``[streams.NAME] record = false`` in the TOML file says otherwise.
    record_dir: str | None = None
    record_streams: Mapping[str, bool] = field(default_factory=_empty_flags, hash=False)
    # Cluster (relaycast.cluster): a Redis registry shared by the nodes, this node's URL as the
    # others reach it, the secret that authenticates node-to-node traffic, 307 to idler nodes.
    cluster: str | None = field(default=None, repr=False)  # the URL may carry a password
    node_url: str | None = None
    cluster_secret: str | None = field(default=None, repr=False)
    cluster_redirect: bool = False
    #: worker processes (relaycast.workers); None: one per core this process may run on
    workers: int | None = None

    def __post_init__(self) -> None:
        # Normalise containers so the object is truly immutable, whatever the caller passed.
        keys = dict(self.stream_keys)
        for name, secret in keys.items():
            _check_key_pair(name, secret, "stream_keys")
        object.__setattr__(self, "stream_keys", MappingProxyType(keys))
        object.__setattr__(self, "public_ips", tuple(self.public_ips))
        object.__setattr__(self, "ice_servers", tuple(self.ice_servers))
        if keys:
            object.__setattr__(self, "generated_key", None)
        elif self.generated_key is None:
            object.__setattr__(self, "generated_key", secrets.token_urlsafe(24))
        elif not self.generated_key:
            raise ConfigError("generated_key must not be empty")

        if not isinstance(self.host, str) or not self.host.strip():
            raise ConfigError("host must be a host name or IP address, got an empty value")
        _check_port(self.port, "port")
        _check_port(self.udp_port, "udp_port")
        for ip in self.public_ips:
            _check_ip(ip, "public_ips")
        for url in self.ice_servers:
            _check_ice_url(url, "ice_servers")
        if not isinstance(self.max_bitrate, int) or self.max_bitrate <= 0:
            raise ConfigError(
                f"max_bitrate must be a positive number of bit/s, got {self.max_bitrate!r}"
            )
        if self.host_candidates is not None and not isinstance(self.host_candidates, bool):
            raise ConfigError(
                f"{_spell('host_candidates')} must be true or false, got {self.host_candidates!r}"
            )
        if not self.keyframe_interval >= MIN_KEYFRAME_INTERVAL:  # also refuses NaN
            raise ConfigError(
                f"{_spell('keyframe_interval')} must be at least {MIN_KEYFRAME_INTERVAL} seconds "
                f"(it spaces the keyframe requests viewers cause), got {self.keyframe_interval!r}"
            )
        _check_positive(self.consent_timeout, "consent_timeout", "seconds")
        _check_positive(self.handshake_timeout, _spell("handshake_timeout"), "seconds")
        for name in _LIMIT_COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{_spell(name)} must be a whole number >= 1, got {value!r}")
        _check_positive(self.whep_rate, _spell("whep_rate"), "requests per second")
        _check_positive(self.bad_key_window, _spell("bad_key_window"), "seconds")
        if not isinstance(self.trust_proxy, bool):
            raise ConfigError(
                f"{_spell('trust_proxy')} must be true or false, got {self.trust_proxy!r}"
            )
        if not isinstance(self.ice_tcp, bool):
            raise ConfigError(f"{_spell('ice_tcp')} must be true or false, got {self.ice_tcp!r}")
        if not isinstance(self.playout_delay, bool):
            raise ConfigError(
                f"{_spell('playout_delay')} must be true or false, got {self.playout_delay!r}"
            )
        object.__setattr__(self, "record_streams", MappingProxyType(dict(self.record_streams)))
        if self.record_dir is not None and not str(self.record_dir).strip():
            raise ConfigError(f"{_spell('record_dir')} must be a directory, got an empty value")
        wanted = sorted(name for name, on in self.record_streams.items() if on)
        if wanted and self.record_dir is None:
            raise ConfigError(
                f"[streams.{wanted[0]}] record = true needs {_spell('record_dir')}: "
                "where to write the files"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        self._check_internet_settings()
        self._check_cluster_settings()
        if self.workers is not None and (
            isinstance(self.workers, bool)
            or not isinstance(self.workers, int)
            or not 1 <= self.workers <= MAX_WORKERS
        ):
            raise ConfigError(
                f"{_spell('workers')} must be a whole number from 1 to {MAX_WORKERS}, "
                f"got {self.workers!r}"
            )
        if self.cluster is not None and self.workers is not None and self.workers > 1:
            raise ConfigError(
                f"{_spell('cluster')} runs one worker per node for now: "
                f"drop {_spell('workers')} or set it to 1"
            )

    @property
    def worker_count(self) -> int:
        """How many worker processes serve: ``workers``, else one per usable core (at most
        :data:`MAX_WORKERS`)."""
        if self.workers is not None:
            return self.workers
        if self.cluster is not None:
            return 1  # a cluster node is one process for now (design.md, "Cluster")
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_WORKERS))

    def _check_cluster_settings(self) -> None:
        """``--cluster``, ``--node-url``, ``--cluster-secret``, ``--cluster-redirect``."""
        if not isinstance(self.cluster_redirect, bool):
            raise ConfigError(
                f"{_spell('cluster_redirect')} must be true or false, got {self.cluster_redirect!r}"
            )
        if self.cluster is None:
            for name in ("node_url", "cluster_secret"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{_spell(name)} only applies with --cluster redis://...")
            if self.cluster_redirect:
                raise ConfigError("--cluster-redirect only applies with --cluster redis://...")
            return
        if not isinstance(self.cluster, str) or not self.cluster.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"{_spell('cluster')} must be a Redis URL such as redis://10.0.0.5:6379/0 "
                "(rediss:// for TLS, unix:///path/redis.sock)"
            )
        node = self.node_url
        if not node:
            raise ConfigError(
                "--cluster needs --node-url (RELAYCAST_NODE_URL): the URL the other nodes and "
                "redirected viewers reach this node at, e.g. http://10.0.0.2:8080"
            )
        parts = urllib.parse.urlsplit(node)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                f"{_spell('node_url')} must be http(s)://HOST[:PORT] with no path, got {node!r}"
            )
        object.__setattr__(self, "node_url", node.rstrip("/"))
        secret = self.cluster_secret
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            raise ConfigError(
                f"{_spell('cluster_secret')} must be at least 16 characters; make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )

    def _check_internet_settings(self) -> None:
        """TLS, private streams and TURN credentials (issue 11)."""
        object.__setattr__(self, "private_streams", tuple(dict.fromkeys(self.private_streams)))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError(
                "tls_cert (--tls-cert) and tls_key (--tls-key) go together: give both PEM "
                "files, the certificate chain and its private key"
            )
        if not isinstance(self.tls_self_signed, bool):
            raise ConfigError(
                f"{_spell('tls_self_signed')} must be true or false, got {self.tls_self_signed!r}"
            )
        if self.tls_self_signed and self.tls_cert:
            raise ConfigError(
                "--tls-self-signed and --tls-cert/--tls-key exclude each other: "
                "use your certificate, or let relaycast make one"
            )
        for name in self.private_streams:
            if not isinstance(name, str) or not valid_stream_name(name):
                raise ConfigError(
                    f"private_streams (--private-stream / RELAYCAST_PRIVATE_STREAM): stream "
                    f"name {name!r} is invalid; use 1-64 letters, digits, '_' or '-'"
                )
            if self.stream_keys and name not in self.stream_keys:
                raise ConfigError(
                    f"private stream {name!r} has no publish key, so nobody could publish it; "
                    f"add --stream-key {name}=SECRET"
                )
        for secret_name in ("token_secret", "turn_secret"):
            value = getattr(self, secret_name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{_spell(secret_name)} must not be empty")
        if self.private_streams and self.token_secret is None:
            raise ConfigError(
                f"private stream(s) {', '.join(self.private_streams)} need a token secret to "
                "check viewer tokens: set --token-secret (RELAYCAST_TOKEN_SECRET, TOML "
                "token_secret) to a random string of at least "
                f"{MIN_TOKEN_SECRET_BYTES} characters"
            )
        if (
            self.token_secret is not None
            and len(self.token_secret.encode("utf-8", "surrogatepass")) < MIN_TOKEN_SECRET_BYTES
        ):
            raise ConfigError(
                f"{_spell('token_secret')} must be at least {MIN_TOKEN_SECRET_BYTES} bytes "
                "(an HS256 key shorter than its hash is weaker than the algorithm, RFC 7518 "
                "§3.2); make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if isinstance(self.turn_ttl, bool) or not isinstance(self.turn_ttl, int):
            raise ConfigError(f"{_spell('turn_ttl')} must be whole seconds, got {self.turn_ttl!r}")
        if self.turn_ttl < 60:
            raise ConfigError(
                f"{_spell('turn_ttl')} must be at least 60 seconds, got {self.turn_ttl!r}"
            )
        if self.turn_secret is not None and not self.turn_urls():
            raise ConfigError(
                "turn_secret (--turn-secret) makes credentials for TURN servers, but no "
                "--ice-server is a turn: or turns: URL; add e.g. "
                "--ice-server turn:turn.example.org:3478"
            )

    # -- TLS, private streams, TURN -------------------------------------------------------

    @property
    def tls_enabled(self) -> bool:
        """True when the HTTP side serves HTTPS (a configured or a self-signed certificate)."""
        return bool(self.tls_cert) or self.tls_self_signed

    @property
    def scheme(self) -> str:
        """``https`` with TLS on, else ``http``."""
        return "https" if self.tls_enabled else "http"

    def is_private(self, stream: str) -> bool:
        """True when viewers of *stream* need a token."""
        return stream in self.private_streams

    def turn_urls(self) -> tuple[str, ...]:
        """The ``turn:``/``turns:`` URLs among ``ice_servers``."""
        return tuple(u for u in self.ice_servers if u.startswith(("turn:", "turns:")))

    # -- addresses ------------------------------------------------------------------------

    def host_ip(self) -> str | None:
        """``host`` when it is one IP address other than a wildcard, else None."""
        try:
            ip = ipaddress.ip_address(self.host.strip().strip("[]"))
        except ValueError:
            return None  # a host name
        return None if ip.is_unspecified else str(ip)

    def media_bind_host(self) -> str:
        """The IP to bind the media UDP socket to: ``host`` when it is a specific IP address,
        else ``""`` (every interface, for ``0.0.0.0``, ``::`` or a host name)."""
        return self.host_ip() or ""

    def advertises_host_candidates(self) -> bool:
        """Whether interface addresses are ICE candidates: ``host_candidates`` when set,
        else only when no public IP is configured (RFC 8445 §5.1.1.1)."""
        if self.host_candidates is None:
            return not self.public_ips
        return self.host_candidates

    # -- publish keys -------------------------------------------------------------------

    def key_for(self, stream: str) -> str | None:
        """The secret that publishes *stream*, or None when nobody may publish it.

        With configured keys only the named streams exist; without, the generated key
        publishes any valid stream name.
        """
        if not valid_stream_name(stream):
            return None
        if self.stream_keys:
            return self.stream_keys.get(stream)
        return self.generated_key

    def check_key(self, stream: str, presented: str) -> bool:
        """True when *presented* is the publish key of *stream* (constant-time comparison)."""
        expected = self.key_for(stream)
        given = presented.encode("utf-8", "surrogatepass")
        if expected is None:
            # Same amount of work as a real comparison, then refuse.
            hmac.compare_digest(given, given)
            return False
        return hmac.compare_digest(given, expected.encode("utf-8", "surrogatepass"))

    def records(self, stream: str) -> bool:
        """Whether broadcasts of *stream* are recorded (``record_dir`` set, and not turned
        off for it with ``[streams.NAME] record = false``)."""
        return self.record_dir is not None and self.record_streams.get(stream, True)

    def web_dir(self) -> Path:
        """Directory the pages are served from: ``web_root`` or the packaged ``web/``."""
        if self.web_root:
            return Path(self.web_root)
        return Path(__file__).resolve().parent / "web"


# -- value checks / parsers ----------------------------------------------------------------


def _spell(field_name: str) -> str:
    """A setting as people may have written it: ``name (--flag / RELAYCAST_NAME)``."""
    env = ENV_PREFIX + field_name.upper()
    return f"{field_name} ({_flag_name(field_name)} / {env})"


def _check_positive(value: object, where: str, unit: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not value > 0
        or value == float("inf")
    ):
        raise ConfigError(f"{where} must be a number of {unit} > 0, got {value!r}")


def _check_port(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be an integer between 0 and 65535, got {value!r}")


def _check_ip(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(
            f"{where}: {value!r} is not an IPv4 or IPv6 address (host names are not accepted)"
        ) from None


def _check_ice_url(value: str, where: str) -> None:
    if not isinstance(value, str) or not value.startswith(ICE_URL_SCHEMES) or ":" not in value:
        raise ConfigError(
            f"{where}: {value!r} is not a STUN/TURN URL; expected e.g. 'stun:stun.example.org:3478'"
        )


def _check_key_pair(name: str, secret: str, where: str) -> None:
    if not isinstance(name, str) or not valid_stream_name(name):
        raise ConfigError(
            f"{where}: stream name {name!r} is invalid; use 1-64 letters, digits, '_' or '-'"
        )
    if not isinstance(secret, str) or not secret:
        raise ConfigError(f"{where}: the secret for stream {name!r} is empty")


def parse_stream_keys(items: Iterable[str], where: str = "--stream-key") -> dict[str, str]:
    """Parse ``NAME=SECRET`` items into a dict; a repeated NAME is an error."""
    keys: dict[str, str] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        name, sep, secret = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"{where}: expected NAME=SECRET, got {item!r} (no '=')")
        _check_key_pair(name, secret, where)
        if name in keys:
            raise ConfigError(f"{where}: stream {name!r} is given a key twice")
        keys[name] = secret
    return keys


def _as_int(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} must be an integer, got {value!r}") from None


def _as_port(value: object, where: str) -> int:
    port = _as_int(value, where)
    _check_port(port, where)
    return port


def _as_float(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} must be a number, got {value!r}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _as_bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _as_str_list(value: object, where: str) -> list[str]:
    """A list of strings from a list/tuple or a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            out.extend(_as_str_list(_as_str(item, where), where))
        return out
    raise ConfigError(f"{where} must be a string or a list of strings, got {value!r}")


# Settings: name -> (parser, flag, env var).  Names are the Config field names.
_SCALARS: dict[str, Any] = {
    "host": _as_str,
    "port": _as_port,
    "udp_port": _as_port,
    "host_candidates": _as_bool,
    "max_bitrate": _as_int,
    "keyframe_interval": _as_float,
    "consent_timeout": _as_float,
    "handshake_timeout": _as_float,
    "log_level": lambda v, w: _as_str(v, w).strip().lower(),
    "web_root": _as_str,
    "max_sessions": _as_int,
    "max_sessions_per_ip": _as_int,
    "max_viewers_per_stream": _as_int,
    "max_streams": _as_int,
    "whep_rate": _as_float,
    "whep_burst": _as_int,
    "bad_key_limit": _as_int,
    "bad_key_window": _as_float,
    "trust_proxy": _as_bool,
    "record_dir": _as_str,
    "ice_tcp": _as_bool,
    "playout_delay": _as_bool,
    "tls_cert": _as_str,
    "tls_key": _as_str,
    "tls_self_signed": _as_bool,
    "token_secret": _as_str,
    "turn_secret": _as_str,
    "turn_ttl": _as_int,
    "cluster": _as_str,
    "node_url": _as_str,
    "cluster_secret": _as_str,
    "cluster_redirect": _as_bool,
    "workers": _as_int,
}
_LISTS = ("public_ips", "ice_servers", "private_streams")

# Flag dest (argparse) -> Config field.
_FLAG_DESTS = {
    "host": "host",
    "port": "port",
    "udp_port": "udp_port",
    "public_ip": "public_ips",
    "public_ips": "public_ips",
    "host_candidates": "host_candidates",
    "ice_server": "ice_servers",
    "ice_servers": "ice_servers",
    "max_bitrate": "max_bitrate",
    "keyframe_interval": "keyframe_interval",
    "consent_timeout": "consent_timeout",
    "handshake_timeout": "handshake_timeout",
    "log_level": "log_level",
    "web_root": "web_root",
    "max_sessions": "max_sessions",
    "max_sessions_per_ip": "max_sessions_per_ip",
    "max_viewers_per_stream": "max_viewers_per_stream",
    "max_streams": "max_streams",
    "whep_rate": "whep_rate",
    "whep_burst": "whep_burst",
    "bad_key_limit": "bad_key_limit",
    "bad_key_window": "bad_key_window",
    "trust_proxy": "trust_proxy",
    "record_dir": "record_dir",
    "ice_tcp": "ice_tcp",
    "playout_delay": "playout_delay",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "tls_self_signed": "tls_self_signed",
    "private_stream": "private_streams",
    "private_streams": "private_streams",
    "token_secret": "token_secret",
    "turn_secret": "turn_secret",
    "turn_ttl": "turn_ttl",
    "cluster": "cluster",
    "node_url": "node_url",
    "cluster_secret": "cluster_secret",
    "cluster_redirect": "cluster_redirect",
    "workers": "workers",
}
# TOML keys accept the flag spelling and the field spelling.
_TOML_KEYS = {
    **_FLAG_DESTS,
    "stream_keys": "stream_keys",
    "stream_key": "stream_keys",
    "streams": "streams",
}
# Environment variable -> Config field.
_ENV_VARS = {
    "RELAYCAST_HOST": "host",
    "RELAYCAST_PORT": "port",
    "RELAYCAST_UDP_PORT": "udp_port",
    "RELAYCAST_PUBLIC_IP": "public_ips",
    "RELAYCAST_HOST_CANDIDATES": "host_candidates",
    "RELAYCAST_ICE_SERVER": "ice_servers",
    "RELAYCAST_MAX_BITRATE": "max_bitrate",
    "RELAYCAST_KEYFRAME_INTERVAL": "keyframe_interval",
    "RELAYCAST_CONSENT_TIMEOUT": "consent_timeout",
    "RELAYCAST_HANDSHAKE_TIMEOUT": "handshake_timeout",
    "RELAYCAST_LOG_LEVEL": "log_level",
    "RELAYCAST_WEB_ROOT": "web_root",
    "RELAYCAST_MAX_SESSIONS": "max_sessions",
    "RELAYCAST_MAX_SESSIONS_PER_IP": "max_sessions_per_ip",
    "RELAYCAST_MAX_VIEWERS_PER_STREAM": "max_viewers_per_stream",
    "RELAYCAST_MAX_STREAMS": "max_streams",
    "RELAYCAST_WHEP_RATE": "whep_rate",
    "RELAYCAST_WHEP_BURST": "whep_burst",
    "RELAYCAST_BAD_KEY_LIMIT": "bad_key_limit",
    "RELAYCAST_BAD_KEY_WINDOW": "bad_key_window",
    "RELAYCAST_TRUST_PROXY": "trust_proxy",
    "RELAYCAST_RECORD_DIR": "record_dir",
    "RELAYCAST_ICE_TCP": "ice_tcp",
    "RELAYCAST_PLAYOUT_DELAY": "playout_delay",
    "RELAYCAST_TLS_CERT": "tls_cert",
    "RELAYCAST_TLS_KEY": "tls_key",
    "RELAYCAST_TLS_SELF_SIGNED": "tls_self_signed",
    "RELAYCAST_PRIVATE_STREAM": "private_streams",
    "RELAYCAST_TOKEN_SECRET": "token_secret",
    "RELAYCAST_TURN_SECRET": "turn_secret",
    "RELAYCAST_TURN_TTL": "turn_ttl",
    "RELAYCAST_CLUSTER": "cluster",
    "RELAYCAST_NODE_URL": "node_url",
    "RELAYCAST_CLUSTER_SECRET": "cluster_secret",
    "RELAYCAST_CLUSTER_REDIRECT": "cluster_redirect",
    "RELAYCAST_WORKERS": "workers",
}
ENV_STREAM_KEY = "RELAYCAST_STREAM_KEY"
ENV_CONFIG = "RELAYCAST_CONFIG"


def _parse_setting(field_name: str, value: object, where: str) -> object:
    if field_name in _LISTS:
        return tuple(_as_str_list(value, where))
    parser = _SCALARS[field_name]
    return parser(value, where)


def _from_toml(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None

    unknown = sorted(set(data) - set(_TOML_KEYS))
    if unknown:
        raise ConfigError(
            f"config file {path!r}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(sorted(set(_TOML_KEYS.values())))}"
        )
    settings: dict[str, object] = {}
    for key, value in data.items():
        field_name = _TOML_KEYS[key]
        where = f"{path}: {key}"
        if field_name == "stream_keys":
            if not isinstance(value, dict):
                raise ConfigError(f'{where} must be a table, e.g. [stream_keys] live = "secret"')
            keys: dict[str, str] = {}
            for name, secret in value.items():
                _check_key_pair(name, secret, where)
                keys[name] = secret
            settings["stream_keys"] = keys
        elif field_name == "streams":
            _stream_tables(value, where, settings)
        else:
            settings[field_name] = _parse_setting(field_name, value, where)
    from_tables = settings.pop(_PRIVATE_FROM_TABLES, None)
    if isinstance(from_tables, list):
        listed = settings.get("private_streams", ())
        assert isinstance(listed, tuple)
        settings["private_streams"] = (*listed, *from_tables)
    return settings


_PRIVATE_FROM_TABLES = "_private_from_tables"


def _stream_private(settings: dict[str, object], name: str, value: object, where: str) -> None:
    if _as_bool(value, where):
        names = settings.setdefault(_PRIVATE_FROM_TABLES, [])
        assert isinstance(names, list)
        names.append(name)


def _stream_record(settings: dict[str, object], name: str, value: object, where: str) -> None:
    record = settings.setdefault("record_streams", {})
    assert isinstance(record, dict)
    record[name] = _as_bool(value, where)


#: Per-stream TOML options (``[streams.NAME] option = value``): option -> handler that puts
#: the value into the settings.  Each feature adds its own option here.
_STREAM_OPTIONS: dict[str, Callable[[dict[str, object], str, object, str], None]] = {
    "private": _stream_private,
    "record": _stream_record,
}


def _stream_tables(value: object, where: str, settings: dict[str, object]) -> None:
    """``[streams.NAME]`` tables: per-stream options (``private = true`` ...)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table of tables, e.g. [streams.live] private = true")
    for name, options in value.items():
        if not valid_stream_name(name):
            raise ConfigError(
                f"{where}: stream name {name!r} is invalid; use 1-64 letters, digits, '_' or '-'"
            )
        if not isinstance(options, dict):
            raise ConfigError(f"{where}.{name} must be a table, e.g. [streams.{name}]")
        for option, option_value in options.items():
            handler = _STREAM_OPTIONS.get(option)
            if handler is None:
                raise ConfigError(
                    f"{where}.{name}: unknown option {option!r}; known options are "
                    f"{', '.join(sorted(_STREAM_OPTIONS))}"
                )
            handler(settings, name, option_value, f"{where}.{name}.{option}")


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    settings: dict[str, object] = {}
    for var, field_name in _ENV_VARS.items():
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        settings[field_name] = _parse_setting(field_name, raw, var)
    raw_keys = env.get(ENV_STREAM_KEY)
    if raw_keys is not None and raw_keys.strip():
        settings["stream_keys"] = parse_stream_keys(raw_keys.split(","), ENV_STREAM_KEY)
    return settings


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _from_flags(flags: Mapping[str, object]) -> dict[str, object]:
    settings: dict[str, object] = {}
    for dest, value in flags.items():
        if value is None or dest in ("config", "command", "func"):
            continue
        if dest == "stream_key":
            items = [value] if isinstance(value, str) else list(_iter_strs(value, "--stream-key"))
            if items:
                settings["stream_keys"] = parse_stream_keys(items, "--stream-key")
            continue
        field_name = _FLAG_DESTS.get(dest)
        if field_name is None:
            continue  # belongs to another subcommand
        if field_name in _LISTS and isinstance(value, list | tuple) and not value:
            continue
        settings[field_name] = _parse_setting(field_name, value, _flag_name(dest))
    return settings


def _iter_strs(value: object, where: str) -> Iterable[str]:
    if isinstance(value, list | tuple):
        return [_as_str(v, where) for v in value]
    raise ConfigError(f"{where} must be a list of NAME=SECRET strings, got {value!r}")


def load_config(
    flags: argparse.Namespace | Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: str | None = None,
) -> Config:
    """Build the :class:`Config` from flags > environment > TOML file > defaults.

    *flags* is an argparse namespace or a dict keyed by flag dest (``udp_port``,
    ``public_ip``, ``stream_key`` ...); ``None`` values mean "not given".  *env* defaults
    to ``os.environ``.  The TOML file is *toml_path*, else the ``config`` flag, else
    ``RELAYCAST_CONFIG``.  Raises :class:`ConfigError` with a message a person can act on.
    """
    flag_map: Mapping[str, object]
    if flags is None:
        flag_map = {}
    elif isinstance(flags, argparse.Namespace):
        flag_map = vars(flags)
    else:
        flag_map = flags
    environ: Mapping[str, str] = os.environ if env is None else env

    path = toml_path
    if path is None:
        flag_path = flag_map.get("config")
        path = str(flag_path) if flag_path else None
    if path is None and environ.get(ENV_CONFIG, "").strip():
        path = environ[ENV_CONFIG].strip()

    merged: dict[str, object] = {}
    if path is not None:
        merged.update(_from_toml(path))
    merged.update(_from_env(environ))
    merged.update(_from_flags(flag_map))
    return Config(**merged)  # type: ignore[arg-type]
