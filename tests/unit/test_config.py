"""Config: flags > env > TOML > defaults, clear errors, publish-key checks, banner, addresses."""

from __future__ import annotations

import dataclasses
import hmac
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import psutil
import pytest

from relaycast import cli
from relaycast.config import Config, ConfigError, load_config, valid_stream_name
from relaycast.net import addresses


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "relaycast.toml"
    path.write_text(text)
    return str(path)


# -- defaults and precedence ---------------------------------------------------------------


def test_defaults_without_any_source() -> None:
    config = load_config({}, env={})
    assert (config.host, config.port, config.udp_port) == ("127.0.0.1", 8080, 8443)
    assert config.public_ips == ()
    assert config.host_candidates is None  # automatic: on only without public IPs
    assert config.advertises_host_candidates() is True
    assert dict(config.stream_keys) == {}
    assert config.ice_servers == ()
    assert config.max_bitrate == 10_000_000
    assert config.keyframe_interval == 0.5
    assert config.consent_timeout == 30.0
    assert config.handshake_timeout == 10.0
    assert config.log_level == "info"
    assert (config.max_sessions, config.max_sessions_per_ip) == (5000, 50)
    assert (config.max_viewers_per_stream, config.max_streams) == (2000, 200)
    assert (config.whep_rate, config.whep_burst) == (10.0, 20)
    assert (config.bad_key_limit, config.bad_key_window) == (10, 60.0)
    assert config.trust_proxy is False
    # No keys configured: a random key is generated, long enough to resist guessing.
    assert config.generated_key is not None and len(config.generated_key) >= 32
    assert load_config({}, env={}).generated_key != config.generated_key


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'host = "10.1.1.1"\nport = 1000\nudp_port = 1001\nlog_level = "debug"\n'
        'public_ips = ["198.51.100.1"]\n',
    )
    env = {"RELAYCAST_PORT": "2000", "RELAYCAST_UDP_PORT": "2001"}
    flags = {"port": 3000, "udp_port": None, "public_ip": None}

    config = load_config(flags, env=env, toml_path=path)
    assert config.port == 3000  # flag
    assert config.udp_port == 2001  # env (flag not given)
    assert config.host == "10.1.1.1"  # toml
    assert config.log_level == "debug"  # toml
    assert config.public_ips == ("198.51.100.1",)  # toml
    assert config.keyframe_interval == 0.5  # default

    assert load_config({}, env=env, toml_path=path).port == 2000
    assert load_config({}, env={}, toml_path=path).port == 1000


def test_lists_from_higher_level_replace_lower(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'public_ip = ["198.51.100.1", "198.51.100.2"]\n')
    env = {"RELAYCAST_PUBLIC_IP": "203.0.113.7, 2001:db8::1"}
    assert load_config({}, env=env, toml_path=path).public_ips == ("203.0.113.7", "2001:db8::1")
    flags = {"public_ip": ["192.0.2.9"]}
    assert load_config(flags, env=env, toml_path=path).public_ips == ("192.0.2.9",)
    # An empty list from argparse means "not given".
    assert load_config({"public_ip": []}, env=env).public_ips == ("203.0.113.7", "2001:db8::1")


def test_stream_keys_from_each_source(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[stream_keys]\nlive = "from-toml"\nshow = "s3cret"\n')
    config = load_config({}, env={}, toml_path=path)
    assert dict(config.stream_keys) == {"live": "from-toml", "show": "s3cret"}
    assert config.generated_key is None

    env = {"RELAYCAST_STREAM_KEY": "live=from-env,b=x=y"}
    config = load_config({}, env=env, toml_path=path)
    assert dict(config.stream_keys) == {"live": "from-env", "b": "x=y"}

    config = load_config({"stream_key": ["live=from-flag"]}, env=env, toml_path=path)
    assert dict(config.stream_keys) == {"live": "from-flag"}


def test_config_file_from_flag_or_env(tmp_path: Path) -> None:
    a = write_toml(tmp_path, "port = 1111\n")
    b = tmp_path / "b.toml"
    b.write_text("port = 2222\n")
    assert load_config({}, env={"RELAYCAST_CONFIG": a}).port == 1111
    assert load_config({"config": str(b)}, env={"RELAYCAST_CONFIG": a}).port == 2222


def test_booleans_and_numbers_from_env() -> None:
    env = {
        "RELAYCAST_HOST_CANDIDATES": "false",
        "RELAYCAST_ICE_SERVER": "stun:stun.example.org:3478,turn:turn.example.org",
        "RELAYCAST_MAX_BITRATE": "2500000",
        "RELAYCAST_KEYFRAME_INTERVAL": "1.5",
        "RELAYCAST_CONSENT_TIMEOUT": "12",
        "RELAYCAST_LOG_LEVEL": "WARNING",
    }
    config = load_config({}, env=env)
    assert config.host_candidates is False
    assert config.ice_servers == ("stun:stun.example.org:3478", "turn:turn.example.org")
    assert config.max_bitrate == 2_500_000
    assert config.keyframe_interval == 1.5
    assert config.consent_timeout == 12.0
    assert config.log_level == "warning"
    assert load_config({}, env={"RELAYCAST_HOST_CANDIDATES": "1"}).host_candidates is True


def test_cli_parser_feeds_load_config() -> None:
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--port",
            "9000",
            "--udp-port",
            "9001",
            "--public-ip",
            "127.0.0.1",
            "--public-ip",
            "192.0.2.1",
            "--stream-key",
            "live=k1",
            "--stream-key",
            "b=k2",
            "--no-host-candidates",
            "--ice-server",
            "stun:stun.example.org",
            "--log-level",
            "debug",
        ]
    )
    config = load_config(args, env={"RELAYCAST_PORT": "1"})
    assert (config.port, config.udp_port) == (9000, 9001)
    assert config.public_ips == ("127.0.0.1", "192.0.2.1")
    assert dict(config.stream_keys) == {"live": "k1", "b": "k2"}
    assert config.host_candidates is False
    assert config.ice_servers == ("stun:stun.example.org",)
    assert config.log_level == "debug"
    # Flags left out leave lower levels in charge.
    args = cli.build_parser().parse_args(["serve"])
    assert load_config(args, env={"RELAYCAST_HOST_CANDIDATES": "no"}).host_candidates is False


def test_config_is_immutable() -> None:
    config = load_config({"stream_key": ["live=a"]}, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stream_keys["live"] = "b"  # type: ignore[index]
    # A dict given directly is copied, so the caller cannot change it afterwards.
    keys = {"live": "a"}
    direct = Config(stream_keys=keys)
    keys["live"] = "changed"
    assert direct.stream_keys["live"] == "a"


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"RELAYCAST_PORT": "http"}, "RELAYCAST_PORT must be an integer"),
        ({"port": 70000}, {}, "--port must be an integer between 0 and 65535"),
        ({"udp_port": -1}, {}, "--udp-port must be an integer between 0 and 65535"),
        ({"stream_key": ["live"]}, {}, "expected NAME=SECRET"),
        ({"stream_key": ["live="]}, {}, "secret for stream 'live' is empty"),
        ({"stream_key": ["a b=x"]}, {}, "stream name 'a b' is invalid"),
        ({"stream_key": ["a=1", "a=2"]}, {}, "given a key twice"),
        ({}, {"RELAYCAST_STREAM_KEY": "live:secret"}, "RELAYCAST_STREAM_KEY: expected NAME=SECRET"),
        ({"public_ip": ["example.org"]}, {}, "not an IPv4 or IPv6 address"),
        ({"ice_server": ["http://x"]}, {}, "not a STUN/TURN URL"),
        ({}, {"RELAYCAST_HOST_CANDIDATES": "maybe"}, "must be true or false"),
        ({}, {"RELAYCAST_LOG_LEVEL": "loud"}, "log_level must be one of"),
        ({}, {"RELAYCAST_MAX_BITRATE": "0"}, "max_bitrate must be a positive"),
        ({}, {"RELAYCAST_KEYFRAME_INTERVAL": "soon"}, "must be a number"),
    ],
)
def test_bad_values_raise_config_error(
    flags: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(flags, env=env)


# Every setting added for the public internet: (field, flag dest, env value, parsed, TOML text).
NEW_SETTINGS = [
    ("handshake_timeout", "handshake_timeout", "4.5", 4.5, "handshake_timeout = 4.5"),
    ("max_sessions", "max_sessions", "300", 300, "max_sessions = 300"),
    ("max_sessions_per_ip", "max_sessions_per_ip", "7", 7, "max_sessions_per_ip = 7"),
    ("max_viewers_per_stream", "max_viewers_per_stream", "9", 9, "max_viewers_per_stream = 9"),
    ("max_streams", "max_streams", "3", 3, "max_streams = 3"),
    ("whep_rate", "whep_rate", "2.5", 2.5, "whep_rate = 2.5"),
    ("whep_burst", "whep_burst", "4", 4, "whep_burst = 4"),
    ("bad_key_limit", "bad_key_limit", "3", 3, "bad_key_limit = 3"),
    ("bad_key_window", "bad_key_window", "30", 30.0, "bad_key_window = 30"),
    ("trust_proxy", "trust_proxy", "yes", True, "trust_proxy = true"),
    ("keyframe_interval", "keyframe_interval", "0.1", 0.1, "keyframe_interval = 0.25"),
]


@pytest.mark.parametrize(("field", "dest", "env_value", "parsed", "toml"), NEW_SETTINGS)
def test_new_settings_from_each_source_with_precedence(
    tmp_path: Path, field: str, dest: str, env_value: str, parsed: object, toml: str
) -> None:
    env_var = "RELAYCAST_" + field.upper()
    path = write_toml(tmp_path, toml + "\n")
    from_toml = getattr(load_config({}, env={}, toml_path=path), field)
    assert from_toml != getattr(Config(), field)  # the file changed it
    # env beats TOML
    assert getattr(load_config({}, env={env_var: env_value}, toml_path=path), field) == parsed
    # flag (through the real argparse parser) beats env
    flag = "--" + dest.replace("_", "-")
    args = [flag] if isinstance(parsed, bool) else [flag, env_value]
    namespace = cli.build_parser().parse_args(["serve", *args])
    other = "no" if isinstance(parsed, bool) else "1"
    from_flag = getattr(load_config(namespace, env={env_var: other}, toml_path=path), field)
    assert from_flag == parsed
    assert getattr(load_config({}, env={env_var: other}), field) != parsed
    # not given anywhere: the default
    assert getattr(load_config(cli.build_parser().parse_args(["serve"]), env={}), field) == (
        getattr(Config(), field)
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAYCAST_MAX_SESSIONS": "0"}, "max_sessions (--max-sessions / RELAYCAST_MAX_SESSIONS)"),
        ({"RELAYCAST_MAX_SESSIONS_PER_IP": "-1"}, "max_sessions_per_ip .* whole number >= 1"),
        ({"RELAYCAST_MAX_VIEWERS_PER_STREAM": "0"}, "max_viewers_per_stream .* >= 1, got 0"),
        ({"RELAYCAST_MAX_STREAMS": "lots"}, "RELAYCAST_MAX_STREAMS must be an integer"),
        ({"RELAYCAST_WHEP_RATE": "0"}, "whep_rate .* requests per second > 0, got 0.0"),
        ({"RELAYCAST_WHEP_RATE": "nan"}, "whep_rate .* > 0, got nan"),
        ({"RELAYCAST_WHEP_BURST": "0"}, "whep_burst .* >= 1"),
        ({"RELAYCAST_BAD_KEY_LIMIT": "0"}, "bad_key_limit .* >= 1"),
        ({"RELAYCAST_BAD_KEY_WINDOW": "-5"}, "bad_key_window .* seconds > 0"),
        ({"RELAYCAST_TRUST_PROXY": "sometimes"}, "RELAYCAST_TRUST_PROXY must be true or false"),
        ({"RELAYCAST_HANDSHAKE_TIMEOUT": "0"}, "handshake_timeout .* seconds > 0, got 0.0"),
        ({"RELAYCAST_HANDSHAKE_TIMEOUT": "inf"}, "handshake_timeout .* > 0, got inf"),
        # 0 used to turn keyframe-request coalescing off: a viewer could then make the
        # publisher send keyframes back to back.
        ({"RELAYCAST_KEYFRAME_INTERVAL": "0"}, "keyframe_interval .* at least 0.1 seconds"),
        ({"RELAYCAST_KEYFRAME_INTERVAL": "0.05"}, "at least 0.1 seconds .* got 0.05"),
    ],
)
def test_new_settings_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config({}, env=env)


def test_new_settings_bad_values_in_toml_and_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="whep_burst must be an integer"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, "whep_burst = 2.5\n"))
    with pytest.raises(ConfigError, match=r"max_streams .* >= 1, got 0"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, "max_streams = 0\n"))
    with pytest.raises(ConfigError, match="--max-sessions must be an integer"):
        load_config({"max_sessions": "x"}, env={})
    # The command line turns them into exit status 2 with the message.
    assert cli.main(["serve", "--whep-rate", "0"]) == 2


def test_host_candidates_explicit_override_beats_automatic() -> None:
    public = {"public_ip": ["203.0.113.7"]}
    assert load_config(public, env={}).advertises_host_candidates() is False
    on = load_config({**public, "host_candidates": True}, env={})
    assert on.advertises_host_candidates() is True
    env_on = load_config(public, env={"RELAYCAST_HOST_CANDIDATES": "on"})
    assert env_on.advertises_host_candidates() is True
    off = load_config({"host_candidates": False}, env={})
    assert off.advertises_host_candidates() is False


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bogus, prot"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, "prot = 1\nbogus = 2\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, "port = = 1\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, env={}, toml_path=str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="must be a table"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, 'stream_keys = "x"\n'))
    with pytest.raises(ConfigError, match="secret for stream 'live' is empty"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, '[stream_keys]\nlive = ""\n'))
    with pytest.raises(ConfigError, match="port must be an integer"):
        load_config({}, env={}, toml_path=write_toml(tmp_path, 'port = "x"\n'))


def test_config_error_is_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- publish keys --------------------------------------------------------------------------


def test_check_key_with_configured_keys() -> None:
    config = load_config({"stream_key": ["live=test-key", "other=other-key"]}, env={})
    assert config.key_for("live") == "test-key"
    assert config.key_for("nope") is None
    assert config.check_key("live", "test-key") is True
    assert config.check_key("other", "other-key") is True
    assert config.check_key("live", "other-key") is False  # another stream's key
    assert config.check_key("live", "test-ke") is False  # prefix
    assert config.check_key("live", "test-key ") is False
    assert config.check_key("live", "") is False
    assert config.check_key("nope", "test-key") is False  # unknown stream
    assert config.check_key("live", "ключ") is False  # non-ASCII must not raise


def test_generated_key_valid_for_any_stream_name() -> None:
    config = load_config({}, env={})
    key = config.generated_key
    assert key is not None
    assert config.check_key("live", key) is True
    assert config.check_key("anything-else_1", key) is True
    assert config.check_key("live", key[:-1]) is False
    assert config.check_key("bad/name", key) is False  # not a stream name at all


def test_check_key_uses_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    config = Config(stream_keys={"live": "k"})
    assert config.check_key("live", "k") is True
    assert config.check_key("live", "x") is False
    assert config.check_key("unknown", "k") is False  # still does a comparison
    assert calls == [(b"k", b"k"), (b"x", b"k"), (b"k", b"k")]


def test_configured_keys_disable_generated_key() -> None:
    config = Config(stream_keys={"live": "k"}, generated_key="g")
    assert config.generated_key is None
    assert config.check_key("live", "g") is False


def test_stream_name_rule() -> None:
    assert valid_stream_name("live")
    assert valid_stream_name("A-b_9" * 12 + "abcd")  # 64 chars
    for bad in ("", "a" * 65, "a b", "a/b", "a.b", "ä", "live\n"):
        assert not valid_stream_name(bad), bad


# -- banner --------------------------------------------------------------------------------


def test_banner_with_generated_key() -> None:
    config = Config(port=8080, udp_port=8443, generated_key="GENKEY")
    text = cli.format_banner(config, ["10.0.0.5", "203.0.113.7"])
    lines = text.splitlines()
    assert lines[0] == (
        "relaycast listening: http://127.0.0.1:8080  media udp/8443 "
        "(candidates: 10.0.0.5, 203.0.113.7)"
    )
    assert lines[1].startswith("publish: http://127.0.0.1:8080/publish/live ")
    assert lines[1].endswith("WHIP: http://127.0.0.1:8080/whip/live")
    assert lines[2].startswith("watch:   http://127.0.0.1:8080/watch/live ")
    assert lines[2].endswith("WHEP: http://127.0.0.1:8080/whep/live")
    assert lines[1].index("WHIP:") == lines[2].index("WHEP:")
    assert lines[3] == "publish key (generated, valid for any stream): GENKEY"


def test_banner_with_configured_keys_names_each_stream_and_hides_secrets() -> None:
    config = Config(host="0.0.0.0", port=9000, stream_keys={"b": "secret-b", "a": "secret-a"})
    text = cli.format_banner(config, ["192.0.2.1"])
    assert "http://127.0.0.1:9000/publish/a" in text
    assert "http://127.0.0.1:9000/whep/b" in text
    assert "secret" not in text
    assert "generated" not in text


def test_ready_printer_uses_server_info(capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(port=0, udp_port=0, generated_key="K", host_candidates=False)
    ready = cli._ready_printer(config)
    ready(SimpleNamespace(http_port=41000, udp_port=42000, candidates=["127.0.0.1"]))
    out = capsys.readouterr().out
    assert "http://127.0.0.1:41000  media udp/42000 (candidates: 127.0.0.1)" in out
    assert "K" in out.splitlines()[-1]


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--stream-key", "nokey"]) == 2
    assert "relaycast: error: --stream-key: expected NAME=SECRET" in capsys.readouterr().err
    assert cli.main([]) == 2  # no command: help


# -- candidate addresses -------------------------------------------------------------------


def fake_if_addrs() -> dict[str, list[SimpleNamespace]]:
    def a(family: int, address: str) -> SimpleNamespace:
        return SimpleNamespace(family=family, address=address)

    return {
        "lo": [a(socket.AF_INET, "127.0.0.1"), a(socket.AF_INET6, "::1")],
        "eth0": [
            a(socket.AF_INET, "10.0.0.5"),
            a(socket.AF_INET6, "fe80::1%eth0"),
            a(socket.AF_INET6, "2001:4860::5"),
            a(socket.AF_INET6, "fd00::5"),  # unique local: not global
            a(getattr(socket, "AF_PACKET", 17), "00:11:22:33:44:55"),
        ],
        "eth1": [a(socket.AF_INET, "169.254.3.3"), a(socket.AF_INET, "10.0.0.5")],
    }


def test_host_addresses_filters_loopback_link_local_and_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psutil, "net_if_addrs", fake_if_addrs)
    assert addresses.host_addresses() == ["10.0.0.5", "2001:4860::5"]
    assert addresses.host_addresses(include_loopback=True) == [
        "127.0.0.1",
        "10.0.0.5",
        "::1",
        "2001:4860::5",
    ]


def test_candidate_addresses_order_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "net_if_addrs", fake_if_addrs)
    on = Config(host="0.0.0.0", public_ips=("203.0.113.7", "10.0.0.5"), host_candidates=True)
    assert addresses.candidate_addresses(on) == ["203.0.113.7", "10.0.0.5", "2001:4860::5"]
    off = Config(host="0.0.0.0", public_ips=("203.0.113.7",), host_candidates=False)
    assert addresses.candidate_addresses(off) == ["203.0.113.7"]
    assert addresses.candidate_addresses(Config(host="::", host_candidates=False)) == ["127.0.0.1"]
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {})
    assert addresses.candidate_addresses(Config(host="0.0.0.0")) == ["127.0.0.1"]


def test_public_ip_turns_host_candidates_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer to an anonymous viewer lists only what the operator chose to publish."""
    monkeypatch.setattr(psutil, "net_if_addrs", fake_if_addrs)
    wildcard = Config(host="0.0.0.0", public_ips=("203.0.113.7",))
    assert wildcard.advertises_host_candidates() is False
    assert addresses.candidate_addresses(wildcard) == ["203.0.113.7"]
    # No public IP: every usable interface address, as before.
    assert addresses.candidate_addresses(Config(host="0.0.0.0")) == ["10.0.0.5", "2001:4860::5"]
    assert addresses.candidate_addresses(Config(host="localhost")) == ["10.0.0.5", "2001:4860::5"]


def test_specific_host_is_the_only_host_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "net_if_addrs", fake_if_addrs)
    # The default: HTTP and media on loopback, the one candidate a local browser can use.
    assert addresses.candidate_addresses(Config()) == ["127.0.0.1"]
    assert addresses.candidate_addresses(Config(host="10.0.0.5")) == ["10.0.0.5"]
    assert addresses.candidate_addresses(Config(host="2001:4860::5")) == ["2001:4860::5"]
    both = Config(host="10.0.0.5", public_ips=("203.0.113.7",), host_candidates=True)
    assert addresses.candidate_addresses(both) == ["203.0.113.7", "10.0.0.5"]
    # Nothing else to offer: the address the media socket is bound to.
    none = Config(host="10.0.0.5", host_candidates=False)
    assert addresses.candidate_addresses(none) == ["10.0.0.5"]


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5"),
        ("::1", "::1"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("0.0.0.0", ""),
        ("::", ""),
        ("localhost", ""),
        ("relay.example.org", ""),
    ],
)
def test_media_bind_host(host: str, bind: str) -> None:
    assert Config(host=host).media_bind_host() == bind


def test_host_addresses_on_this_machine_are_usable() -> None:
    for ip in addresses.host_addresses():
        assert not ip.startswith(("127.", "169.254.", "fe80:")), ip


# -- HTTPS, private streams, TURN credentials, one-click start (issue 11) -------------------

TOKEN_SECRET = "t" * 32


def test_internet_settings_default_off() -> None:
    config = load_config({}, env={})
    assert (config.tls_cert, config.tls_key, config.tls_self_signed) == (None, None, False)
    assert not config.tls_enabled and config.scheme == "http"
    assert config.private_streams == () and config.token_secret is None
    assert (config.turn_secret, config.turn_ttl) == (None, 86400)


def test_internet_settings_from_each_source_with_precedence(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        f'tls_cert = "/toml/cert.pem"\ntls_key = "/toml/key.pem"\ntoken_secret = "{"a" * 40}"\n'
        'ice_servers = ["turn:t.example.org"]\nturn_secret = "toml-turn"\nturn_ttl = 600\n'
        'private_streams = ["listed"]\n'
        "[streams.tabled]\nprivate = true\n[streams.open]\nprivate = false\n",
    )
    config = load_config({}, env={}, toml_path=path)
    assert (config.tls_cert, config.tls_key) == ("/toml/cert.pem", "/toml/key.pem")
    assert config.tls_enabled and config.scheme == "https"
    assert config.private_streams == ("listed", "tabled")
    assert config.is_private("tabled") and not config.is_private("open")
    assert (config.turn_secret, config.turn_ttl) == ("toml-turn", 600)
    assert config.token_secret == "a" * 40

    env = {
        "RELAYCAST_TOKEN_SECRET": "e" * 32,
        "RELAYCAST_PRIVATE_STREAM": "x, y",
        "RELAYCAST_TURN_TTL": "700",
        "RELAYCAST_TLS_CERT": "/env/cert.pem",
    }
    config = load_config({}, env=env, toml_path=path)
    assert config.private_streams == ("x", "y")  # a list from a higher level replaces
    assert (config.token_secret, config.turn_ttl, config.tls_cert) == (
        "e" * 32,
        700,
        "/env/cert.pem",
    )

    args = cli.build_parser().parse_args(
        ["serve", "--private-stream", "f", "--private-stream", "g", "--token-secret", "f" * 33,
         "--turn-secret", "flag-turn", "--turn-ttl", "800", "--tls-key", "/flag/key.pem"]
    )  # fmt: skip
    config = load_config(args, env=env, toml_path=path)
    assert config.private_streams == ("f", "g")
    assert (config.token_secret, config.turn_secret, config.turn_ttl) == (
        "f" * 33,
        "flag-turn",
        800,
    )
    assert (config.tls_cert, config.tls_key) == ("/env/cert.pem", "/flag/key.pem")
    self_signed = load_config(cli.build_parser().parse_args(["serve", "--tls-self-signed"]), env={})
    assert self_signed.tls_self_signed and self_signed.scheme == "https"
    assert load_config({}, env={"RELAYCAST_TLS_SELF_SIGNED": "yes"}).tls_self_signed


def test_secrets_stay_out_of_repr() -> None:
    config = Config(
        token_secret="S" * 40,
        private_streams=("p",),
        ice_servers=("turn:t.example.org",),
        turn_secret="TURNSECRET",
    )
    assert "SSSS" not in repr(config) and "TURNSECRET" not in repr(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"private_streams": ("live",)}, "need a token secret"),
        ({"private_streams": ("live",), "token_secret": "short"}, "at least 32 bytes"),
        ({"private_streams": ("bad name",), "token_secret": TOKEN_SECRET}, "invalid"),
        (
            {"private_streams": ("nokey",), "token_secret": TOKEN_SECRET,
             "stream_keys": {"live": "k"}},
            "has no publish key",
        ),
        ({"tls_cert": "/c.pem"}, "go together"),
        ({"tls_key": "/k.pem"}, "go together"),
        ({"tls_cert": "/c.pem", "tls_key": "/k.pem", "tls_self_signed": True}, "exclude"),
        ({"token_secret": ""}, "must not be empty"),
    ],
)  # fmt: skip
def test_internet_settings_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**kwargs)


def test_toml_stream_tables_errors(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[streams.live]\nprivate = true\n")
    with pytest.raises(ConfigError, match="need a token secret"):
        load_config({}, env={}, toml_path=path)
    path = write_toml(tmp_path, "[streams.live]\nprivat = true\n")
    with pytest.raises(ConfigError, match="unknown option 'privat'"):
        load_config({}, env={}, toml_path=path)
    path = write_toml(tmp_path, '[streams."a b"]\nprivate = true\n')
    with pytest.raises(ConfigError, match="invalid"):
        load_config({}, env={}, toml_path=path)
    path = write_toml(tmp_path, 'streams = "live"\n')
    with pytest.raises(ConfigError, match="table of tables"):
        load_config({}, env={}, toml_path=path)


def test_cli_private_stream_without_secret_is_an_error_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["serve", "--private-stream", "live"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relaycast: error: private stream(s) live need a token secret")


def test_cli_unusable_certificate_is_an_error_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    args = ["serve", "--port", "0", "--udp-port", "0"]
    code = cli.main(
        [*args, "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
    )
    assert code == 2
    assert "relaycast: error: TLS: cannot use certificate" in capsys.readouterr().err
    code = cli.main([*args, "--tls-cert", str(tmp_path / "no.pem"), "--tls-key", "/no/key.pem"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_banner_one_click_url_carries_the_generated_key_in_the_fragment() -> None:
    config = Config(port=8080, udp_port=8443, generated_key="GENKEY")
    lines = cli.format_banner(config, ["10.0.0.5"]).splitlines()
    assert lines[-1] == "go live in one click: http://127.0.0.1:8080/publish/live#key=GENKEY"
    # the key appears only in the fragment and on its own line, never in a path or query
    for line in lines:
        if "GENKEY" in line:
            assert line.endswith("#key=GENKEY") or line.endswith(": GENKEY")
            assert "?key=" not in line


def test_banner_with_tls_uses_https_and_prints_the_fingerprint() -> None:
    config = Config(
        host="0.0.0.0", port=8443, udp_port=9000, tls_self_signed=True, generated_key="K"
    )
    text = cli.format_banner(config, ["192.0.2.1"], "AB:CD", tls_self_signed=True)
    lines = text.splitlines()
    assert lines[0].startswith("relaycast listening: https://127.0.0.1:8443  media udp/9000")
    assert lines[1] == "TLS self-signed certificate SHA-256: AB:CD"
    assert "http://" not in text
    assert "publish: https://127.0.0.1:8443/publish/live" in text
    assert "WHEP: https://127.0.0.1:8443/whep/live" in text
    assert lines[-1] == "go live in one click: https://127.0.0.1:8443/publish/live#key=K"
    own = Config(tls_cert="/c.pem", tls_key="/k.pem", generated_key="K")
    assert "TLS certificate SHA-256: 01:02" in cli.format_banner(own, [], "01:02")


def test_banner_marks_private_streams_and_hides_configured_secrets() -> None:
    config = Config(
        stream_keys={"live": "secret-live", "show": "secret-show"},
        private_streams=("show",),
        token_secret=TOKEN_SECRET,
    )
    text = cli.format_banner(config, [])
    assert "secret" not in text and "#key=" not in text and "one click" not in text
    (show,) = [line for line in text.splitlines() if line.startswith("watch:") and "show" in line]
    assert show.endswith("(private: viewers need a token, relaycast token show)")
    (live,) = [line for line in text.splitlines() if line.startswith("watch:") and "live" in line]
    assert "private" not in live


def test_ready_printer_passes_the_tls_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(port=0, udp_port=0, generated_key="K", tls_self_signed=True)
    cli._ready_printer(config)(
        SimpleNamespace(
            http_port=41000, udp_port=42000, candidates=["127.0.0.1"],
            tls_fingerprint="AA:BB", tls_self_signed=True,
        )
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "https://127.0.0.1:41000" in out
    assert "TLS self-signed certificate SHA-256: AA:BB" in out
    assert "https://127.0.0.1:41000/publish/live#key=K" in out


def test_token_command_prints_a_token_and_a_watch_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in list(os.environ):
        if var.startswith("RELAYCAST_"):
            monkeypatch.delenv(var)
    code = cli.main(
        ["token", "show", "--ttl", "120", "--token-secret", TOKEN_SECRET, "--port", "9443"]
    )
    assert code == 0
    captured = capsys.readouterr()
    token, url = captured.out.splitlines()
    assert url == f"http://127.0.0.1:9443/watch/show?token={token}"
    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "show"
    assert 119 <= claims["exp"] - time.time() <= 120
    assert "not a private stream" in captured.err  # no --private-stream show given here

    monkeypatch.setenv("RELAYCAST_TOKEN_SECRET", TOKEN_SECRET)
    monkeypatch.setenv("RELAYCAST_PRIVATE_STREAM", "show")
    assert cli.main(["token", "show", "--base-url", "https://live.example.org/"]) == 0
    captured = capsys.readouterr()
    token, url = captured.out.splitlines()
    assert url == f"https://live.example.org/watch/show?token={token}"
    assert captured.err == ""


def test_token_command_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAYCAST_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("RELAYCAST_CONFIG", raising=False)
    assert cli.main(["token", "show"]) == 2
    assert "no token secret" in capsys.readouterr().err
    assert cli.main(["token", "a b", "--token-secret", TOKEN_SECRET]) == 2
    assert "invalid" in capsys.readouterr().err
    assert cli.main(["token", "show", "--token-secret", TOKEN_SECRET, "--ttl", "0"]) == 2
    assert "--ttl" in capsys.readouterr().err
    assert cli.main(["token", "show", "--token-secret", "short"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err


def test_a_cluster_node_runs_one_worker() -> None:
    """Workers default to one per core, but a cluster node is one process (design.md)."""
    node = {"cluster": "redis://127.0.0.1:6379/0", "node_url": "http://10.0.0.2:8080"}
    assert Config(**node).worker_count == 1  # type: ignore[arg-type]
    assert Config(workers=1, **node).worker_count == 1  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one worker per node"):
        Config(workers=2, **node)  # type: ignore[arg-type]
    assert Config(workers=2).worker_count == 2
