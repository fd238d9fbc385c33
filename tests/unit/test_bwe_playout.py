"""Playout delay per viewer and the congestion wiring of a viewer (media/feedback)."""

from __future__ import annotations

import pytest

from relaycast.media.bwe.history import PySequencer
from relaycast.media.downtrack import MID_URI, TWCC_URI, DownTrack, ExtLayout
from relaycast.media.feedback.congestion import ViewerCongestion
from relaycast.media.feedback.playout_delay import (
    MAX_MS,
    PlayoutDelayController,
    decode,
    encode,
)
from relaycast.media.forwarder import Forwarder
from relaycast.rtp.rtcp import RtcpReceptionReport, RtcpTransportFeedback
from relaycast.sdp.negotiate import URI_PLAYOUT_DELAY


def test_encode_decode() -> None:
    assert encode(200, 10_000) == bytes((0x01, 0x43, 0xE8))
    assert decode(encode(200, 10_000)) == (200, 10_000)
    assert decode(encode(1000, 40_950)) == (1000, 40_950)
    assert decode(encode(99_999, 5)) == (40_950, 40_950)  # clamped, never max < min
    with pytest.raises(ValueError):
        decode(b"\x00\x00")


def test_levels_follow_the_viewer_page_policy() -> None:
    ctl = PlayoutDelayController()
    assert ctl.delay == (0, MAX_MS)  # never (0, 0): that is "render at once"
    assert ctl.evaluate(0.12, 5.0, 0.0) is None  # one second of heavy loss: not yet
    assert ctl.evaluate(0.12, 5.0, 1.0) == (1000, MAX_MS)  # two: straight to heavy
    # down one level at a time after 10 s below half the entry thresholds
    for t in range(2, 11):
        assert ctl.evaluate(0.01, 5.0, float(t)) is None
    assert ctl.evaluate(0.01, 5.0, 11.0) == (500, MAX_MS)
    # loss between half and the threshold holds the level (hysteresis)
    for t in range(12, 40):
        assert ctl.evaluate(0.03, 5.0, float(t)) is None
    # jitter counts too
    ctl2 = PlayoutDelayController()
    ctl2.evaluate(0.0, 60.0, 0.0)
    assert ctl2.evaluate(0.0, 60.0, 1.0) == (500, MAX_MS)
    # calls closer than a second count once
    ctl3 = PlayoutDelayController()
    ctl3.evaluate(0.2, 0.0, 0.0)
    assert ctl3.evaluate(0.2, 0.0, 0.1) is None
    assert ctl3.index == 0


class Sink:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtp(self, packet: bytes) -> int:
        self.sent.append(packet)
        return len(packet) + 10

    def send_rtcp(self, packet: bytes) -> int:
        return len(packet)


def viewer(forwarder: Forwarder, *, playout: bool) -> tuple[DownTrack, ViewerCongestion]:
    layout = ExtLayout(((1, MID_URI, b"1"), (3, TWCC_URI, None), (5, URI_PLAYOUT_DELAY, None)))
    downtrack = DownTrack(
        kind="video",
        forwarder=forwarder,
        ssrc=1234,
        rtx_ssrc=None,
        payload_types={"vp8": 96},
        rtx_payload_types={},
        clock_rate=90000,
        layout=layout,
        cname="x",
    )
    congestion = ViewerCongestion([downtrack], playout_delay=playout, use_native=False)
    return downtrack, congestion


def test_playout_layouts_are_shared_and_switchable_off() -> None:
    forwarder = Forwarder("video", use_native=False)
    one, c1 = viewer(forwarder, playout=True)
    two, c2 = viewer(forwarder, playout=True)
    off, c3 = viewer(forwarder, playout=False)
    for d in (one, two, off):
        d.connect(Sink())  # type: ignore[arg-type]
    assert one.layout is two.layout  # equal values: one block for both
    assert URI_PLAYOUT_DELAY not in [u for _, u, _ in off.layout.items]
    assert isinstance(one.transport_seq, PySequencer)
    # one viewer's reports call for more buffering: only its layout changes
    block = RtcpReceptionReport(1234, 40, 10, 100, 0, 0, 0)
    for t in (0.0, 1.0, 2.0, 3.0):  # the first seconds' losses are the join's: no change
        c1.on_report_block(one, block, t)
        c1.tick(t)
    assert one.layout is two.layout and c1.playout is not None and c1.playout.index == 0
    for t in (5.0, 6.0):
        c1.on_report_block(one, block, t)
        c1.tick(t)
    assert one.layout is not two.layout
    value = dict((u, c) for _, u, c in one.layout.items)[URI_PLAYOUT_DELAY]
    assert value is not None and decode(value) == (1000, MAX_MS)
    assert c2.playout is not None and c2.playout.index == 0
    assert c3.playout is None


def test_transport_feedback_reaches_the_estimator() -> None:
    forwarder = Forwarder("video", use_native=False)
    _, congestion = viewer(forwarder, playout=True)
    sequencer = congestion.sequencer
    assert sequencer is not None
    for n in range(40):
        seq = sequencer.stamp()
        sequencer.sent(seq, 1200, n * 5000)
    first = (sequencer.stamp() - 40) & 0xFFFF  # numbers start at random: the 41st minus 40
    feedback = RtcpTransportFeedback.from_arrivals(
        1, 2, first, 0, [100_000 + n * 5000 for n in range(40)]
    )
    assert not congestion.bwe.measured
    congestion.on_transport_feedback(feedback, 1.0)
    assert congestion.feedback == 1
    assert congestion.bwe.measured and congestion.bwe.has_transport_feedback(1.0)
    assert congestion.bwe.stats()["reported"] == 40
