"""Which IP addresses the server advertises as ICE host candidates (RFC 8445 §5.1.1.1).

ICE-lite servers offer only host candidates; the public IPs the operator configures
(for a server behind 1:1 NAT) come first, then, when host candidates are on, the machine's
own address: the ``--host`` address when it is a specific IP (the media socket is bound to
it, see :meth:`Config.media_bind_host`), else every usable interface address.  Host
candidates are on by default only when no public IP is configured, so an answer to an
anonymous viewer does not list private addresses the operator did not ask to publish.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from relaycast.config import Config

__all__ = ["candidate_addresses", "host_addresses"]

LOOPBACK_FALLBACK = "127.0.0.1"


def _usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, include_loopback: bool) -> bool:
    if ip.is_loopback:
        return include_loopback
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    if ip.version == 6:
        # Only global IPv6: ULA and site-local addresses rarely route between peers.
        return ip.is_global
    return True


def host_addresses(include_loopback: bool = False) -> list[str]:
    """IPv4 addresses and global IPv6 addresses of every interface, without duplicates.

    Loopback addresses are left out unless *include_loopback*; link-local always is.
    IPv4 addresses come before IPv6 ones.
    """
    v4: list[str] = []
    v6: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = str(addr.address).split("%", 1)[0]  # drop an IPv6 zone id
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if not _usable(ip, include_loopback):
                continue
            bucket = v4 if ip.version == 4 else v6
            if str(ip) not in bucket:
                bucket.append(str(ip))
    return v4 + v6


def candidate_addresses(config: Config) -> list[str]:
    """Addresses to advertise: configured public IPs first, then (when
    :meth:`Config.advertises_host_candidates`) the ``host`` IP if it is a specific address,
    else the interface addresses; ``127.0.0.1`` only if nothing else.
    """
    out: list[str] = []
    for ip in config.public_ips:
        if ip not in out:
            out.append(ip)
    if config.advertises_host_candidates():
        bound = config.host_ip()
        for ip in [bound] if bound is not None else host_addresses():
            if ip not in out:
                out.append(ip)
    if not out:
        out.append(config.host_ip() or LOOPBACK_FALLBACK)
    return out
