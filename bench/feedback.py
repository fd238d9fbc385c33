"""Per-viewer feedback cost: transport-wide feedback parsing + the bandwidth estimator.

Measures, on one core, what one viewer's transport-cc feedback costs the server: the RTCP
compound parse (``parse_compound``, Python), the join with the send history (the C Sequencer
when the kernel is built) and the estimator update (media/feedback/congestion.py ->
media/bwe). The feedback is what a browser sends for a 2.5 Mbit/s stream: ~250 packets a
second reported every 50 ms (Chromium sends every 50-250 ms, more often at higher rates), so
20 feedback messages a second per viewer with ~12 packet statuses each.

    python bench/feedback.py [--viewers 300] [--seconds 5] [--interval 0.05]

Prints the cost per feedback message, the messages one core handles a second, and the share
of a core ``--viewers`` viewers need.
"""

from __future__ import annotations

import argparse
import time

from relaycast import native
from relaycast.media.bwe.estimator import BandwidthEstimator
from relaycast.media.bwe.history import PySequencer, SequencerLike, TransportFeedbackAdapter
from relaycast.media.feedback.twcc import TwccRecorder
from relaycast.rtp.rtcp import RtcpTransportFeedback, parse_compound

PACKETS_PER_SECOND = 250
PACKET_BYTES = 1250


def feedback_stream(seconds: float, interval: float) -> tuple[list[tuple[float, bytes]], int]:
    """(time, wire bytes) of one viewer's feedback messages, and the packets they cover."""
    recorder = TwccRecorder(sender_ssrc=1, media_ssrc=2)
    out: list[tuple[float, bytes]] = []
    n = int(seconds * PACKETS_PER_SECOND)
    next_fb = interval
    for i in range(n):
        t = i / PACKETS_PER_SECOND
        if i % 50 != 49:  # 2 % loss
            recorder.on_packet(i & 0xFFFF, int((t + 0.02 + (i % 7) * 0.0003) * 1e6))
        if t >= next_fb:
            next_fb += interval
            for packet in recorder.build(int(t * 1e6)):
                out.append((t + 0.02, bytes(packet)))
    return out, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()

    stream, packets = feedback_stream(args.seconds, args.interval)
    viewers = []
    for _ in range(args.viewers):
        # numbered from 0 here (the server starts at random) so the feedback above matches
        sequencer: SequencerLike = (
            native.new_sequencer(4096, 0) if native.available() else PySequencer(4096, 0)
        )
        for i in range(packets):
            seq = sequencer.stamp()
            sequencer.sent(seq, PACKET_BYTES, int(i / PACKETS_PER_SECOND * 1e6))
        estimator = BandwidthEstimator()
        viewers.append(TransportFeedbackAdapter(sequencer, estimator))
    # all viewers' feedback in time order, as the server would get it
    started = time.perf_counter()
    parse_time = 0.0
    messages = 0
    for t, wire in stream:
        for adapter in viewers:
            t0 = time.perf_counter()
            (packet,) = parse_compound(wire)
            t1 = time.perf_counter()
            parse_time += t1 - t0
            assert isinstance(packet, RtcpTransportFeedback)
            adapter.on_feedback(packet, t)
            messages += 1
    elapsed = time.perf_counter() - started
    per_message = elapsed / messages
    per_second = 1 / per_message
    need = args.viewers / args.interval
    print(f"feedback messages: {messages} ({len(stream)} per viewer, {packets} packets each)")
    print(f"statuses per message: {packets / len(stream):.1f}")
    parse_us = parse_time / messages * 1e6
    print(f"sequencer: {'C' if native.available() else 'Python'}")
    print(f"cost per message: {per_message * 1e6:.1f} us (of which parsing {parse_us:.1f} us)")
    print(f"one core: {per_second:,.0f} messages/s")
    print(
        f"{args.viewers} viewers at one message per {args.interval * 1000:.0f} ms: {need:,.0f}/s "
        f"= {need / per_second * 100:.1f} % of a core"
    )
    final = viewers[0].estimator.stats()
    print(f"(estimate of one viewer at the end: {final['estimate_bps'] / 1e6:.2f} Mbit/s)")


if __name__ == "__main__":
    main()
