"""One incoming media track (one publisher SSRC) and the feedback the server gives it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from relaycast.media.feedback.keyframes import KeyframeRequester
from relaycast.media.feedback.nack import NackGenerator
from relaycast.media.feedback.reports import ReceiverStats
from relaycast.media.forwarder import Forwarder
from relaycast.media.picture_ids import LayerPictureIds
from relaycast.media.stats import StreamCounters
from relaycast.rtp.codecs import is_keyframe_start
from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.rtcp import RtcpPacket, RtcpSenderReport
from relaycast.sdp import Codec, codec_key

RATE_WINDOW = 4  # update_bitrate calls (seconds) the rates are taken over


class Track:
    """Receives one publisher SSRC: statistics, NACK generation, keyframe requests, forwarding."""

    def __init__(
        self,
        *,
        kind: str,
        codec: Codec,
        ssrc: int,
        sender_ssrc: int,
        rtcp_fb: list[str],
        ext_ids: dict[str, int],
        forwarder: Forwarder,
        send_rtcp: Callable[[bytes], None],
        keyframe_interval: float,
        counters: StreamCounters | None = None,
        rid: str | None = None,
    ) -> None:
        self.kind = kind
        #: the simulcast layer's RTP stream id (RFC 8852), None for a single encoding
        self.rid = rid
        self.codec = codec
        self.codec_name = codec.name.lower()
        self.codec_key = codec_key(codec)
        self.payload_type = codec.payload_type
        self.clock_rate = codec.clock_rate
        self.ssrc = ssrc
        self.rtx_ssrc: int | None = None
        self.ext_ids = ext_ids
        self.forwarder = forwarder
        self._send_rtcp = send_rtcp
        self.counters = counters if counters is not None else StreamCounters()
        self.reception = ReceiverStats(ssrc, codec.clock_rate)  # RFC 3550 §6.4.1 statistics
        self.nack: NackGenerator | None = (
            NackGenerator(ssrc, sender_ssrc) if "nack" in rtcp_fb else None
        )
        use_fir = "ccm fir" in rtcp_fb and "nack pli" not in rtcp_fb
        self.keyframes = KeyframeRequester(
            ssrc, sender_ssrc, interval=keyframe_interval, use_fir=use_fir
        )
        self.last_timestamp = 0
        self.last_arrival = time.monotonic()
        self._frame_timestamp: int | None = None
        self.packets = 0
        self.bytes = 0
        self.keyframes_seen = 0
        self.retransmissions = 0
        #: bytes of first transmissions: what the layer costs a viewer (the publisher's RTX,
        #: repairs and its own bandwidth probes, is not part of it)
        self.media_bytes = 0
        #: bits/s of first transmissions over the last few seconds (``RATE_WINDOW`` marks of
        #: :meth:`update_bitrate`: a keyframe is not a step of the layer's rate); the layer
        #: selection and the retransmission budgets follow it
        self.bitrate = 0.0
        #: video frames (RTP timestamps) seen, and frames/s over the same window
        self.frames = 0
        self.frame_rate = 0.0
        self._rate_marks: deque[tuple[float, int, int]] = deque(maxlen=RATE_WINDOW + 1)
        #: a VP8 simulcast layer's pictures, renumbered into its stream's numbering so that
        #: layer switches keep them going forward (media/picture_ids.py)
        root = forwarder.parent
        self.picture_ids = (
            LayerPictureIds(root.picture_ids)
            if rid is not None and root is not None and self.codec_name == "vp8"
            else None
        )

    def on_packet(self, packet: RtpPacket, now: float, size: int, repaired: bool = False) -> None:
        """Account for one packet and hand it to the Forwarder; ``repaired``: it came as the
        publisher's retransmission (RFC 4588)."""
        self.packets += 1
        self.bytes += size
        if not repaired:
            self.media_bytes += size
        self.reception.on_packet(packet.sequence_number, packet.timestamp, now)
        if self.nack is not None:
            self.nack.on_packet(packet.sequence_number, now)
        keyframe = False
        if self.kind == "video" and packet.payload and packet.timestamp != self._frame_timestamp:
            self._frame_timestamp = packet.timestamp
            self.frames += 1
            if is_keyframe_start(self.codec_name, packet.payload):
                keyframe = True
                self.keyframes_seen += 1
                self.keyframes.keyframe_received(now)
        if self.picture_ids is not None and packet.payload:
            packet.payload = self.picture_ids.rewrite(packet.payload, keyframe)
        self.last_timestamp = packet.timestamp
        self.last_arrival = now
        self.forwarder.forward(packet, keyframe, now)

    # -- the feedback protocol (media/feedback/__init__.py) ------------------------------------

    def on_rtp(self, packet: RtpPacket, arrival_us: int, now: float) -> None:
        self.on_packet(packet, now, len(packet.payload) + 12)

    def on_rtcp(self, packet: RtcpPacket, now: float) -> None:
        """The publisher's sender report maps its RTP clock to NTP (RFC 3550 §6.4.1)."""
        if isinstance(packet, RtcpSenderReport) and packet.ssrc == self.ssrc:
            self.reception.on_sender_report(packet, now)

    def stats(self) -> dict[str, float]:
        nack = self.nack
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "bitrate": self.bitrate,
            "keyframes": self.keyframes_seen,
            "retransmissions": self.retransmissions,
            "lost": self.reception.lost,
            "nack_rtt": -1.0 if nack is None or nack.rtt is None else nack.rtt,
        }

    def update_bitrate(self, now: float) -> None:
        """Called once a second: the rates over the last ``RATE_WINDOW`` calls."""
        marks = self._rate_marks
        if marks and now > marks[0][0]:
            then, media_bytes, frames = marks[0]
            self.bitrate = (self.media_bytes - media_bytes) * 8 / (now - then)
            self.frame_rate = (self.frames - frames) / (now - then)
        marks.append((now, self.media_bytes, self.frames))

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, coalesced to one per interval (RFC 4585 §6.3.1)."""
        if self.kind != "video":
            return
        request = self.keyframes.request(time.monotonic())
        if request is not None:
            self.counters.keyframe_requests_sent += 1
            self._send_rtcp(bytes(request))

    def poll(self, now: float, rtt: float | None = None) -> list[RtcpPacket]:
        """Feedback that is due now: NACKs (spaced by the measured RTT unless ``rtt`` is given)
        and a pending keyframe request."""
        due: list[RtcpPacket] = []
        if self.nack is not None:
            nack = self.nack.poll(now, rtt)
            if nack is not None:
                self.counters.nacks_sent += len(nack.lost)
                due.append(nack)
            if self.nack.take_keyframe_request():  # gave up on lost packets: repair by keyframe
                request = self.keyframes.request(now)
                if request is not None:
                    self.counters.keyframe_requests_sent += 1
                    due.append(request)
        pending = self.keyframes.poll(now)
        if pending is not None:
            self.counters.keyframe_requests_sent += 1
            due.append(pending)
        return due
