"""The fan-out core without the network: Forwarder, DownTrack and Track rewriting rules."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time

import pytest
from tests.unit.fake_sink import FakeSink

from relaycast.media.downtrack import MID_URI, DownTrack, ExtLayout
from relaycast.media.forwarder import Forwarder
from relaycast.media.track import Track
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.rtp.rtcp import RtcpPli, RtcpSenderReport, parse_compound
from relaycast.sdp import Codec

AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

VP8_KEY = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + b"k" * 100  # S=1, PID 0, P=0 (keyframe)
VP8_DELTA = bytes([0x10, 0x01]) + b"d" * 100  # S=1, P=1 (inter frame)
VP8_CONT = bytes([0x00, 0x01]) + b"c" * 100  # continuation of a frame


class Wire(FakeSink):
    """A fake sink (the legs' port to the network; SRTP is identity here: tests/unit/test_srtp.py
    and the integration tests cover the real MediaSink) that also collects the RTCP a Track
    sends upstream."""

    def sendto(self, data: bytes) -> int:
        return self.send_rtp(data)


def make_track(forwarder: Forwarder, wire: Wire, *, ssrc: int = 1111, pt: int = 96) -> Track:
    track = Track(
        kind=forwarder.kind,
        codec=Codec(
            pt,
            "VP8" if forwarder.kind == "video" else "opus",
            90000 if forwarder.kind == "video" else 48000,
        ),
        ssrc=ssrc,
        sender_ssrc=4242,
        rtcp_fb=["nack", "nack pli"],
        ext_ids={MID_URI: 4, TWCC: 3, AUDIO_LEVEL: 1},
        forwarder=forwarder,
        send_rtcp=wire.send_rtcp,
        keyframe_interval=0.5,
    )
    forwarder.attach_source(track)
    return track


def make_downtrack(forwarder: Forwarder, wire: Wire, *, rtx: bool = True) -> DownTrack:
    downtrack = DownTrack(
        kind=forwarder.kind,
        forwarder=forwarder,
        ssrc=0xABCDEF01,
        rtx_ssrc=0xABCDEF02 if rtx else None,
        payload_types={"vp8": 120, "opus": 111},
        rtx_payload_types={120: 121} if rtx else {},
        clock_rate=90000 if forwarder.kind == "video" else 48000,
        layout=ExtLayout(((9, MID_URI, b"v1"), (5, AUDIO_LEVEL, None))),
        cname="viewer",
    )
    if forwarder.source is not None:
        downtrack.source_changed(forwarder.source)
    return downtrack


def source_packet(
    seq: int, ts: int, payload: bytes, *, ssrc: int = 1111, marker: bool = False
) -> RtpPacket:
    profile, _ = build_extensions([(4, b"0"), (3, struct.pack("!H", seq))])
    return RtpPacket(
        marker=marker,
        payload_type=96,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        extension_profile=profile,
        extensions=[(4, b"0"), (3, struct.pack("!H", seq))],
        payload=payload,
    )


def feed(track: Track, packets: list[RtpPacket], now: float | None = None) -> None:
    """Deliver packets as the Publisher does (its clock is time.monotonic)."""
    for packet in packets:
        track.on_packet(packet, time.monotonic() if now is None else now, len(bytes(packet)))


def test_viewer_starts_on_a_keyframe_and_rewrites_every_header_field() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)  # no GOP yet: asks for a keyframe
    assert any(isinstance(p, RtcpPli) for b in wire.rtcp for p in parse_compound(b))
    feed(track, [source_packet(10, 1000, VP8_DELTA), source_packet(11, 4000, VP8_KEY)])
    feed(
        track, [source_packet(12, 4000, VP8_CONT, marker=True), source_packet(13, 7000, VP8_DELTA)]
    )
    assert [p.payload for p in wire.rtp] == [
        VP8_KEY,
        VP8_CONT,
        VP8_DELTA,
    ]  # the delta before is dropped
    first, second, third = wire.rtp
    assert {p.ssrc for p in wire.rtp} == {0xABCDEF01}
    assert {p.payload_type for p in wire.rtp} == {120}
    assert (second.sequence_number - first.sequence_number) & 0xFFFF == 1
    assert (third.sequence_number - first.sequence_number) & 0xFFFF == 2
    assert second.timestamp == first.timestamp
    assert (third.timestamp - first.timestamp) & 0xFFFFFFFF == 3000
    assert second.marker and not first.marker
    # extension ids are the viewer's; mid carries the viewer's mid; twcc is not forwarded
    assert first.extensions == [(9, b"v1")]


def test_fast_start_replays_the_cached_keyframe_and_what_followed() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    feed(track, [source_packet(1, 0, VP8_DELTA), source_packet(2, 3000, VP8_KEY)])
    feed(track, [source_packet(3, 6000, VP8_DELTA), source_packet(4, 9000, VP8_DELTA)])
    wire.rtcp.clear()
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    assert [p.payload for p in wire.rtp] == [VP8_KEY, VP8_DELTA, VP8_DELTA]
    assert not wire.rtcp  # no keyframe request: the cached one was enough
    feed(track, [source_packet(5, 12000, VP8_DELTA)])
    assert len(wire.rtp) == 4
    assert (wire.rtp[3].sequence_number - wire.rtp[0].sequence_number) & 0xFFFF == 3


def test_nack_is_answered_from_the_cache_as_rtx_with_the_original_sequence() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    feed(track, [source_packet(100, 0, VP8_KEY), source_packet(101, 3000, VP8_DELTA)])
    lost = wire.rtp[1]
    downtrack.on_nack([lost.sequence_number, (lost.sequence_number + 50) & 0xFFFF], 1.0)
    rtx = wire.rtp[2]
    assert len(wire.rtp) == 3  # the unknown sequence number is not answered
    assert downtrack.nack_misses == 1
    assert rtx.ssrc == 0xABCDEF02 and rtx.payload_type == 121
    assert rtx.timestamp == lost.timestamp
    assert rtx.payload[:2] == struct.pack("!H", lost.sequence_number)
    assert rtx.payload[2:] == VP8_DELTA


def test_nack_without_rtx_resends_the_same_packet() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire, rtx=False)
    downtrack.connect(wire)
    feed(track, [source_packet(7, 0, VP8_KEY)])
    downtrack.on_nack([wire.rtp[0].sequence_number], 1.0)
    assert bytes(wire.rtp[1]) == bytes(wire.rtp[0])


def test_a_new_publisher_continues_the_viewer_sequence_and_timestamps() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    first = make_track(forwarder, wire, ssrc=1)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    feed(
        first,
        [source_packet(500, 90000, VP8_KEY, ssrc=1), source_packet(501, 93000, VP8_DELTA, ssrc=1)],
    )
    forwarder.detach_source(first)
    second = make_track(forwarder, wire, ssrc=2)
    feed(second, [source_packet(40000, 7, VP8_DELTA, ssrc=2)])  # waits for the keyframe
    feed(second, [source_packet(40001, 3007, VP8_KEY, ssrc=2)])
    before, after = wire.rtp[1], wire.rtp[2]
    assert after.payload == VP8_KEY and after.ssrc == before.ssrc
    assert (after.sequence_number - before.sequence_number) & 0xFFFF == 1
    assert 0 < (after.timestamp - before.timestamp) & 0xFFFFFFFF < 90000


def test_duplicates_are_forwarded_once_and_older_packets_are_not_sent() -> None:
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    feed(track, [source_packet(20, 0, VP8_KEY), source_packet(20, 0, VP8_KEY)])
    feed(track, [source_packet(19, 0, VP8_CONT)])  # late packet from before our start
    assert len(wire.rtp) == 1


def test_sender_report_maps_the_publisher_ntp_rtp_pair() -> None:
    forwarder, wire = Forwarder("audio"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    now = time.monotonic()
    feed(track, [source_packet(1, 48000, b"\x01" * 60)], now=now)
    ntp = 0x1234567800000000
    track.reception.on_sender_report(RtcpSenderReport(1111, ntp, 48000, 1, 60, []), now)
    report = downtrack.sender_report(now=now + 1.0, ntp_now=0)
    assert report is not None
    assert report.ssrc == 0xABCDEF01
    assert report.ntp_timestamp == ntp + (1 << 32)  # one second later on the publisher's clock
    sent_ts = wire.rtp[0].timestamp
    assert report.rtp_timestamp == (sent_ts + 48000) & 0xFFFFFFFF
    assert report.packet_count == 1


@pytest.mark.parametrize("viewers", [1, 5])
def test_a_failing_viewer_does_not_stop_the_others(viewers: int) -> None:
    forwarder, wire = Forwarder("audio"), Wire()
    track = make_track(forwarder, wire)
    broken = make_downtrack(forwarder, wire)

    class Broken(Wire):
        def send_rtp(self, data: bytes) -> int:
            return 0  # what MediaSink returns when the socket refuses the datagram

    broken.connect(Broken())
    healthy = [make_downtrack(forwarder, wire) for _ in range(viewers)]
    for downtrack in healthy:
        downtrack.connect(wire)
    feed(track, [source_packet(1, 0, b"\x01" * 20)])
    assert len(wire.rtp) == viewers
    assert broken.send_errors == 1 and broken.packets_sent == 0


def test_a_long_stream_keeps_flowing_across_sequence_wrap_arounds() -> None:
    forwarder, wire = Forwarder("audio"), Wire()
    track = make_track(forwarder, wire)
    downtrack = make_downtrack(forwarder, wire)
    downtrack.connect(wire)
    sent = 0
    for index in range(70_000):  # more than two sequence-number cycles
        forwarder.forward(source_packet(index & 0xFFFF, index * 960, b"\x01"), False, 0.0)
        sent += 1
    assert downtrack.packets_sent == sent
    assert len(wire.rtp) == sent
    assert track.packets == 0  # forwarded directly, not through the Track


async def test_fast_start_replay_is_paced_and_live_packets_wait_for_it() -> None:
    """A long GOP goes out in chunks across event-loop turns; a joining viewer gets the GOP,
    then the packets that arrived meanwhile, in order, and nothing twice."""
    forwarder, wire = Forwarder("video"), Wire()
    track = make_track(forwarder, wire)
    gop = [source_packet(1000, 0, VP8_KEY)]
    gop += [source_packet(1000 + i, 3000 * i, VP8_DELTA) for i in range(1, 300)]
    feed(track, gop)
    viewers = []
    for _ in range(3):
        viewer_wire = Wire()
        downtrack = make_downtrack(forwarder, viewer_wire)
        downtrack.connect(viewer_wire)
        viewers.append(viewer_wire)
    assert all(len(w.rtp) < len(gop) for w in viewers)  # not all at once
    feed(track, [source_packet(1300, 900_000, VP8_DELTA)])  # live, during the replay
    for _ in range(100):
        await asyncio.sleep(0)
    for viewer_wire in viewers:
        seqs = [p.sequence_number for p in viewer_wire.rtp]
        assert len(seqs) == 301
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert viewer_wire.rtp[0].payload == VP8_KEY
