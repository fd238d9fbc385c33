"""Counters the media plane keeps, and the snapshots the HTTP layer reads.

The media plane counts with plain integers (no locks, no library calls on the packet path); the
HTTP layer never reaches into sessions or tracks, it asks :meth:`MediaServer.snapshot` for a
:class:`ServerSnapshot` and renders that (JSON API, Prometheus exposition).

Naming follows Prometheus' rules, so an exporter can map them one to one: counters are totals in
packets, bytes or events (``*_total`` once exported), durations are histograms in seconds.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields
from typing import Any

from relaycast.rtp.resolution import FrameSize

__all__ = [
    "DurationHistogram",
    "HistogramSnapshot",
    "ServerCounters",
    "ServerSnapshot",
    "StreamCounters",
    "StreamSnapshot",
]


@dataclass
class StreamCounters:
    """Totals of one stream since it appeared (a stream that is dropped and comes back starts
    again at zero, which Prometheus' ``rate()`` reads as a counter reset)."""

    #: media from the publisher (after SRTP), packets and bytes
    ingress_packets: int = 0
    ingress_bytes: int = 0
    #: media to viewers (SRTP bytes on the wire), including retransmissions and fast start
    egress_packets: int = 0
    egress_bytes: int = 0
    #: sequence numbers viewers asked for in NACKs (RFC 4585 §6.2.1)
    nack_requested: int = 0
    #: of those, resent (as RTX when negotiated), and their bytes
    retransmitted_packets: int = 0
    retransmitted_bytes: int = 0
    #: of those, not resent: no longer cached, or refused by the viewer's budget/rules
    nack_missed: int = 0
    nack_refused: int = 0
    #: keyframe requests (PLI/FIR) from viewers, and those refused by the per-viewer limit
    keyframe_requests: int = 0
    keyframe_requests_refused: int = 0
    #: keyframe requests and NACKed sequence numbers we sent to the publisher
    keyframe_requests_sent: int = 0
    nacks_sent: int = 0
    #: RTX packets the publisher sent us
    publisher_retransmissions: int = 0
    #: SRTP/SRTCP that failed authentication or replay protection (RFC 3711 §3.3)
    srtp_auth_failures: int = 0
    #: RTP/RTCP that decrypted but did not parse, or that the session had no use for
    bad_packets: int = 0
    #: per-viewer send failures (full socket buffer) and exceptions caught in the fan-out
    send_errors: int = 0
    forward_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ServerCounters:
    """Totals of the whole media plane."""

    udp_packets_in: int = 0
    udp_bytes_in: int = 0
    #: every UDP byte we sent: media, retransmissions, RTCP, STUN and DTLS
    udp_bytes_out: int = 0
    #: datagrams thrown away before reaching a session: unknown first byte or an address that
    #: no session validated (RFC 7983 §7)
    garbage_dropped: int = 0
    #: Binding requests without valid USERNAME/MESSAGE-INTEGRITY/FINGERPRINT (RFC 8489 §9.1.3)
    stun_rejected: int = 0
    #: Binding requests whose transaction was already seen: answered, but nothing changed
    stun_replayed: int = 0
    #: a validated address another live session owns (never taken over)
    stun_address_conflicts: int = 0
    #: DTLS datagrams dropped because their record layer was malformed (RFC 6347 §4.1.2.7)
    dtls_bad_records: int = 0
    #: sessions closed because ICE+DTLS was not done within the handshake deadline
    handshake_timeouts: int = 0
    #: sessions closed because ICE consent expired (RFC 7675 §5.1)
    consent_timeouts: int = 0
    sessions_created: int = 0
    sessions_closed: int = 0
    send_errors: int = 0
    #: ICE-TCP (net/ice_tcp.py): connections accepted, refused by a cap, closed for a
    #: protocol violation (bad framing, garbage, no valid Binding first), closed for sending
    #: no valid Binding in time; bytes in and out (framing included)
    tcp_connections: int = 0
    tcp_refused: int = 0
    tcp_dropped: int = 0
    tcp_timeouts: int = 0
    tcp_bytes_in: int = 0
    tcp_bytes_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Seconds; from fast LAN joins to a viewer waiting for the publisher's next keyframe.
DEFAULT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative bucket counts as Prometheus exposes them (``le`` upper bounds, then +Inf)."""

    buckets: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bucket, then the total count (+Inf)
    sum: float
    count: int


class DurationHistogram:
    """A fixed-bucket histogram of durations in seconds (cheap: one bisect per observation)."""

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        running = 0
        for value in self._counts:
            running += value
            cumulative.append(running)
        return HistogramSnapshot(self.buckets, tuple(cumulative), self.sum, self.count)


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream as the HTTP layer sees it."""

    name: str
    live: bool
    viewers: int  # connected (DTLS up)
    viewers_connecting: int
    video_codec: str | None
    audio_codec: str | None
    live_for: float | None  # seconds since the publisher connected
    counters: dict[str, int]
    #: the picture size the cached keyframe announces (SPS, VP8/VP9/AV1 headers), if any
    frame_size: FrameSize | None = None
    #: simulcast (media/layers.py ``layer_snapshot``): the layers (lowest first), each
    #: viewer's layer, and how many viewers each layer has
    layers: list[dict[str, Any]] = field(default_factory=list)
    viewer_layers: list[dict[str, Any]] = field(default_factory=list)
    layer_viewers: dict[str, int] = field(default_factory=dict)
    #: the viewers' outgoing tracks by fan-out path: "native" (a slot of the C kernel) or
    #: "python" (not LIVE yet, a TCP path, the kernel off or unable to take it)
    fanout_paths: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSnapshot:
    """The media plane at one instant: totals, streams and the duration histograms."""

    sessions: int
    publishers: int
    subscribers: int
    counters: dict[str, int]
    streams: list[StreamSnapshot] = field(default_factory=list)
    #: ``time_to_first_keyframe`` (WHEP POST -> first keyframe sent to the viewer) and
    #: ``handshake`` (session created -> DTLS connected), seconds
    histograms: dict[str, HistogramSnapshot] = field(default_factory=dict)
