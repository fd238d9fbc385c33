"""The ``relaycast`` command: ``relaycast serve``, ``relaycast token``, ``relaycast bench``.

Each subcommand is one ``add_*_command(subparsers)`` function registered in
:data:`COMMANDS`; it sets ``func`` (``Callable[[argparse.Namespace], int]``) on its parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from relaycast.config import LOG_LEVELS, Config, ConfigError, load_config
from relaycast.loadgen.command import add_bench_command

__all__ = ["COMMANDS", "base_url", "build_parser", "format_banner", "main"]

log = logging.getLogger("relaycast")

EXAMPLE_STREAM = "live"


def _url_host(host: str) -> str:
    """The host part of a URL people can open for a server bound to *host*."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def base_url(config: Config) -> str:
    """``http(s)://host:port`` of the server as people can open it."""
    return f"{config.scheme}://{_url_host(config.host)}:{config.port}"


def format_banner(
    config: Config,
    candidate_ips: list[str],
    tls_fingerprint: str | None = None,
    tls_self_signed: bool = False,
) -> str:
    """The lines ``relaycast serve`` prints once the server listens: where to publish and
    watch, the generated publish key when no keys are configured with a one-click publish URL
    carrying it in the fragment (``#key=``: browsers never send a fragment, so the key stays
    out of server and proxy logs), and the certificate's SHA-256 with TLS on."""
    base = base_url(config)
    lines = [
        f"relaycast listening: {base}  media udp/{config.udp_port} "
        f"(candidates: {', '.join(candidate_ips) or 'none'})"
    ]
    if tls_fingerprint is not None:
        kind = "self-signed certificate" if tls_self_signed else "certificate"
        lines.append(f"TLS {kind} SHA-256: {tls_fingerprint}")
    names = sorted(config.stream_keys) or [EXAMPLE_STREAM]
    for name in names:
        publish = f"{base}/publish/{name}"
        watch = f"{base}/watch/{name}"
        width = max(len(publish), len(watch)) + 3
        lines.append(f"{'publish:':<9}{publish:<{width}}WHIP: {base}/whip/{name}")
        watch_line = f"{'watch:':<9}{watch:<{width}}WHEP: {base}/whep/{name}"
        if config.is_private(name):
            watch_line += f"  (private: viewers need a token, relaycast token {name})"
        lines.append(watch_line)
    for name in config.private_streams:
        if name not in names:
            lines.append(f"private: {name} (viewers need a token, relaycast token {name})")
    if config.generated_key is not None:
        lines.append(f"publish key (generated, valid for any stream): {config.generated_key}")
        lines.append(
            f"go live in one click: {base}/publish/{EXAMPLE_STREAM}#key={config.generated_key}"
        )
    return "\n".join(lines)


# -- serve ---------------------------------------------------------------------------------


def add_serve_command(subparsers: Any) -> None:
    """``relaycast serve``: every flag here also exists as RELAYCAST_* and in the TOML file."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the streaming server",
        description="Run the relaycast server: WHIP in, WHEP out, pages on HTTP. "
        "Every flag can also be set as a RELAYCAST_* environment variable or in a TOML file.",
    )
    p.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--udp-port", type=int, help="the one UDP port for all media (default 8443)")
    p.add_argument(
        "--public-ip",
        action="append",
        metavar="IP",
        help="address to advertise as ICE candidate (repeatable; first in the list)",
    )
    p.add_argument(
        "--stream-key",
        action="append",
        metavar="NAME=SECRET",
        help="publish key for stream NAME (repeatable); without any, one key is generated",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.add_argument(
        "--host-candidates",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="advertise the interface addresses as ICE candidates: only the --host address "
        "when it is a specific IP, else every non-loopback one (default: on only when no "
        "--public-ip is given)",
    )
    p.add_argument(
        "--ice-server",
        action="append",
        metavar="URL",
        help="STUN/TURN URL announced to clients, e.g. stun:stun.example.org:3478 (repeatable)",
    )
    p.add_argument(
        "--ice-tcp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also take ICE over TCP (RFC 6544) on the media port number, for clients whose "
        "networks block UDP (default on)",
    )
    p.add_argument(
        "--playout-delay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send each viewer playout-delay hints (RTP header extension) from its measured "
        "loss and jitter (default on)",
    )
    p.add_argument("--max-bitrate", type=int, metavar="BPS", help="publisher bitrate cap")
    p.add_argument(
        "--keyframe-interval",
        type=float,
        metavar="SECONDS",
        help="minimum time between keyframe requests to a publisher (default 0.5, at least 0.1)",
    )
    p.add_argument(
        "--consent-timeout",
        type=float,
        metavar="SECONDS",
        help="close a session after this long without ICE consent (default 30)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        metavar="SECONDS",
        help="close a session whose ICE and DTLS are not done after this long (default 10)",
    )
    limits = p.add_argument_group(
        "limits", "admission limits for the public internet (answered with 429 or 503)"
    )
    limits.add_argument(
        "--max-sessions", type=int, metavar="N", help="publishers + viewers in all (default 5000)"
    )
    limits.add_argument(
        "--max-sessions-per-ip",
        type=int,
        metavar="N",
        help="viewer sessions from one client address (default 50)",
    )
    limits.add_argument(
        "--max-viewers-per-stream",
        type=int,
        metavar="N",
        help="viewers of one stream (default 2000)",
    )
    limits.add_argument(
        "--max-streams",
        type=int,
        metavar="N",
        help="streams a viewer may bring into existence by asking for them (default 200)",
    )
    limits.add_argument(
        "--whep-rate",
        type=float,
        metavar="PER_SECOND",
        help="WHEP requests per second from one client address (default 10)",
    )
    limits.add_argument(
        "--whep-burst",
        type=int,
        metavar="N",
        help="WHEP requests one client address may send at once (default 20)",
    )
    limits.add_argument(
        "--bad-key-limit",
        type=int,
        metavar="N",
        help="wrong publish keys from one address before it must wait (default 10)",
    )
    limits.add_argument(
        "--bad-key-window",
        type=float,
        metavar="SECONDS",
        help="the period --bad-key-limit counts over (default 60)",
    )
    limits.add_argument(
        "--trust-proxy",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="take the client address from the last X-Forwarded-For entry; only behind a "
        "proxy that every request passes (default off)",
    )
    internet = p.add_argument_group("internet", "HTTPS, private streams, TURN credentials")
    internet.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate chain (reloaded on SIGHUP); with --tls-key",
    )
    internet.add_argument(
        "--tls-key", metavar="FILE", help="the PEM private key of --tls-cert (reloaded on SIGHUP)"
    )
    internet.add_argument(
        "--tls-self-signed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve HTTPS with a certificate made at start for localhost, --host and the "
        "public IPs; prints its SHA-256 (for a LAN)",
    )
    internet.add_argument(
        "--private-stream",
        action="append",
        metavar="NAME",
        help="viewers of stream NAME need a token (repeatable; needs --token-secret)",
    )
    internet.add_argument(
        "--token-secret",
        metavar="SECRET",
        help="HS256 secret of viewer tokens (at least 32 characters)",
    )
    internet.add_argument(
        "--turn-secret",
        metavar="SECRET",
        help="coturn static-auth-secret: hand out TURN REST credentials for the turn: "
        "--ice-server URLs",
    )
    internet.add_argument(
        "--turn-ttl",
        type=int,
        metavar="SECONDS",
        help="lifetime of those TURN credentials (default 86400)",
    )
    p.add_argument(
        "--record-dir",
        metavar="DIR",
        help="record every broadcast, without transcoding, to DIR/<stream>/<UTC start>.webm "
        "(VP8/VP9/AV1 + Opus) or .mp4 (H.264 + Opus); [streams.NAME] record = false in the "
        "TOML file leaves a stream out",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the HTTP and media ports, one stream's viewers spread "
        "over all of them (default: one per core; 1 runs everything in this process)",
    )
    cluster = p.add_argument_group(
        "cluster", "several machines sharing streams through a Redis registry (relaycast[cluster])"
    )
    cluster.add_argument(
        "--cluster",
        metavar="redis://HOST:PORT[/DB]",
        help="join the cluster whose registry is this Redis; a viewer of a stream published "
        "on another node is served from a pull of it",
    )
    cluster.add_argument(
        "--node-url",
        metavar="URL",
        help="this node's base URL as the other nodes (and redirected viewers) reach it",
    )
    cluster.add_argument(
        "--cluster-secret",
        metavar="SECRET",
        help="shared by every node: signs node-to-node requests and the registry records",
    )
    cluster.add_argument(
        "--cluster-redirect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send a WHEP POST on to a less loaded node with 307 (default off)",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    p.add_argument("--web-root", metavar="DIR", help="serve the pages from DIR instead")
    p.set_defaults(func=cmd_serve)


def _info_value(info: object, names: Sequence[str], default: Any) -> Any:
    for name in names:
        value = getattr(info, name, None)
        if value is not None:
            return value
    return default


def _ready_printer(config: Config) -> Callable[[Any], None]:
    """The ``ready`` callback for :func:`relaycast.app.run`: prints the banner."""

    def ready(info: Any) -> None:
        from dataclasses import replace

        from relaycast.net.addresses import candidate_addresses

        port = _info_value(info, ("http_port", "port"), config.port)
        udp_port = _info_value(info, ("udp_port",), config.udp_port)
        candidates = _info_value(info, ("candidates", "candidate_ips"), None)
        if candidates is None:
            candidates = candidate_addresses(config)
        shown = replace(config, port=int(port), udp_port=int(udp_port))
        fingerprint = _info_value(info, ("tls_fingerprint",), None)
        self_signed = bool(_info_value(info, ("tls_self_signed",), False))
        text = format_banner(shown, [str(c) for c in candidates], fingerprint, self_signed)
        print(text, flush=True)

    return ready


async def _serve(config: Config) -> None:
    from relaycast.app import run  # the app pulls in the media plane; import only here

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        await run(config, ready=_ready_printer(config))
    except asyncio.CancelledError:
        log.info("relaycast stopped")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"relaycast: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if config.worker_count > 1:
        from relaycast.workers.supervisor import supervise

        return supervise(config, _ready_printer(config))
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:  # e.g. a certificate that cannot be loaded
        print(f"relaycast: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"relaycast: error: {exc}", file=sys.stderr)
        return 1
    return 0


# -- token ---------------------------------------------------------------------------------


def add_token_command(subparsers: Any) -> None:
    """``relaycast token NAME [--ttl SECONDS]``: a viewer token and a watch URL carrying it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "token",
        help="print a viewer token for a private stream",
        description="Print a viewer token (JWT HS256, sub = NAME, exp) for stream NAME and a "
        "watch URL that carries it. The secret comes from --token-secret, RELAYCAST_TOKEN_SECRET "
        "or the TOML file, as for relaycast serve; so do the host, port and TLS settings the "
        "URL is made from.",
    )
    p.add_argument("stream", metavar="NAME", help="the stream the token lets its bearer watch")
    p.add_argument(
        "--ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL,
        metavar="SECONDS",
        help=f"how long the token is valid (default {DEFAULT_TOKEN_TTL})",
    )
    p.add_argument("--token-secret", metavar="SECRET", help="as for relaycast serve")
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.add_argument("--host", help="host of the watch URL (default: the server's --host)")
    p.add_argument("--port", type=int, help="port of the watch URL (default: the server's)")
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="start of the watch URL instead, e.g. https://live.example.org",
    )
    p.set_defaults(func=cmd_token)


DEFAULT_TOKEN_TTL = 86400


def cmd_token(args: argparse.Namespace) -> int:
    from relaycast.config import valid_stream_name
    from relaycast.http.tokens import make_viewer_token

    stream: str = args.stream
    flags = {k: v for k, v in vars(args).items() if k not in ("stream", "ttl", "base_url")}
    try:
        if not valid_stream_name(stream):
            raise ConfigError(
                f"stream name {stream!r} is invalid; use 1-64 letters, digits, '_' or '-'"
            )
        if args.ttl <= 0:
            raise ConfigError(f"--ttl must be a number of seconds > 0, got {args.ttl}")
        config = load_config(flags)
        if config.token_secret is None:
            raise ConfigError(
                "no token secret: give the server's --token-secret (or RELAYCAST_TOKEN_SECRET, "
                "or --config FILE with token_secret)"
            )
    except ConfigError as exc:
        print(f"relaycast: error: {exc}", file=sys.stderr)
        return 2
    if not config.is_private(stream):
        print(
            f"relaycast: note: {stream!r} is not a private stream in this configuration; "
            "its viewers need no token",
            file=sys.stderr,
        )
    token = make_viewer_token(config.token_secret, stream, args.ttl)
    base = (args.base_url or base_url(config)).rstrip("/")
    print(token)
    print(f"{base}/watch/{stream}?token={token}")
    return 0


# -- entry point ---------------------------------------------------------------------------

#: Subcommand registrations, in help order.  Add ``add_bench_command`` here.
COMMANDS: list[Callable[[Any], None]] = [add_serve_command, add_token_command, add_bench_command]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaycast",
        description="Self-hosted sub-second live streaming: WHIP in, WHEP out.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
