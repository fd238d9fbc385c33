"""One broadcast, named in the URL: at most one publisher, any number of subscribers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import StreamCounters

if TYPE_CHECKING:
    from relaycast.media.publisher import Publisher
    from relaycast.media.subscriber import Subscriber


class Stream:
    """Holds the Forwarders (one per kind) that outlive publishers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.publisher: Publisher | None = None
        self.subscribers: set[Subscriber] = set()
        self.forwarders = {"audio": Forwarder("audio"), "video": Forwarder("video")}
        self.created = time.monotonic()
        self.counters = StreamCounters()

    @property
    def live(self) -> bool:
        return self.publisher is not None and self.publisher.connected_at is not None

    @property
    def empty(self) -> bool:
        return self.publisher is None and not self.subscribers
