"""The media legs without the network: an IngressLeg and EgressLegs wired to fake sinks.

A fake sink is the legs' whole view of the network (protect + send + count), so these tests
drive the real routing, feedback and budget code with exact packets and an injected clock.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from tests.unit.fake_sink import FakeSink

from relaycast.media.downtrack import LIVE, MID_URI, DownTrack, ExtLayout
from relaycast.media.egress import KEYFRAME_REQUEST_INTERVAL, EgressLeg
from relaycast.media.feedback.retransmit import RetransmitBudget
from relaycast.media.forwarder import Forwarder
from relaycast.media.ingress import DEFAULT_RTT, IngressLeg
from relaycast.media.stats import StreamCounters
from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.rtcp import (
    RtcpNack,
    RtcpPli,
    RtcpReceiverReport,
    RtcpRemb,
)
from relaycast.sdp import negotiate_publish, parse_sdp

SAMPLES = Path(__file__).parent / "sdp_samples"
TWCC_LINE = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
VP8_KEY = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + b"k" * 1000
VP8_DELTA = bytes([0x10, 0x01]) + b"d" * 1000
OPUS = b"\x78" + b"a" * 80


def chrome_offer(*, twcc: bool = True) -> str:
    text = (SAMPLES / "chrome_publish.sdp").read_text()
    if not twcc:  # a publisher that asks for REMB instead of transport-cc
        lines = [
            line.replace("transport-cc", "goog-remb")
            for line in text.splitlines()
            if TWCC_LINE not in line
        ]
        text = "\r\n".join(lines) + "\r\n"
    return text


def make_ingress(*, twcc: bool = True) -> tuple[IngressLeg, dict[str, Forwarder], FakeSink]:
    negotiated = negotiate_publish(parse_sdp(chrome_offer(twcc=twcc)))
    forwarders = {"audio": Forwarder("audio"), "video": Forwarder("video")}
    leg = IngressLeg(
        negotiated,
        forwarders=forwarders,
        counters=StreamCounters(),
        sender_ssrc=4242,
        cname="server",
        max_bitrate=10_000_000,
        keyframe_interval=0.5,
    )
    sink = FakeSink()
    leg.sink = sink
    return leg, forwarders, sink


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return bytes(
        RtpPacket(
            marker=marker,
            payload_type=pt,
            sequence_number=seq & 0xFFFF,
            timestamp=ts,
            ssrc=ssrc,
            payload=payload,
        )
    )


def rtx(seq: int, ssrc: int, original_seq: int, payload: bytes) -> bytes:
    return rtp(97, seq, 0, ssrc, struct.pack("!H", original_seq) + payload)


# -- ingress ------------------------------------------------------------------------------------


def test_publisher_ssrcs_are_routed_by_payload_type_and_unknown_ones_counted() -> None:
    leg, forwarders, _ = make_ingress()
    leg.on_rtp(rtp(96, 1, 0, 0xAAAA, VP8_KEY), 0)
    leg.on_rtp(rtp(111, 1, 0, 0xBBBB, OPUS), 0)
    leg.on_rtp(rtp(45, 1, 0, 0xCCCC, b"?"), 0)  # a payload type the offer did not have
    leg.on_rtp(b"\x80", 0)  # not RTP at all
    assert {ssrc: t.kind for ssrc, t in leg.tracks.items()} == {0xAAAA: "video", 0xBBBB: "audio"}
    assert forwarders["video"].source is leg.tracks[0xAAAA]
    assert forwarders["audio"].source is leg.tracks[0xBBBB]
    assert leg.counters.bad_packets == 2
    assert leg.counters.ingress_packets == 3


def test_rtx_is_unwrapped_to_the_original_sequence_number() -> None:
    leg, forwarders, _ = make_ingress()
    for seq in (10, 11, 13):  # 12 lost
        leg.on_rtp(rtp(96, seq, 3000, 0xAAAA, VP8_KEY if seq == 10 else VP8_DELTA), 0)
    assert forwarders["video"].lookup(12) is None
    leg.on_rtp(rtx(500, 0xDDDD, 12, VP8_DELTA), 0)  # the first RTX packet names its SSRC
    recovered = forwarders["video"].lookup(12)
    assert recovered is not None and recovered.ssrc == 0xAAAA
    assert recovered.payload_type == 96 and recovered.payload == VP8_DELTA
    assert leg.tracks[0xAAAA].rtx_ssrc == 0xDDDD
    assert leg.counters.publisher_retransmissions == 1
    leg.on_rtp(rtp(97, 501, 0, 0xDDDD, b"\x00"), 0)  # padding-only probe: dropped
    assert leg.counters.publisher_retransmissions == 1


def test_an_encoder_restart_with_a_new_ssrc_replaces_the_track() -> None:
    leg, forwarders, _ = make_ingress()
    leg.on_rtp(rtp(96, 1, 0, 0xAAAA, VP8_KEY), 0)
    old = leg.tracks[0xAAAA]
    leg.on_rtp(rtp(96, 9000, 0, 0xEEEE, VP8_KEY), 0)
    assert list(leg.tracks) == [0xEEEE]
    assert forwarders["video"].source is leg.tracks[0xEEEE] is not old
    assert forwarders["video"].lookup(1) is None  # the old source's cache went with it


def test_remb_backs_off_on_the_loss_our_receiver_reports_announce() -> None:
    """RR loss feeds REMB (issue: on_loss was never called outside tests)."""

    def last_remb(lossy: bool) -> int:
        clock = [100.0]
        leg, _, sink = make_ingress(twcc=False)
        leg._clock = lambda: clock[0]
        assert leg.remb is not None and leg.twcc is None
        seq = 0
        for second in range(6):
            for i in range(200):  # 200 packets of ~1 kB a second: ~1.6 Mbit/s sent
                seq += 1
                clock[0] += 0.005
                if lossy and second >= 3 and i % 4 == 0:
                    continue  # 25 % lost from the fourth second on
                leg.on_rtp(rtp(96, seq, seq * 90, 0xAAAA, VP8_DELTA), 0)
            for packet in leg.reports(clock[0]):
                sink.send_rtcp(packet)
        reports = [p for p in sink.rtcp_packets() if isinstance(p, RtcpReceiverReport)]
        if lossy:
            assert reports[-1].reports[0].fraction_lost > 0.1 * 256  # > 10 % announced
        rembs = [p for p in sink.rtcp_packets() if isinstance(p, RtcpRemb)]
        assert rembs, "no REMB sent"
        return rembs[-1].bitrate

    clean, lossy = last_remb(False), last_remb(True)
    assert lossy < 0.9 * 1_600_000 < clean, (lossy, clean)


def test_nack_retries_are_spaced_by_the_measured_round_trip() -> None:
    leg, _, _ = make_ingress()
    leg.on_rtp(rtp(96, 1, 0, 0xAAAA, VP8_KEY), 0)
    track = leg.tracks[0xAAAA]
    assert track.nack is not None
    assert leg.rtt == DEFAULT_RTT  # nothing measured yet
    # loss of 3, NACKed at t=10.0, retransmitted 0.3 s later: RTT 0.3 s
    track.on_packet(RtpPacket.parse(rtp(96, 2, 0, 0xAAAA, VP8_DELTA)), 9.99, 100)
    track.on_packet(RtpPacket.parse(rtp(96, 4, 0, 0xAAAA, VP8_DELTA)), 9.99, 100)
    first = track.poll(10.0, leg.rtt)
    assert any(isinstance(p, RtcpNack) and p.lost == [3] for p in first)
    track.on_packet(RtpPacket.parse(rtp(96, 3, 0, 0xAAAA, VP8_DELTA)), 10.3, 100)
    assert track.nack.rtt == pytest.approx(0.3)
    assert leg.rtt == pytest.approx(0.3)
    # a new loss: the retry waits one measured RTT (0.3 s), not the 50 ms default
    track.on_packet(RtpPacket.parse(rtp(96, 6, 0, 0xAAAA, VP8_DELTA)), 11.0, 100)
    assert any(isinstance(p, RtcpNack) for p in track.poll(11.01, leg.rtt))
    assert not any(isinstance(p, RtcpNack) for p in track.poll(11.1, leg.rtt))
    assert not any(isinstance(p, RtcpNack) for p in track.poll(11.25, leg.rtt))
    assert any(isinstance(p, RtcpNack) for p in track.poll(11.32, leg.rtt))


# -- egress -------------------------------------------------------------------------------------


def viewer(forwarder: Forwarder, counters: StreamCounters) -> tuple[EgressLeg, FakeSink]:
    downtrack = DownTrack(
        kind="video",
        forwarder=forwarder,
        ssrc=0x1111,
        rtx_ssrc=0x2222,
        payload_types={"vp8": 96},
        rtx_payload_types={96: 97},
        clock_rate=90000,
        layout=ExtLayout(((4, MID_URI, b"1"),)),
        cname="v",
        counters=counters,
    )
    return EgressLeg([downtrack], counters=counters, cname="v"), FakeSink()


def live_stream(packets: int = 600) -> tuple[IngressLeg, Forwarder]:
    leg, forwarders, _ = make_ingress()
    for seq in range(1, packets + 1):
        payload = VP8_KEY if seq == 1 else VP8_DELTA
        leg.on_rtp(rtp(96, seq, seq * 90, 0xAAAA, payload), 0)
    return leg, forwarders["video"]


def test_a_viewer_joins_the_fan_out_only_when_connected() -> None:
    leg, forwarder = live_stream(10)
    egress, sink = viewer(forwarder, leg.counters)
    assert forwarder.downtracks == ()  # still handshaking: not in the fan-out
    leg.on_rtp(rtp(96, 11, 990, 0xAAAA, VP8_DELTA), 0)
    assert sink.rtp == []
    egress.connect(sink)
    assert forwarder.downtracks == tuple(egress.downtracks)
    egress.close()
    assert forwarder.downtracks == ()


async def test_a_nack_storm_is_answered_within_the_viewer_budget() -> None:
    leg, forwarder = live_stream(1024)
    leg.tracks[0xAAAA].bitrate = 2_500_000.0
    egress, sink = viewer(forwarder, leg.counters)
    egress.connect(sink)  # fast start replays the GOP (1,024 packets) over a few loop turns
    downtrack = egress.downtracks[0]
    for _ in range(100):
        if downtrack.state is LIVE:
            break
        await asyncio.sleep(0)
    assert downtrack.state is LIVE and len(sink.rtp) == 1024
    sent_live = len(sink.rtp)
    base = (1 + downtrack.seq_offset) & 0xFFFF
    # five generic NACKs of 1,024 sequence numbers in one compound packet
    storm = [RtcpNack(0x9, 0x1111, [(base + i) & 0xFFFF for i in range(1024)]) for _ in range(5)]
    egress.on_rtcp(storm, 1.0)  # type: ignore[arg-type]
    resent = len(sink.rtp) - sent_live
    assert 0 < resent <= RetransmitBudget().max_per_rtcp
    assert all(p.ssrc == 0x2222 and p.payload_type == 97 for p in sink.rtp[sent_live:])  # RTX
    # the same sequence numbers again within one round trip: none of them is resent twice
    egress.on_rtcp(storm, 1.01)  # type: ignore[arg-type]
    originals = [struct.unpack_from("!H", p.payload)[0] for p in sink.rtp[sent_live:]]
    assert len(originals) == len(set(originals)) > resent
    # a storm of fresh requests for one second: bytes stay within ~1 s of the stream + a burst
    for step in range(50):
        seqs = [(base + 128 * (step % 8) + i) & 0xFFFF for i in range(128)]
        egress.on_rtcp([RtcpNack(0x9, 0x1111, seqs)], 1.1 + step * 0.02)  # type: ignore[list-item]
    budget_bytes = 2_500_000 / 8 * 0.5 * (1.0 + 1.1 + 0.1)
    assert leg.counters.retransmitted_bytes <= budget_bytes, leg.counters.retransmitted_bytes
    assert leg.counters.nack_refused > 0
    assert leg.counters.retransmitted_packets == len(sink.rtp) - sent_live


def test_a_viewer_asking_for_keyframes_reaches_the_publisher_once_per_interval() -> None:
    leg, forwarder = live_stream(10)
    egress, sink = viewer(forwarder, leg.counters)
    egress.connect(sink)
    before = leg.counters.keyframe_requests_sent
    for i in range(30):  # 30 PLIs in three seconds: acted on at 0 s and at 2 s
        egress.on_rtcp([RtcpPli(0x9, 0x1111)], 100.0 + i * 0.1)  # type: ignore[list-item]
    assert KEYFRAME_REQUEST_INTERVAL == 2.0
    assert leg.counters.keyframe_requests == 30
    assert leg.counters.keyframe_requests_refused == 28
    assert egress.downtracks[0].keyframe_requests == 2
    assert leg.counters.keyframe_requests_sent - before <= 2
