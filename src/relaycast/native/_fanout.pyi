"""Typing stub of the C fan-out kernel (_fanout.c)."""

from collections.abc import Sequence

#: one packet of a replay()/resend() list: (payload, seq, timestamp, marker, keyframe, ext)
Item = tuple[bytes, int, int, bool, bool, bytes]
Counts = tuple[int, int, int, int, int]

BATCH: int
MAX_LIST: int
BUFFER_SIZE: int
MAX_TRAILER: int
MAX_SLOTS: int

class Sequencer:
    def __init__(self, capacity: int = 1024, first: int = 0) -> None: ...
    @property
    def stamped(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    def stamp(self) -> int: ...
    def sent(self, seq: int, size: int, at_us: int = -1, /) -> None: ...
    def lookup(self, base: int, count: int, /) -> tuple[int, list[tuple[int, int] | None]]: ...

class Group:
    def __init__(self, protect: int) -> None: ...
    def __len__(self) -> int: ...
    def set_dry_run(self, dry_run: bool, /) -> None: ...
    def add(
        self,
        ctx: int,
        fd: int,
        family: int,
        host: str,
        port: int,
        ssrc: int,
        payload_type: int,
        seq_offset: int,
        ts_offset: int,
        start_seq: int,
        layout: int,
        /,
    ) -> int: ...
    def update(
        self,
        index: int,
        ssrc: int,
        payload_type: int,
        seq_offset: int,
        ts_offset: int,
        start_seq: int,
        layout: int,
        /,
    ) -> None: ...
    def set_addr(self, index: int, family: int, host: str, port: int, /) -> None: ...
    def remove(self, index: int, /) -> int: ...
    def take(self, index: int, /) -> Counts: ...
    def set_paused(self, index: int, paused: bool, /) -> None: ...
    def paused(self, index: int, /) -> bool: ...
    def set_sequencer(self, index: int, sequencer: Sequencer | None, ext_id: int, /) -> None: ...
    def set_layout(self, index: int, layout: int, /) -> None: ...
    def start_seq(self, index: int, /) -> int: ...
    def error_slots(self) -> list[int]: ...
    def forward(
        self,
        payload: bytes,
        seq: int,
        timestamp: int,
        marker: bool,
        keyframe: bool,
        exts: tuple[bytes, ...],
        /,
    ) -> int: ...
    def replay(self, index: int, packets: Sequence[Item], start: int, end: int, /) -> Counts: ...
    def resend(
        self, index: int, packets: Sequence[Item], rtx: tuple[int, int, int] | None, /
    ) -> Counts: ...
