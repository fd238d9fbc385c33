"""Who is who among the workers: indexes in session ids and ICE ufrags, and the run directory.

Everything that says which worker owns something is decided here, so steering stays one
lookup: a session id starts with ``<index>.`` (``.`` is not in the ``token_urlsafe``
alphabet), a ufrag with the ice-char number ``index`` (RFC 8839 §5.4 ice-chars: 64 of them,
hence at most 64 workers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relaycast.net.ice_lite import ICE_CHARS

__all__ = ["INTERNAL_CLIENT", "INTERNAL_HEADER", "WorkerPlan", "session_owner", "ufrag_owner"]

#: header carrying the run's secret on requests between workers
INTERNAL_HEADER = "X-Relaycast-Internal"
#: header carrying the original client's address on a proxied request
INTERNAL_CLIENT = "X-Relaycast-Client"


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker knows of the run: its index, how many there are, where the private
    sockets live (a 0700 directory), and the run's secret for internal requests."""

    index: int
    count: int
    run_dir: Path
    secret: str

    @property
    def session_prefix(self) -> str:
        return f"{self.index}."

    @property
    def ufrag_prefix(self) -> str:
        return ICE_CHARS[self.index]

    def link_path(self, index: int) -> Path:
        """The SEQPACKET socket worker ``index`` listens on for its peers."""
        return self.run_dir / f"link-{index}.sock"

    def http_path(self, index: int) -> Path:
        """The unix socket worker ``index`` serves internal HTTP on."""
        return self.run_dir / f"http-{index}.sock"

    def peers(self) -> range:
        return range(self.count)


def session_owner(session_id: str, count: int) -> int | None:
    """The worker a session id names, or None when it names none of ``count``."""
    head, dot, _ = session_id.partition(".")
    if not dot or not head.isdigit() or len(head) > 2:
        return None
    index = int(head)
    return index if index < count else None


def ufrag_owner(ufrag: str, count: int) -> int | None:
    """The worker whose ufrags start with ``ufrag``'s first character, or None."""
    if not ufrag:
        return None
    index = ICE_CHARS.find(ufrag[0])
    return index if 0 <= index < count else None
