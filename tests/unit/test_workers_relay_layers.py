"""The inter-worker relay carries simulcast layers: every layer Forwarder of the publisher's
worker is a source of its own (announced with its rid, its GOP, sender reports, bitrate and
frame rate), attached on the viewers' worker to ``forwarders["video"].layer(rid)``; keyframe
requests go back to that layer's SSRC. Two (three) Relays wired in memory, no processes."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from tests.unit.test_simulcast import SIZES, SSRCS, Publisher, ingress, viewer

from relaycast.media.forwarder import Forwarder
from relaycast.media.layers import layer_infos
from relaycast.media.stream import Stream
from relaycast.rtp.rtcp import RtcpSenderReport
from relaycast.workers.relay import ANNOUNCE, Relay, RelayForwarder, RelaySource


class Workers:
    """``count`` Relays whose messages are delivered at once, each with a stream ``live``."""

    def __init__(self, count: int) -> None:
        self.sent: list[tuple[int, int, bytes]] = []
        self.relays: list[Relay] = []
        for index in range(count):
            server: Any = SimpleNamespace(streams={}, config=SimpleNamespace(keyframe_interval=0.1))
            relay = Relay(index, count, server, self._sender(index))
            server.streams["live"] = Stream("live", relay.forwarder)
            self.relays.append(relay)

    def _sender(self, index: int) -> Any:
        def send(peer: int, message: bytes) -> bool:
            self.sent.append((index, peer, message))
            self.relays[peer].on_message(index, message)
            return True

        return send

    def stream(self, index: int) -> Stream:
        stream: Stream = self.relays[index].server.streams["live"]
        return stream

    def video(self, index: int) -> Forwarder:
        return self.stream(index).forwarders["video"]

    def watch(self, index: int) -> None:
        """Worker ``index`` has a viewer of ``live`` now (it tells the others)."""
        self.stream(index).subscribers.add(object())  # type: ignore[arg-type]
        self.relays[index].stream_changed("live")

    def announced(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, _, m in self.sent:
            if m[:1] == ANNOUNCE:
                out.append(json.loads(m[1:]))
        return out


def publish(workers: Workers, index: int = 0) -> tuple[Publisher, Any]:
    """A simulcast publisher (h, m, l) on worker ``index``, feeding its RelayForwarders."""
    leg, _, sink = ingress()
    leg.forwarders = workers.stream(index).forwarders  # (its Tracks come with the packets)
    return Publisher(leg), sink


def test_layers_are_relayed_announced_with_their_rid_and_selected_there() -> None:
    workers = Workers(2)
    workers.watch(1)
    pub, _ = publish(workers)
    pub.frame(keyframes=("h", "m", "l"))
    for _ in range(3):
        pub.frame()
    origin, there = workers.video(0), workers.video(1)
    assert isinstance(origin.layers["h"], RelayForwarder)
    assert origin.source is None  # simulcast: the root has no source, its layers do
    announced = {a["rid"]: a for a in workers.announced() if a["kind"] == "video"}
    assert set(announced) == {"h", "m", "l"}
    assert {a["ssrc"] for a in announced.values()} == set(SSRCS.values())
    assert len({a["id"] for a in announced.values()}) == 3  # a relay id per layer
    assert set(there.layers) == {"h", "m", "l"}
    for rid, layer in there.layers.items():
        source = layer.source
        assert isinstance(source, RelaySource) and source.rid == rid
        assert source.ssrc == SSRCS[rid] and layer.rid == rid and layer.parent is there
        assert len(layer.gop) == 8  # its own GOP, fed by the link
        size = layer.frame_size()
        assert size is not None and (size.width, size.height) == SIZES[rid]
    assert there.source is None
    # the selection there sees the layers ordered by picture size, all active
    infos = layer_infos(there, time.monotonic())
    assert [(i.rid, i.width, i.active) for i in infos] == [
        ("l", 320, True),
        ("m", 640, True),
        ("h", 1280, True),
    ]
    # a viewer on the other worker on layer m gets m's packets only
    _downtrack, sink = viewer(there.layers["m"])
    before = len(sink.rtp)
    pub.frame()
    assert len(sink.rtp) == before + 2
    assert sink.rtp[-1].payload == there.layers["m"].gop[-1].payload


def test_keyframe_requests_go_back_to_the_layer_ssrc_and_reports_follow() -> None:
    workers = Workers(2)
    workers.watch(1)
    pub, sink = publish(workers)
    pub.frame(keyframes=("h", "m", "l"))
    there = workers.video(1)
    for rid in ("l", "h"):
        sink.rtcp.clear()
        source = there.layers[rid].source
        assert isinstance(source, RelaySource)
        source._asked = 0.0  # (the relay spacing, not under test)
        there.layers[rid].request_keyframe()
        assert sink.plis() == [SSRCS[rid]], rid
    # per-layer sender reports, bitrate and frame rate, once a second
    origin = workers.video(0)
    ntp = 0x1234_5678_0000_0000
    reports = [RtcpSenderReport(SSRCS[r], ntp + n, pub.ts[r], 0, 0, []) for n, r in enumerate("hl")]
    pub.leg.on_rtcp(reports, 100.0)  # type: ignore[arg-type]
    for n, rid in enumerate(("h", "m", "l")):
        track = origin.layers[rid].source
        assert track is not None
        track.bitrate = 1_000_000.0 / (n + 1)
        track.frame_rate = 30.0 - n
    workers.relays[0].tick(time.monotonic())
    for n, rid in enumerate(("h", "m", "l")):
        source = there.layers[rid].source
        assert source is not None
        assert source.bitrate == 1_000_000.0 / (n + 1) and source.frame_rate == 30.0 - n
    h, m, l_ = (there.layers[r].source for r in ("h", "m", "l"))
    assert h is not None and m is not None and l_ is not None
    assert h.reception.last_sr == (ntp, pub.ts["h"], 100.0)
    assert l_.reception.last_sr == (ntp + 1, pub.ts["l"], 100.0)
    assert m.reception.last_sr is None


def test_a_late_worker_gets_every_layer_and_its_gop_and_layers_end_everywhere() -> None:
    workers = Workers(3)
    workers.watch(1)
    pub, _ = publish(workers)
    pub.frame(keyframes=("h", "m", "l"))
    pub.frame()
    workers.watch(2)  # subscribes while the layers are live
    late = workers.video(2)
    assert set(late.layers) == {"h", "m", "l"}
    for rid, layer in late.layers.items():
        assert len(layer.gop) == 4  # the origin's GOP of that layer, at once
        size = layer.frame_size()
        assert size is not None and (size.width, size.height) == SIZES[rid]
    assert workers.relays[0].stats()["relayed_sources_out"] == 3
    assert workers.relays[2].stats()["relayed_sources_in"] == 3
    pub.leg.close()  # the publisher goes: every layer's source goes on every worker
    for index in (1, 2):
        video = workers.video(index)
        assert all(layer.source is None for layer in video.layers.values())
        assert workers.relays[index].stats()["relayed_sources_in"] == 0
