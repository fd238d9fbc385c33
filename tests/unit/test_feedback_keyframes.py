"""KeyframeRequester: PLI / FIR coalescing (RFC 4585 §6.3.1, RFC 5104 §4.3.1)."""

from __future__ import annotations

from relaycast.media.feedback.keyframes import KeyframeRequester
from relaycast.rtp.rtcp import RtcpFir, RtcpPli, parse_compound

MEDIA = 0xAAAA0001
SENDER = 0xBBBB0002


def test_hundred_viewers_within_interval_cost_one_pli_plus_one_pending() -> None:
    req = KeyframeRequester(MEDIA, SENDER, interval=0.5)
    out = [req.request(i * 0.004) for i in range(100)]  # 0 .. 0.396 s
    sent = [p for p in out if p is not None]
    assert len(sent) == 1
    assert isinstance(sent[0], RtcpPli)
    assert (sent[0].sender_ssrc, sent[0].media_ssrc) == (SENDER, MEDIA)
    assert out[0] is sent[0]
    assert req.requested == 100
    assert req.sent == 1
    assert req.pending
    assert req.poll(0.499) is None
    pending = req.poll(0.5)
    assert isinstance(pending, RtcpPli)
    assert req.sent == 2
    assert not req.pending
    assert req.poll(1.2) is None
    (parsed,) = parse_compound(bytes(pending))
    assert parsed == RtcpPli(SENDER, MEDIA)


def test_at_most_one_per_interval_under_continuous_requests() -> None:
    req = KeyframeRequester(MEDIA, SENDER, interval=0.5)
    sent = 0
    for i in range(1000):  # 10 s, a request every 10 ms, polled every 10 ms
        now = i * 0.01
        if req.request(now) is not None:
            sent += 1
        if req.poll(now) is not None:
            sent += 1
    assert sent == 20
    assert req.sent == 20


def test_keyframe_received_clears_pending() -> None:
    req = KeyframeRequester(MEDIA, SENDER, interval=0.5)
    assert req.request(0.0) is not None
    assert req.request(0.1) is None
    req.keyframe_received(0.2)
    assert not req.pending
    assert req.poll(0.7) is None
    # a later request after the interval goes out at once
    assert req.request(0.8) is not None


def test_fir_sequence_number_increments_per_request() -> None:
    req = KeyframeRequester(MEDIA, SENDER, interval=0.5, use_fir=True)
    seqs = []
    for t in (0.0, 0.6, 1.2):
        pkt = req.request(t)
        assert isinstance(pkt, RtcpFir)
        (parsed,) = parse_compound(bytes(pkt))
        assert isinstance(parsed, RtcpFir)
        assert parsed.sender_ssrc == SENDER
        ((ssrc, seq),) = parsed.entries
        assert ssrc == MEDIA
        seqs.append(seq)
    assert seqs == [0, 1, 2]
    assert req.request(1.3) is None
    pkt = req.poll(1.7)
    assert isinstance(pkt, RtcpFir) and pkt.entries == [(MEDIA, 3)]


def test_fir_sequence_wraps_at_256() -> None:
    req = KeyframeRequester(MEDIA, SENDER, interval=0.0, use_fir=True)
    last = None
    for i in range(257):
        pkt = req.request(float(i))
        assert isinstance(pkt, RtcpFir)
        last = pkt.entries[0][1]
    assert last == 0
