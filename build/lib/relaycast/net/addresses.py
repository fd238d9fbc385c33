"""Which IP addresses the server advertises as ICE host candidates (RFC 8445 §5.1.1.1).

ICE-lite servers offer only host candidates; the public IPs the operator configures
(for a server behind 1:1 NAT) come first, then the machine's own interface addresses.
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
    ``config.host_candidates``) the interface addresses; ``127.0.0.1`` only if nothing else.
    """
    out: list[str] = []
    for ip in config.public_ips:
        if ip not in out:
            out.append(ip)
    if config.host_candidates:
        for ip in host_addresses():
            if ip not in out:
                out.append(ip)
    if not out:
        out.append(LOOPBACK_FALLBACK)
    return out
