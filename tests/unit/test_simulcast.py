"""Simulcast on the server: packets to layers (RID, repaired RID, SSRC), per-layer Forwarders,
keyframe requests per layer, layer switches at keyframes with continuous sequence numbers and
timestamps, and the selection's rules (hysteresis, pause, pin)."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest
from tests.unit.fake_sink import FakeSink

import relaycast.media.downtrack as downtrack_module
from relaycast.media.downtrack import LIVE, MID_URI, PAUSED, WAITING, DownTrack, ExtLayout
from relaycast.media.forwarder import Forwarder
from relaycast.media.ingress import IngressLeg
from relaycast.media.layers import LayerInfo, LayerSelector, ViewerEstimate, layer_infos
from relaycast.media.stats import StreamCounters
from relaycast.rtp.packet import build_extensions
from relaycast.rtp.rtcp import RtcpSenderReport
from relaycast.sdp import negotiate_publish, parse_sdp

SAMPLES = Path(__file__).parent / "sdp_samples"
SIZES = {"h": (1280, 720), "m": (640, 360), "l": (320, 180)}
SSRCS = {"h": 0x1000, "m": 0x2000, "l": 0x3000}
RTX_SSRCS = {"h": 0x1001, "m": 0x2001, "l": 0x3001}
# the Chrome sample's extension ids: mid 9, rid 10, repaired rid 11
MID_ID, RID_ID, RRID_ID = 9, 10, 11


def vp8(keyframe: bool, size: tuple[int, int] = (0, 0), body: int = 800) -> bytes:
    if keyframe:
        frame = bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + struct.pack("<HH", *size)
    else:
        frame = bytes([0x11, 0x02, 0x00])
    return b"\x10" + frame + b"x" * body


def packet(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    *,
    rid: str | None = None,
    rrid: str | None = None,
    ext_ids: tuple[int, int] = (RID_ID, RRID_ID),
    mid_id: int = MID_ID,
) -> bytes:
    exts = [(mid_id, b"1")]
    if rid is not None:
        exts.append((ext_ids[0], rid.encode()))
    if rrid is not None:
        exts.append((ext_ids[1], rrid.encode()))
    profile, block = build_extensions(exts)
    return (
        struct.pack("!BBHII", 0x90, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + struct.pack("!HH", profile, len(block) // 4)
        + block
        + payload
    )


def ingress(sample: str = "chrome_simulcast.sdp") -> tuple[IngressLeg, Forwarder, FakeSink]:
    negotiated = negotiate_publish(parse_sdp((SAMPLES / sample).read_text()))
    forwarders = {"audio": Forwarder("audio", use_native=False)}
    forwarders["video"] = Forwarder("video", use_native=False)
    leg = IngressLeg(
        negotiated,
        forwarders=forwarders,
        counters=StreamCounters(),
        sender_ssrc=4242,
        cname="server",
        max_bitrate=10_000_000,
        keyframe_interval=0.1,
    )
    sink = FakeSink()
    leg.sink = sink
    return leg, forwarders["video"], sink


class Publisher:
    """Sends frames of three layers (each its own SSRC, sequence and timestamp space)."""

    def __init__(self, leg: IngressLeg, rids: tuple[str, ...] = ("h", "m", "l")) -> None:
        self.leg = leg
        self.rids = rids
        self.seq = {rid: 1000 * (n + 1) for n, rid in enumerate(rids)}
        self.ts = {rid: 100_000 * (n + 1) for n, rid in enumerate(rids)}
        self.with_rid = True

    def frame(self, keyframes: tuple[str, ...] = (), packets: int = 2) -> None:
        for rid in self.rids:
            key = rid in keyframes
            for n in range(packets):
                payload = vp8(key and n == 0, SIZES.get(rid, (0, 0)))
                self.leg.on_rtp(
                    packet(
                        96,
                        self.seq[rid],
                        self.ts[rid],
                        SSRCS[rid],
                        payload,
                        rid=rid if self.with_rid else None,
                    ),
                    0,
                )
                self.seq[rid] += 1
            self.ts[rid] += 3000


def viewer(forwarder: Forwarder, ssrc: int = 0x7777) -> tuple[DownTrack, FakeSink]:
    downtrack = DownTrack(
        kind="video",
        forwarder=forwarder,
        ssrc=ssrc,
        rtx_ssrc=None,
        payload_types={"vp8": 100},
        rtx_payload_types={},
        clock_rate=90000,
        layout=ExtLayout(((4, MID_URI, b"v"),)),
        cname="v",
    )
    sink = FakeSink()
    if forwarder.source is not None:
        downtrack.source_changed(forwarder.source)
    downtrack.connect(sink)
    return downtrack, sink


# -- packets to layers ------------------------------------------------------------------------


def test_layers_are_mapped_by_rid_then_by_ssrc() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    assert set(video.layers) == {"h", "m", "l"}
    assert video.source is None  # the single-encoding Forwarder stays unused
    for rid, forwarder in video.layers.items():
        assert forwarder.source is not None
        assert forwarder.source.ssrc == SSRCS[rid] and forwarder.source.rid == rid
        assert forwarder.rid == rid and forwarder.parent is video
        assert forwarder.frame_size() is not None
        assert (forwarder.frame_size().width, forwarder.frame_size().height) == SIZES[rid]  # type: ignore[union-attr]
    # once learned, the SSRC alone routes (Chrome stops sending the RID after our RR)
    pub.with_rid = False
    before = {rid: f.packets for rid, f in video.layers.items()}
    pub.frame()
    assert {rid: f.packets - before[rid] for rid, f in video.layers.items()} == {
        "h": 2,
        "m": 2,
        "l": 2,
    }
    # an unknown rid, or a new SSRC without one, is not a layer: dropped and counted
    bad = leg.counters.bad_packets
    leg.on_rtp(packet(96, 1, 1, 0x9999, vp8(True), rid="x"), 0)
    leg.on_rtp(packet(96, 1, 1, 0x9998, vp8(True)), 0)
    assert leg.counters.bad_packets == bad + 2
    assert set(video.layers) == {"h", "m", "l"} and 0x9999 not in leg.tracks
    # every layer is a Track with its own receiver report block
    layer_ssrcs = {t.ssrc for t in leg.tracks.values() if t.kind == "video"}
    assert layer_ssrcs == set(SSRCS.values())


def test_rtx_is_mapped_by_repaired_rid_or_the_offer_fid_pairs() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    original = pub.seq["m"] - 1
    cached = video.layers["m"].lookup(original)
    assert cached is not None
    # RTX of layer m (pt 97), named by repaired-rtp-stream-id: the original comes back
    video.layers["m"].cache[original & 1023] = None  # as if it had been lost
    leg.on_rtp(
        packet(
            97,
            5,
            cached.timestamp,
            RTX_SSRCS["m"],
            struct.pack("!H", original) + cached.payload,
            rrid="m",
        ),
        0,
    )
    restored = video.layers["m"].lookup(original)
    assert restored is not None and restored.payload == cached.payload
    assert leg.tracks[SSRCS["m"]].rtx_ssrc == RTX_SSRCS["m"]
    assert video.layers["h"].lookup(original) is None

    # Firefox declares FID pairs per layer: an RTX SSRC without a RID maps through them
    leg, video, _ = ingress("firefox_simulcast.sdp")
    ssrc_f, rtx_f = 2763478412, 1203947165  # the offer's first FID group
    ids = {"ext_ids": (8, 9), "mid_id": 3}
    leg.on_rtp(packet(120, 10, 0, ssrc_f, vp8(True, (640, 480)), rid="f", **ids), 0)  # type: ignore[arg-type]
    leg.on_rtp(packet(124, 1, 0, rtx_f, struct.pack("!H", 11) + vp8(False), **ids), 0)  # type: ignore[arg-type]
    assert video.layers["f"].lookup(11) is not None
    assert leg.tracks[ssrc_f].rtx_ssrc == rtx_f


def test_obs_layers_without_rid_packets_follow_the_offer_ssrc_order() -> None:
    leg, video, _ = ingress("obs_simulcast.sdp")
    for n, ssrc in enumerate((1924484638, 1924484639, 1924484640)):
        leg.on_rtp(packet(96, 1, 0, ssrc, bytes([0x65]) + b"idr"), 0)
        assert video.layers[str(n)].source is not None
        assert video.layers[str(n)].source.ssrc == ssrc  # type: ignore[union-attr]


def test_keyframe_requests_go_to_the_layer_ssrc() -> None:
    leg, video, sink = ingress()
    Publisher(leg).frame(keyframes=("h", "m", "l"))
    sink.rtcp.clear()
    video.layers["m"].request_keyframe()
    assert sink.plis() == [SSRCS["m"]]
    sink.rtcp.clear()
    video.layers["l"].request_keyframe()
    assert sink.plis() == [SSRCS["l"]]


def test_each_layer_has_its_own_gop_for_fast_start() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    for _ in range(5):
        pub.frame()
    for rid in ("h", "m", "l"):
        assert len(video.layers[rid].gop) == 12
    downtrack, sink = viewer(video.layers["l"])
    assert downtrack.state is LIVE  # the cached GOP of l was replayed at once (no asyncio)
    assert len(sink.rtp) == 12
    assert all(p.ssrc == 0x7777 for p in sink.rtp)
    assert sink.rtp[0].payload == video.layers["l"].gop[0].payload


# -- switching at a keyframe --------------------------------------------------------------------


def frozen_clock(monkeypatch: pytest.MonkeyPatch, now: list[float]) -> None:
    class Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

    monkeypatch.setattr(downtrack_module, "time", Clock)


def test_a_switch_waits_for_the_target_keyframe_and_keeps_seq_and_ts_continuous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    frozen_clock(monkeypatch, now)
    leg, video, sink = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    downtrack, vsink = viewer(video.layers["l"])
    for _ in range(3):
        pub.frame()
    sink.rtcp.clear()
    downtrack.switch_to(video.layers["h"])
    assert downtrack.pending is video.layers["h"]
    assert sink.plis() == [SSRCS["h"]]  # the target layer is asked for a keyframe
    assert downtrack.layer == "l" and downtrack.target_layer == "h"
    for _ in range(3):  # no keyframe of h yet: l goes on
        pub.frame()
    got_l = len(vsink.rtp)
    assert got_l == 14 and downtrack.forwarder is video.layers["l"]
    pub.frame(keyframes=("h",))
    assert downtrack.forwarder is video.layers["h"] and downtrack.layer == "h"
    assert downtrack.pending is None and downtrack.layer_switches == 1
    pub.frame()
    out = vsink.rtp
    assert len(out) == got_l + 4  # 2 packets of h's keyframe, 2 of the next frame, no l
    seqs = [p.sequence_number for p in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert {p.ssrc for p in out} == {0x7777}
    assert out[got_l].payload == vp8(True, SIZES["h"])
    # the timestamp moves forward (no SR: by the time since the last packet of l, >= 1 tick)
    ts = [p.timestamp for p in out]
    assert 0 < (ts[got_l] - ts[got_l - 1]) & 0xFFFFFFFF < 90000
    assert (ts[-1] - ts[got_l]) & 0xFFFFFFFF == 3000  # h's own frame spacing from there on
    assert video.layers["l"].downtracks == () and video.layers["h"].downtracks == (downtrack,)


def test_a_switch_aligns_timestamps_through_the_sender_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    frozen_clock(monkeypatch, now)
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    # both layers' SRs: the same capture instant (NTP) at each one's RTP time
    ntp = 0x1234_5678_0000_0000
    reports = [RtcpSenderReport(SSRCS[r], ntp, pub.ts[r], 0, 0, []) for r in ("h", "l")]
    leg.on_rtcp(reports, 100.0)  # type: ignore[arg-type]
    downtrack, vsink = viewer(video.layers["l"])
    pub.frame()
    pub.frame()
    last_l = vsink.rtp[-1].timestamp
    downtrack.switch_to(video.layers["h"])
    pub.frame(keyframes=("h",))
    first_h = next(p for p in vsink.rtp if p.payload == vp8(True, SIZES["h"]))
    # h's keyframe was captured one frame (3000 ticks) after l's last frame
    assert (first_h.timestamp - last_l) & 0xFFFFFFFF == 3000


def test_nacks_from_before_a_switch_are_not_answered_from_the_new_layer() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    downtrack, vsink = viewer(video.layers["l"])
    pub.frame()
    old_seq = vsink.rtp[1].sequence_number
    downtrack.switch_to(video.layers["h"])
    pub.frame(keyframes=("h",))
    new_seq = vsink.rtp[-1].sequence_number
    sent = len(vsink.rtp)
    downtrack.on_nack([old_seq, new_seq], 10.0)
    assert downtrack.nack_misses == 1 and downtrack.retransmitted == 1
    assert len(vsink.rtp) == sent + 1
    assert vsink.rtp[-1].payload == vsink.rtp[sent - 1].payload  # the h packet again


def test_pause_and_resume_continue_the_sequence() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    downtrack, vsink = viewer(video.layers["m"])
    pub.frame()
    downtrack.pause()
    assert downtrack.state is PAUSED and downtrack.layer is None
    assert video.layers["m"].downtracks == ()
    sent = len(vsink.rtp)
    pub.frame(keyframes=("l",))
    assert len(vsink.rtp) == sent  # paused: nothing
    downtrack.switch_to(video.layers["l"], fast_start=False)  # resume at l's next keyframe
    assert downtrack.state is WAITING
    pub.frame()
    assert len(vsink.rtp) == sent  # a delta frame: still waiting
    pub.frame(keyframes=("l",))
    assert downtrack.state is LIVE and len(vsink.rtp) == sent + 2
    assert (vsink.rtp[sent].sequence_number - vsink.rtp[sent - 1].sequence_number) & 0xFFFF == 1


def test_a_pending_switch_is_dropped_when_the_target_layer_goes_away() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    downtrack, _ = viewer(video.layers["l"])
    downtrack.switch_to(video.layers["h"])
    h_track = video.layers["h"].source
    assert h_track is not None
    video.layers["h"].detach_source(h_track)
    assert downtrack.pending is None and downtrack.forwarder is video.layers["l"]
    downtrack.close()
    assert video.layers["l"].downtracks == ()


# -- the selection ------------------------------------------------------------------------------


def layers(*rates: int, active: bool = True) -> list[LayerInfo]:
    names = ["q", "h", "f"]
    return [
        LayerInfo(names[n], 320 << n, 180 << n, 30.0, rate, active) for n, rate in enumerate(rates)
    ]


LAYERS = layers(200_000, 600_000, 2_000_000)


def test_no_estimate_gives_the_top_layer_and_a_first_choice_has_no_hold() -> None:
    selector = LayerSelector()
    assert selector.decide(LAYERS, None, None, 0.0).target == "f"
    assert selector.decide(LAYERS, None, 700_000, 0.0).target == "h"
    assert LayerSelector().decide(LAYERS, None, 100_000, 0.0).target is None


def test_down_at_once_up_after_three_seconds_above_the_margin() -> None:
    selector = LayerSelector()
    d = selector.decide(LAYERS, "f", 1_500_000, 0.0)
    assert d == d.__class__("h", "fits 1.5 Mbit/s estimate")
    # 2.2 Mbit/s is not 1.15 x 2 Mbit/s: no step up, however long
    for t in range(10):
        assert selector.decide(LAYERS, "h", 2_200_000, float(t)).target == "h"
    # 2.4 Mbit/s is: after 3 s held
    assert selector.decide(LAYERS, "h", 2_400_000, 20.0).target == "h"
    assert "up in 3 s" in selector.decide(LAYERS, "h", 2_400_000, 20.0).reason
    assert selector.decide(LAYERS, "h", 2_400_000, 22.9).target == "h"
    assert selector.decide(LAYERS, "h", 2_400_000, 23.0).target == "f"
    # a dip restarts the hold
    selector.decide(LAYERS, "h", 2_400_000, 30.0)
    selector.decide(LAYERS, "h", 1_000_000, 31.0)
    assert selector.decide(LAYERS, "h", 2_400_000, 32.0).target == "h"
    assert selector.decide(LAYERS, "h", 2_400_000, 34.9).target == "h"
    assert selector.decide(LAYERS, "h", 2_400_000, 35.0).target == "f"


def test_an_estimate_just_below_the_layer_goes_down_only_if_it_stays() -> None:
    """A dip of the estimate to 0.95 x the layer's rate (after a probe's queue, seen with a
    Chromium viewer at 800 kbit/s on a 470 kbit/s layer) is not a reason to go down; one that
    lasts 1 s is, and one far below goes down at once."""
    selector = LayerSelector()
    assert selector.decide(LAYERS, "h", 570_000, 0.0).target == "h"
    assert "just below h" in selector.decide(LAYERS, "h", 570_000, 0.5).reason
    assert selector.decide(LAYERS, "h", 700_000, 0.8).target == "h"  # back: the hold ends
    assert selector.decide(LAYERS, "h", 570_000, 1.0).target == "h"
    assert selector.decide(LAYERS, "h", 570_000, 1.9).target == "h"
    assert selector.decide(LAYERS, "h", 570_000, 2.0).target == "q"
    assert LayerSelector().decide(LAYERS, "h", 470_000, 0.0).target == "q"


def test_the_hold_survives_the_candidate_changing_between_higher_layers() -> None:
    """From q, the estimate sits around the top layer's bitrate x 1.15 while both move: the
    best fitting higher layer flips between h and f every second. The hold counts from when
    a higher layer first fitted (seen with Chromium: a viewer stuck at 180p in Auto)."""
    selector = LayerSelector()
    assert selector.decide(LAYERS, "q", 100_000, 0.0).target == "q"  # below q: pauses in 2 s
    flipping = [2_400_000, 2_200_000, 2_400_000, 2_200_000]  # f fits, only h fits, ...
    targets = [selector.decide(LAYERS, "q", est, 10.0 + t).target for t, est in enumerate(flipping)]
    assert targets == ["q", "q", "q", "h"]  # 3 s after 10.0: the best fitting then (2.2: h)


def test_pause_when_nothing_fits_for_two_seconds_and_resume_with_the_same_hold() -> None:
    selector = LayerSelector()
    d = selector.decide(LAYERS, "h", 150_000, 0.0)  # the lowest layer first
    assert d.target == "q"
    assert d.reason == "estimate 150 kbit/s below lowest layer: video pauses in 2 s"
    assert selector.decide(LAYERS, "q", 150_000, 1.9).target == "q"
    d = selector.decide(LAYERS, "q", 150_000, 2.0)
    assert d.target is None and d.reason == "estimate 150 kbit/s below lowest layer: video paused"
    assert selector.decide(LAYERS, None, 210_000, 1.0).target is None  # fits, not with margin
    assert selector.decide(LAYERS, None, 240_000, 2.0).target is None
    assert selector.decide(LAYERS, None, 240_000, 4.9).target is None
    assert selector.decide(LAYERS, None, 240_000, 5.0).target == "q"


def test_a_dip_below_the_lowest_layer_does_not_pause() -> None:
    """A keyframe on the lowest layer, or a dip of the estimate, shorter than the hold: the
    video goes on (a 250 kbit/s Chromium viewer of a 140 kbit/s layer paused on such dips)."""
    selector = LayerSelector()
    assert selector.decide(LAYERS, "q", 150_000, 0.0).target == "q"
    assert selector.decide(LAYERS, "q", 150_000, 1.5).target == "q"
    assert selector.decide(LAYERS, "q", 260_000, 1.8).target == "q"  # back above: the hold ends
    assert selector.decide(LAYERS, "q", 150_000, 2.5).target == "q"
    assert selector.decide(LAYERS, "q", 150_000, 4.4).target == "q"
    assert selector.decide(LAYERS, "q", 150_000, 4.5).target is None


def test_a_pause_resumes_with_the_lowest_layer_whatever_the_estimate() -> None:
    selector = LayerSelector()
    selector.decide(LAYERS, "q", 100_000, 0.0)
    assert selector.decide(LAYERS, "q", 100_000, 2.0).target is None
    assert selector.decide(LAYERS, None, 5_000_000, 3.0).target is None
    assert selector.decide(LAYERS, None, 5_000_000, 6.0).target == "q"


def test_a_probe_that_never_confirms_delays_a_step_up_by_probe_patience_only() -> None:
    selector = LayerSelector()
    never = lambda bps: False  # noqa: E731
    selector.decide(LAYERS, "h", 2_400_000, 0.0, never)
    for t in (3.0, 6.0, 10.9):
        assert selector.decide(LAYERS, "h", 2_400_000, t, never).target == "h"
    assert selector.decide(LAYERS, "h", 2_400_000, 11.0, never).target == "f"


def test_probe_must_confirm_a_step_up_when_there_is_a_prober() -> None:
    selector = LayerSelector()
    asked: list[int] = []

    def probe_ok(bps: int) -> bool:
        asked.append(bps)
        return len(asked) > 1

    selector.decide(LAYERS, "h", 2_400_000, 0.0, probe_ok)
    d = selector.decide(LAYERS, "h", 2_400_000, 3.0, probe_ok)
    assert d.target == "h" and "probing for f" in d.reason
    assert selector.decide(LAYERS, "h", 2_400_000, 3.5, probe_ok).target == "f"
    assert asked == [2_000_000, 2_000_000]


def test_pinned_layer_wins_while_it_is_sent() -> None:
    selector = LayerSelector()
    selector.pin("q")
    assert selector.decide(LAYERS, "f", 10_000_000, 0.0) == selector.decide(
        LAYERS, "f", 10_000_000, 0.0
    )
    d = selector.decide(LAYERS, "f", 10_000_000, 0.0)
    assert (d.target, d.reason, selector.mode) == ("q", "pinned by viewer", "pinned")
    dropped = [LayerInfo("q", 320, 180, 0.0, 0, False), LAYERS[1], LAYERS[2]]
    d = selector.decide(dropped, "q", 700_000, 0.0)
    assert d.target == "h" and d.reason.startswith("pinned layer q is not sent")
    selector.pin(None)
    assert selector.mode == "auto"
    assert selector.decide(LAYERS, "q", None, 0.0).target == "f"


def test_layer_infos_order_by_picture_size_and_mark_silent_layers() -> None:
    leg, video, _ = ingress()
    pub = Publisher(leg)
    pub.frame(keyframes=("h", "m", "l"))
    infos = layer_infos(video, leg.tracks[SSRCS["h"]].last_arrival + 0.5)
    assert [(i.rid, i.width, i.height, i.active) for i in infos] == [
        ("l", 320, 180, True),
        ("m", 640, 360, True),
        ("h", 1280, 720, True),
    ]
    assert not any(i.active for i in layer_infos(video, leg.tracks[SSRCS["h"]].last_arrival + 5))


def test_the_fallback_estimate_follows_remb_and_receiver_report_loss() -> None:
    estimate = ViewerEstimate()
    assert estimate.estimate_bps(0.0) is None
    estimate.on_receiver_report(0.0, 2_000_000, 0.0)
    assert estimate.estimate_bps(0.0) is None  # no loss: no constraint
    estimate.on_receiver_report(0.2, 2_000_000, 1.0)
    assert estimate.estimate_bps(1.0) == 1_800_000
    estimate.on_receiver_report(0.0, 1_800_000, 2.0)
    assert estimate.estimate_bps(2.0) == 1_944_000
    estimate.on_remb(500_000, 2.0)
    assert estimate.estimate_bps(3.0) == 500_000
    assert estimate.estimate_bps(7.5) == 1_944_000  # the REMB is stale
