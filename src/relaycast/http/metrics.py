"""Prometheus exposition (``GET /metrics``) through ``prometheus_client``.

Each app has its own :class:`CollectorRegistry` (tests run several servers in one process)
holding prometheus_client's process collector and a :class:`RelaycastCollector`, which renders
:meth:`MediaServer.snapshot` at scrape time and never reaches into the media plane. Counters in
the snapshot are exported generically: a counter key ``foo_bytes`` becomes
``relaycast_foo_bytes_total`` (server) or ``relaycast_stream_foo_bytes_total{stream}``, so a
counter the media plane adds is exported without a change here (docs/metrics.md lists them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from relaycast import __version__
from relaycast.http.limits import ADMISSION_KEY, Admission
from relaycast.http.signalling import SERVER_KEY
from relaycast.http.tokens import visible_streams
from relaycast.media.stats import HistogramSnapshot, ServerSnapshot

__all__ = [
    "HISTOGRAMS",
    "METRICS_KEY",
    "SERVER_COUNTERS",
    "STREAM_COUNTERS",
    "ApiCap",
    "RelaycastCollector",
    "admission",
    "build_registry",
    "counter_name",
    "metrics_handler",
]

PREFIX = "relaycast_"

#: help strings of the media plane's server counters (``ServerCounters``)
SERVER_COUNTERS: dict[str, str] = {
    "udp_packets_in": "UDP datagrams received on the media port.",
    "udp_bytes_in": "UDP bytes received on the media port.",
    "udp_bytes_out": "UDP bytes sent: media, retransmissions, RTCP, STUN and DTLS.",
    "garbage_dropped": "Datagrams dropped before reaching a session: unknown first byte or "
    "an address no session validated (RFC 7983).",
    "stun_rejected": "STUN Binding requests that failed USERNAME/MESSAGE-INTEGRITY/"
    "FINGERPRINT checks.",
    "stun_replayed": "STUN Binding requests whose transaction was already seen.",
    "stun_address_conflicts": "Validated addresses that another live session owns.",
    "dtls_bad_records": "DTLS datagrams dropped for a malformed record layer.",
    "handshake_timeouts": "Sessions closed because ICE+DTLS did not finish in time.",
    "consent_timeouts": "Sessions closed because ICE consent expired (RFC 7675).",
    "sessions_created": "Sessions (publishers and viewers) created.",
    "sessions_closed": "Sessions closed.",
    "send_errors": "UDP sends that failed (full socket buffer).",
    "tcp_connections": "ICE-TCP connections accepted on the media port.",
    "tcp_refused": "ICE-TCP connections refused by the per-address or total cap.",
    "tcp_dropped": "ICE-TCP connections closed for bad framing, garbage or no valid STUN "
    "Binding request first.",
    "tcp_timeouts": "ICE-TCP connections closed for sending no valid STUN Binding request in time.",
    "tcp_bytes_in": "Bytes received on ICE-TCP connections (framing included).",
    "tcp_bytes_out": "Bytes sent on ICE-TCP connections (framing included).",
}

#: help strings of the per-stream counters (``StreamCounters``)
STREAM_COUNTERS: dict[str, str] = {
    "ingress_packets": "RTP packets received from the publisher (after SRTP).",
    "ingress_bytes": "RTP bytes received from the publisher (after SRTP).",
    "egress_packets": "RTP packets sent to viewers, retransmissions and fast start included.",
    "egress_bytes": "SRTP bytes sent to viewers, retransmissions and fast start included.",
    "nack_requested": "Sequence numbers viewers asked for in NACKs.",
    "retransmitted_packets": "NACKed packets resent to viewers.",
    "retransmitted_bytes": "Bytes of NACKed packets resent to viewers.",
    "nack_missed": "NACKed packets not resent: no longer cached.",
    "nack_refused": "NACKed packets not resent: refused by the viewer's budget or rules.",
    "keyframe_requests": "Keyframe requests (PLI/FIR) from viewers.",
    "keyframe_requests_refused": "Keyframe requests from viewers refused by the per-viewer limit.",
    "keyframe_requests_sent": "Keyframe requests sent to the publisher.",
    "nacks_sent": "Sequence numbers NACKed to the publisher.",
    "publisher_retransmissions": "RTX packets the publisher sent.",
    "srtp_auth_failures": "SRTP/SRTCP packets that failed authentication or replay checks.",
    "bad_packets": "RTP/RTCP packets that decrypted but did not parse or were of no use.",
    "send_errors": "Sends to viewers that failed (full socket buffer).",
    "forward_errors": "Exceptions caught while fanning a packet out.",
}

#: exported names that differ from the counter key
_RENAMED = {"garbage_dropped": "udp_garbage_dropped"}

#: snapshot histogram key -> (metric name, help)
HISTOGRAMS: dict[str, tuple[str, str]] = {
    "time_to_first_keyframe": (
        "relaycast_time_to_first_keyframe_seconds",
        "From a viewer's WHEP POST to the first keyframe sent to it.",
    ),
    "handshake": (
        "relaycast_handshake_duration_seconds",
        "From session creation to DTLS connected.",
    ),
}

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")

#: During one scrape: the stream names this request may see (private streams are left out of
#: the ``stream`` labels unless the scrape presents their publish key); None: every stream.
_VISIBLE: ContextVar[Callable[[str], bool] | None] = ContextVar("relaycast_visible", default=None)


def counter_name(key: str, scope: str = "") -> str:
    """The exported name of a snapshot counter, without the ``_total`` prometheus_client
    appends: ``counter_name("ingress_bytes", "stream_")`` is ``relaycast_stream_ingress_bytes``.
    """
    key = _NOT_NAME.sub("_", _RENAMED.get(key, key)).removesuffix("_total")
    return f"{PREFIX}{scope}{key}"


class ApiCap(Protocol):
    """A concurrency cap of the HTTP API (``/api/events``, ``/api/speedtest``)."""

    endpoint: str
    refused: dict[str, int]

    @property
    def open(self) -> int: ...


def admission(app: web.Application) -> Admission | None:
    """The app's admission limits (``refused`` by reason, ``client()``), None without."""
    return app.get(ADMISSION_KEY)


def _admission_refused(app: web.Application) -> Mapping[str, int]:
    limits = admission(app)
    return limits.refused if limits is not None else {}


def _histogram(name: str, doc: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [
        (repr(float(le)), float(n)) for le, n in zip(snap.buckets, snap.cumulative, strict=False)
    ]
    buckets.append(("+Inf", float(snap.count)))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snap.sum)


class RelaycastCollector(Collector):
    """Renders one :class:`ServerSnapshot` (plus admission and API refusals) per scrape."""

    def __init__(
        self,
        app: web.Application,
        snapshot: Callable[[], ServerSnapshot],
        caps: Iterable[ApiCap] = (),
    ) -> None:
        self.app = app
        self.snapshot = snapshot
        self.caps = list(caps)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        info = GaugeMetricFamily(
            f"{PREFIX}build_info", "relaycast version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            f"{PREFIX}streams", "Streams with a publisher or viewers.", value=len(snap.streams)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}sessions", "Publisher and viewer sessions.", value=snap.sessions
        )
        yield GaugeMetricFamily(f"{PREFIX}publishers", "Publisher sessions.", value=snap.publishers)
        yield GaugeMetricFamily(
            f"{PREFIX}subscribers", "Viewer sessions, connecting ones included.",
            value=snap.subscribers,
        )  # fmt: skip

        for key, value in snap.counters.items():
            doc = SERVER_COUNTERS.get(key, f"relaycast counter {key}.")
            yield CounterMetricFamily(counter_name(key), doc, value=value)

        live = GaugeMetricFamily(
            f"{PREFIX}stream_live",
            "1 while the stream's publisher is connected.",
            labels=["stream"],
        )
        viewers = GaugeMetricFamily(
            f"{PREFIX}viewers", "Connected viewers (DTLS up) of a stream.", labels=["stream"]
        )
        connecting = GaugeMetricFamily(
            f"{PREFIX}viewers_connecting",
            "Viewers of a stream whose connection is not up yet.",
            labels=["stream"],
        )
        counters: dict[str, CounterMetricFamily] = {}
        for key, doc in STREAM_COUNTERS.items():  # every family, even with no stream
            counters[key] = CounterMetricFamily(
                counter_name(key, "stream_"), doc, labels=["stream"]
            )
        visible = _VISIBLE.get()
        for stream in snap.streams:
            if visible is not None and not visible(stream.name):
                continue
            live.add_metric([stream.name], 1 if stream.live else 0)
            viewers.add_metric([stream.name], stream.viewers)
            connecting.add_metric([stream.name], stream.viewers_connecting)
            for key, value in stream.counters.items():
                family = counters.get(key)
                if family is None:
                    family = counters[key] = CounterMetricFamily(
                        counter_name(key, "stream_"),
                        f"relaycast stream counter {key}.",
                        labels=["stream"],
                    )
                family.add_metric([stream.name], value)
        yield live
        yield viewers
        yield connecting
        yield from counters.values()

        for key, (name, doc) in HISTOGRAMS.items():
            hist = snap.histograms.get(key)
            if hist is not None:
                yield _histogram(name, doc, hist)

        refused = CounterMetricFamily(
            f"{PREFIX}sessions_refused",
            "WHIP/WHEP sessions refused by the admission limits, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(_admission_refused(self.app).items()):
            refused.add_metric([reason], count)
        yield refused

        api_open = GaugeMetricFamily(
            f"{PREFIX}api_open_requests",
            "Open server-sent event streams and running speed tests.",
            labels=["endpoint"],
        )
        api_refused = CounterMetricFamily(
            f"{PREFIX}api_refused",
            "API requests refused by their concurrency caps or content type, by reason.",
            labels=["endpoint", "reason"],
        )
        for cap in self.caps:
            api_open.add_metric([cap.endpoint], cap.open)
            for reason, count in sorted(cap.refused.items()):
                api_refused.add_metric([cap.endpoint, reason], count)
        yield api_open
        yield api_refused


def build_registry(
    app: web.Application, snapshot: Callable[[], ServerSnapshot], caps: Iterable[ApiCap] = ()
) -> CollectorRegistry:
    """A registry of this app only: process metrics and the relaycast collector."""
    registry = CollectorRegistry(auto_describe=False)  # describing would snapshot at startup
    ProcessCollector(registry=registry)
    registry.register(RelaycastCollector(app, snapshot, caps))
    return registry


METRICS_KEY = web.AppKey("metrics_registry", CollectorRegistry)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition of this app's registry.  Private streams
    get ``stream`` labels only for a scrape with their publish key (``Authorization: Bearer``,
    Prometheus's ``authorization`` scrape setting)."""
    server = request.app.get(SERVER_KEY)
    allowed: Callable[[str], bool] | None = None
    if server is not None and server.config.private_streams:
        config = server.config
        shown = visible_streams(request, config, list(config.private_streams))
        allowed = lambda name: not config.is_private(name) or name in shown  # noqa: E731
    token = _VISIBLE.set(allowed)
    try:
        body = generate_latest(request.app[METRICS_KEY])
    finally:
        _VISIBLE.reset(token)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
