"""RTP timestamps onto one wall-clock timeline, for audio/video sync in the recording.

Each track's RTP clock is mapped to the publisher's NTP clock by its latest sender report
(RFC 3550 §6.4.1); the publisher's NTP clock is mapped to ours once per publisher, by the first
sender report it sends (``offset = NTP - arrival``), so the tracks of one publisher share the
mapping and stay in sync to the precision of its capture clock. Before a track's first sender
report, its first packet's arrival time anchors it.
"""

from __future__ import annotations

__all__ = ["PublisherClock", "TrackClock", "ntp_seconds"]

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 to 1970 (RFC 868)
TS_MOD = 1 << 32


def ntp_seconds(ntp: int) -> float:
    """A 64-bit NTP timestamp as Unix seconds."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


class PublisherClock:
    """The offset between one publisher's NTP clock and our arrival clock."""

    def __init__(self) -> None:
        self.offset: float | None = None

    def observe(self, ntp: float, arrival: float) -> float:
        if self.offset is None:
            self.offset = ntp - arrival
        return self.offset


class TrackClock:
    """Extended RTP timestamps of one SSRC and their time on our clock (seconds)."""

    def __init__(self, clock_rate: int, publisher: PublisherClock) -> None:
        self.rate = clock_rate
        self.publisher = publisher
        self._last: int | None = None  # last extended timestamp
        self._anchor: tuple[int, float] | None = None  # (extended ts, our seconds) by arrival
        self._report: tuple[int, float] | None = None  # (extended ts, publisher NTP seconds)

    def extend(self, timestamp: int) -> int:
        """The 32-bit timestamp unwrapped next to the last one seen."""
        last = self._last
        if last is None:
            ext = timestamp
        else:
            ext = last + ((timestamp - last + TS_MOD // 2) % TS_MOD) - TS_MOD // 2
        self._last = ext if last is None else max(last, ext)
        return ext

    def sender_report(self, ntp: int, rtp_timestamp: int, arrival: float) -> None:
        seconds = ntp_seconds(ntp)
        self.publisher.observe(seconds, arrival)
        self._report = (self.extend(rtp_timestamp), seconds)

    def time(self, timestamp: int, arrival: float) -> float:
        """Our time (Unix seconds) of the frame with this RTP timestamp that arrived then."""
        ext = self.extend(timestamp)
        offset = self.publisher.offset
        if self._report is not None and offset is not None:
            ts, ntp = self._report
            return ntp + (ext - ts) / self.rate - offset
        if self._anchor is None:
            self._anchor = (ext, arrival)
        ts, at = self._anchor
        return at + (ext - ts) / self.rate
