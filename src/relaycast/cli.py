"""The ``relaycast`` command: ``relaycast serve`` (and later ``relaycast bench``).

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

__all__ = ["COMMANDS", "build_parser", "format_banner", "main"]

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


def format_banner(config: Config, candidate_ips: list[str]) -> str:
    """The lines ``relaycast serve`` prints once the server listens: where to publish and
    watch, and the generated publish key when no keys are configured."""
    base = f"http://{_url_host(config.host)}:{config.port}"
    lines = [
        f"relaycast listening: {base}  media udp/{config.udp_port} "
        f"(candidates: {', '.join(candidate_ips) or 'none'})"
    ]
    names = sorted(config.stream_keys) or [EXAMPLE_STREAM]
    for name in names:
        publish = f"{base}/publish/{name}"
        watch = f"{base}/watch/{name}"
        width = max(len(publish), len(watch)) + 3
        lines.append(f"{'publish:':<9}{publish:<{width}}WHIP: {base}/whip/{name}")
        lines.append(f"{'watch:':<9}{watch:<{width}}WHEP: {base}/whep/{name}")
    if config.generated_key is not None:
        lines.append(f"publish key (generated, valid for any stream): {config.generated_key}")
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
        print(format_banner(shown, [str(c) for c in candidates]), flush=True)

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
    try:
        asyncio.run(_serve(config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"relaycast: error: {exc}", file=sys.stderr)
        return 1
    return 0


# -- entry point ---------------------------------------------------------------------------

#: Subcommand registrations, in help order.  Add ``add_bench_command`` here.
COMMANDS: list[Callable[[Any], None]] = [add_serve_command, add_bench_command]


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
