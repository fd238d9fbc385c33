"""One broadcast, named in the URL: at most one publisher, any number of subscribers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import StreamCounters

if TYPE_CHECKING:
    from relaycast.media.publisher import Publisher
    from relaycast.media.subscriber import Subscriber
    from relaycast.sdp import Codec


class Upstream(Protocol):
    """What feeds a Stream from another node instead of a local publisher (a cluster pull,
    relaycast.cluster.pull.EdgePull): ``connected_at`` is set once its media flows."""

    connected_at: float | None

    def codecs(self) -> dict[str, Codec]: ...


class Stream:
    """Holds the Forwarders (one per kind) that outlive publishers."""

    def __init__(self, name: str, forwarder: Callable[[str, str], Forwarder] | None = None) -> None:
        self.name = name
        self.publisher: Publisher | None = None
        #: the pull from another node that feeds this stream here (relaycast.cluster)
        self.pull: Upstream | None = None
        self.subscribers: set[Subscriber] = set()
        #: ``forwarder(stream name, kind)`` makes the Forwarders (workers relay theirs)
        make = forwarder or (lambda _name, kind: Forwarder(kind))
        self.forwarders = {"audio": make(name, "audio"), "video": make(name, "video")}
        self.created = time.monotonic()
        self.counters = StreamCounters()

    @property
    def live(self) -> bool:
        if self.publisher is None and self.pull is not None:
            return self.pull.connected_at is not None
        return self.publisher is not None and self.publisher.connected_at is not None

    def source_codecs(self) -> dict[str, Codec] | None:
        """The codecs the stream's source sends (a local publisher, else a pull), if known."""
        if self.publisher is not None:
            return self.publisher.codecs()
        if self.pull is not None:
            return self.pull.codecs() or None
        return None

    @property
    def empty(self) -> bool:
        return self.publisher is None and self.pull is None and not self.subscribers
