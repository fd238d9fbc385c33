"""``GET /metrics`` of a real server, parsed with prometheus_client's own parser: the
exposition follows Prometheus' rules, the counters count real media, refusals are exported, and
every metric the Grafana dashboard (docs/grafana-dashboard.json) queries is really exported.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.conftest import RelaycastServer, ServerFactory
from tests.integration import peers
from tests.integration.test_whip_whep_http import make_offer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
HISTOGRAMS = ("relaycast_time_to_first_keyframe_seconds", "relaycast_handshake_duration_seconds")
STREAM_COUNTERS = (
    "relaycast_stream_ingress_bytes_total",
    "relaycast_stream_ingress_packets_total",
    "relaycast_stream_egress_bytes_total",
    "relaycast_stream_egress_packets_total",
    "relaycast_stream_nack_requested_total",
    "relaycast_stream_retransmitted_bytes_total",
    "relaycast_stream_keyframe_requests_total",
    "relaycast_stream_srtp_auth_failures_total",
)
SERVER_COUNTERS = (
    "relaycast_udp_bytes_in_total",
    "relaycast_udp_bytes_out_total",
    "relaycast_udp_garbage_dropped_total",
    "relaycast_stun_rejected_total",
    "relaycast_handshake_timeouts_total",
    "relaycast_sessions_refused_total",
)


@pytest.fixture(scope="module")
def srv(module_server_factory: ServerFactory) -> RelaycastServer:
    return module_server_factory.start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Scrape:
    """One parsed scrape: the raw text, the families by name and every sample."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, default: float | None = None, **labels: str) -> float:
        """The one sample called *name* with exactly *labels* (else *default*, or KeyError)."""
        for sample in self.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
        if default is not None:
            return default
        raise KeyError(f"{name}{labels or ''} not in the scrape")

    def names(self) -> set[str]:
        """Every name a PromQL expression could use: samples and the families' series names,
        also for a labelled family that has no sample yet."""
        out = {s.name for s in self.samples}
        for family in self.families.values():
            out.add(family.name)
            if family.type == "counter":
                out.add(family.name + "_total")
            elif family.type == "histogram":
                out.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return out


async def scrape(http: aiohttp.ClientSession, base: str) -> Scrape:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return Scrape(await response.text())


# -- format ---------------------------------------------------------------------------------------


async def test_every_family_typed_and_counters_end_in_total(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    got = await scrape(http, srv.http)
    typed: dict[str, str] = {}
    for line in got.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in typed, f"{name} typed twice"
            typed[name] = kind
    assert typed, got.text
    for name, kind in typed.items():
        assert kind in ("counter", "gauge", "histogram"), (name, kind)
        assert (kind == "counter") == name.endswith("_total"), (name, kind)
        assert "_bps" not in name, name  # rates come from counters, not from gauges
    # every sample line belongs to a typed family (a line without TYPE would be "untyped")
    for family in got.families.values():
        assert family.type != "unknown", family.name
    for line in got.text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name is not None, line
            base = re.sub(r"_(bucket|sum|count)$", "", name.group())
            assert name.group() in typed or base in typed, line

    for name in HISTOGRAMS:
        assert got.families[name].type == "histogram"
        assert got.value(name + "_bucket", le="+Inf") == got.value(name + "_count")
    for name in SERVER_COUNTERS:
        assert typed.get(name) == "counter", name
    for name in STREAM_COUNTERS:  # typed even before there is a stream
        assert typed.get(name) == "counter", name
    assert got.value("process_resident_memory_bytes") > 1_000_000
    assert got.value("process_cpu_seconds_total") > 0
    assert got.value("relaycast_streams") == 0
    assert got.value("relaycast_build_info", version="0.1.0") == 1


# -- counting real media --------------------------------------------------------------------------


async def test_counters_follow_a_live_stream(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    publisher = await peers.publish(srv.http, "live", "test-key")
    viewer = await peers.view(srv.http, "live")
    try:
        assert await viewer.wait_frames("video", 20, timeout=20) >= 20
        first = await scrape(http, srv.http)
        await asyncio.sleep(1.5)
        second = await scrape(http, srv.http)
        assert await viewer.wait_frames("video", 30, timeout=20) >= 30
    finally:
        await viewer.close(srv.http)
        async with http.delete(
            f"{srv.http}{publisher.location}", headers={"Authorization": "Bearer test-key"}
        ) as d:
            assert d.status == 200
        await publisher.pc.close()

    live = {"stream": "live"}
    assert second.value("relaycast_streams") == 1
    assert second.value("relaycast_stream_live", **live) == 1
    assert second.value("relaycast_viewers", **live) == 1
    assert second.value("relaycast_sessions") == 2
    for name in (
        "relaycast_stream_ingress_bytes_total",
        "relaycast_stream_ingress_packets_total",
        "relaycast_stream_egress_bytes_total",
        "relaycast_stream_egress_packets_total",
    ):
        before, after = first.value(name, **live), second.value(name, **live)
        assert before > 0 and after > before, (name, before, after)

    # 1.5 s of a 320x240 VP8 pattern at 30 fps + 50 opus packets a second
    def grown(name: str) -> float:
        return second.value(name, **live) - first.value(name, **live)

    assert grown("relaycast_stream_ingress_packets_total") > 60
    assert grown("relaycast_stream_ingress_bytes_total") > 3_000
    # one viewer: about what came in goes out (plus SRTP overhead)
    assert grown("relaycast_stream_egress_packets_total") > 60
    for name in ("relaycast_udp_bytes_in_total", "relaycast_udp_bytes_out_total"):
        assert second.value(name) > first.value(name) > 0, name
    # UDP in counts SRTP overhead and RTCP on top of the stream's RTP bytes
    assert second.value("relaycast_udp_bytes_in_total") >= second.value(
        "relaycast_stream_ingress_bytes_total", **live
    )
    # the viewer's first keyframe, and two DTLS handshakes (publisher and viewer)
    assert second.value("relaycast_time_to_first_keyframe_seconds_count") >= 1
    assert second.value("relaycast_handshake_duration_seconds_count") >= 2
    assert second.value("relaycast_handshake_duration_seconds_sum") > 0


async def test_refusals_are_counted_by_reason(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    before = await scrape(http, srv.http)
    assert before.families["relaycast_sessions_refused"].type == "counter"
    reasons = {s.labels["reason"] for s in before.families["relaycast_sessions_refused"].samples}
    assert {"rate", "per_ip", "total", "unknown_stream"} <= reasons, reasons

    # the server has keys for "live" and "other" only: a viewer of anything else is refused
    offer = await make_offer(send=False)
    async with http.post(
        f"{srv.http}/whep/nosuch", data=offer, headers={"Content-Type": "application/sdp"}
    ) as r:
        assert r.status == 404, await r.text()
    async with http.post(
        f"{srv.http}/api/speedtest", data=b"x", headers={"Content-Type": "text/plain"}
    ) as r:
        assert r.status == 415

    after = await scrape(http, srv.http)
    name = "relaycast_sessions_refused_total"
    assert after.value(name, reason="unknown_stream") == (
        before.value(name, reason="unknown_stream") + 1
    )
    assert after.value(name, reason="rate") == before.value(name, reason="rate")
    api = "relaycast_api_refused_total"
    previous = before.value(api, default=0.0, endpoint="speedtest", reason="content_type")
    assert after.value(api, endpoint="speedtest", reason="content_type") == previous + 1


# -- the Grafana dashboard ------------------------------------------------------------------------


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            exprs.append(variable["query"]["query"])
    return exprs


METRIC = re.compile(r"\b(?:relaycast|process)_[a-z0-9_]+")


async def test_dashboard_queries_only_exported_metrics(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert "stream" in variables
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]

    exported = (await scrape(http, srv.http)).names()
    used: set[str] = set()
    for expr in _exprs(dashboard):
        names = METRIC.findall(expr)
        assert names, expr
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not exported"
            used.add(name)
        # rate()/increase() only over counters and histogram buckets
        for name in re.findall(r"(?:rate|increase)\((\w+)", expr):
            assert name.endswith(("_total", "_bucket")), expr
    for wanted in (
        "relaycast_viewers",
        "relaycast_stream_ingress_bytes_total",
        "relaycast_stream_egress_bytes_total",
        "relaycast_time_to_first_keyframe_seconds_bucket",
        "relaycast_handshake_duration_seconds_bucket",
        "relaycast_stream_nack_requested_total",
        "relaycast_stream_retransmitted_packets_total",
        "relaycast_stream_keyframe_requests_total",
        "relaycast_stream_srtp_auth_failures_total",
        "relaycast_udp_garbage_dropped_total",
        "relaycast_sessions_refused_total",
        "relaycast_handshake_timeouts_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert wanted in used, f"no panel shows {wanted}"


async def test_metrics_doc_lists_every_relaycast_family(
    srv: RelaycastServer, http: aiohttp.ClientSession
) -> None:
    doc = METRICS_DOC.read_text()
    got = await scrape(http, srv.http)
    for family in got.families.values():
        if not family.name.startswith("relaycast_"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in doc, f"docs/metrics.md does not describe {name}"
