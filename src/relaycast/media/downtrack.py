"""One outgoing track towards one viewer.

Rewrites (RFC 3550 §5.1, RFC 7160 for clock continuity): SSRC, payload type, sequence number,
timestamp and header-extension ids; starts on a keyframe; answers the viewer's NACKs from the
Forwarder's cache (RFC 4588 RTX when negotiated); sends sender reports mapped from the
publisher's so that audio and video stay in sync (RFC 3550 §6.4.1).
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaycast.media.feedback.reports import SenderStats
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.rtp.rtcp import RtcpSenderReport

if TYPE_CHECKING:
    from relaycast.media.forwarder import Forwarder
    from relaycast.media.track import Track

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
NTP_PER_SECOND = 1 << 32

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


@dataclass(frozen=True)
class ExtLayout:
    """The header extensions one viewer negotiated: ``(viewer id, uri, constant value)``.

    Viewers with equal layouts share the rewritten extension block of each packet, so the
    block is built once per packet per layout, not once per viewer.
    """

    items: tuple[tuple[int, str, bytes | None], ...]

    def build(self, packet: RtpPacket, source_ids: dict[str, int]) -> tuple[int, bytes]:
        """(first header byte, extension block with its 4-byte header) for ``packet``."""
        values: list[tuple[int, bytes]] = []
        for viewer_id, uri, constant in self.items:
            if constant is not None:
                values.append((viewer_id, constant))
                continue
            source_id = source_ids.get(uri)
            if source_id is not None:
                value = packet.get_extension(source_id)
                if value:
                    values.append((viewer_id, value))
        if not values:
            return 0x80, b""
        profile, block = build_extensions(values)
        return 0x90, _EXT_HEADER.pack(profile, len(block) // 4) + block


class DownTrack:
    """Rewrites and sends one Forwarder's packets to one viewer."""

    def __init__(
        self,
        *,
        kind: str,
        forwarder: Forwarder,
        ssrc: int,
        rtx_ssrc: int | None,
        payload_types: dict[str, int],
        rtx_payload_types: dict[int, int],
        clock_rate: int,
        layout: ExtLayout,
        cname: str,
    ) -> None:
        self.kind = kind
        self.forwarder = forwarder
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_types = payload_types  # codec_key -> the viewer's payload type
        self.rtx_payload_types = rtx_payload_types  # viewer pt -> viewer rtx pt
        self.clock_rate = clock_rate
        self.layout = layout
        self.cname = cname
        self.send_rtp: Callable[[bytes], None] | None = None
        self.started = False
        self.compatible = False  # until a source whose codec the viewer negotiated attaches
        self.payload_type = 0
        self.rtx_payload_type: int | None = None
        self._start_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self._next_seq = secrets.randbits(15)  # RFC 3550 §5.1: random initial values
        self._next_ts = secrets.randbits(31)
        self.last_out_seq: int | None = None
        self.last_out_ts = 0
        self.last_sent = 0.0
        self._rtx_seq = secrets.randbits(15)
        self.stats = SenderStats(ssrc, clock_rate)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.retransmitted = 0
        self.nack_misses = 0
        self.keyframe_requests = 0

    def __repr__(self) -> str:
        return f"DownTrack({self.kind}, ssrc={self.ssrc})"

    # -- lifecycle ------------------------------------------------------------------------------

    def activate(self, send_rtp: Callable[[bytes], None]) -> None:
        """The viewer's DTLS is up: start sending (from the next keyframe or the GOP cache)."""
        self.send_rtp = send_rtp
        self.forwarder.catch_up(self)

    def source_changed(self, track: Track) -> None:
        """A new publisher track: wait for its keyframe, keep our own SSRC/sequence space."""
        self.started = False
        payload_type = self.payload_types.get(track.codec_key)
        self.compatible = payload_type is not None
        if payload_type is not None:
            self.payload_type = payload_type
            self.rtx_payload_type = self.rtx_payload_types.get(payload_type)
        else:
            log.warning("%s cannot play %s: the viewer did not negotiate it", self, track.codec_key)

    def close(self) -> None:
        self.send_rtp = None
        self.forwarder.remove(self)

    # -- the hot path ---------------------------------------------------------------------------

    def send(
        self, packet: RtpPacket, keyframe: bool, tails: dict[object, tuple[int, bytes, bytes]]
    ) -> None:
        """Rewrite and send one packet; ``tails`` caches each layout's extension+payload bytes."""
        send_rtp = self.send_rtp
        if send_rtp is None or not self.compatible:
            return
        if not self.started:
            if self.kind == "video" and not keyframe:
                return
            self._start(packet)
        elif (packet.sequence_number - self._start_seq) & 0xFFFF > 0x8000:
            return  # older than our starting point
        layout = self.layout
        tail = tails.get(layout)
        if tail is None:
            source = self.forwarder.source
            b0, ext = layout.build(packet, source.ext_ids if source is not None else {})
            tail = tails[layout] = (b0, ext, ext + packet.payload)
        seq = (packet.sequence_number + self.seq_offset) & 0xFFFF
        ts = (packet.timestamp + self.ts_offset) & 0xFFFFFFFF
        data = (
            _HEADER.pack(
                tail[0], (0x80 if packet.marker else 0) | self.payload_type, seq, ts, self.ssrc
            )
            + tail[2]
        )
        send_rtp(data)
        self.packets_sent += 1
        self.bytes_sent += len(data)
        self.stats.on_sent(len(packet.payload))
        if self.last_out_seq is None or ((seq - self.last_out_seq) & 0xFFFF) < 0x8000:
            self.last_out_seq = seq
            self.last_out_ts = ts
            self.last_sent = time.monotonic()

    def _start(self, packet: RtpPacket) -> None:
        """Choose offsets so that our sequence and timestamps continue where they left off."""
        if self.last_out_seq is None:
            first_seq, first_ts = self._next_seq, self._next_ts
        else:
            elapsed = max(time.monotonic() - self.last_sent, 0.001)
            first_seq = (self.last_out_seq + 1) & 0xFFFF
            first_ts = (self.last_out_ts + max(1, int(elapsed * self.clock_rate))) & 0xFFFFFFFF
        self.seq_offset = (first_seq - packet.sequence_number) & 0xFFFF
        self.ts_offset = (first_ts - packet.timestamp) & 0xFFFFFFFF
        self._start_seq = packet.sequence_number
        self.started = True

    # -- RTCP from the viewer -------------------------------------------------------------------

    def on_nack(self, lost: list[int]) -> None:
        """Answer a viewer's NACK (RFC 4585 §6.2.1) from the cache, as RTX when negotiated."""
        send_rtp = self.send_rtp
        source = self.forwarder.source
        if send_rtp is None or not self.started or source is None:
            return
        for out_seq in lost:
            packet = self.forwarder.lookup((out_seq - self.seq_offset) & 0xFFFF)
            if packet is None:
                self.nack_misses += 1
                continue
            b0, ext = self.layout.build(packet, source.ext_ids)
            ts = (packet.timestamp + self.ts_offset) & 0xFFFFFFFF
            marker = 0x80 if packet.marker else 0
            if self.rtx_payload_type is not None and self.rtx_ssrc is not None:
                # RFC 4588 §4: the original sequence number leads the RTX payload
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                header = _HEADER.pack(
                    b0, marker | self.rtx_payload_type, self._rtx_seq, ts, self.rtx_ssrc
                )
                data = header + ext + struct.pack("!H", out_seq) + packet.payload
            else:
                header = _HEADER.pack(b0, marker | self.payload_type, out_seq, ts, self.ssrc)
                data = header + ext + packet.payload
            send_rtp(data)
            self.retransmitted += 1

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        self.forwarder.request_keyframe()

    def sender_report(self, now: float, ntp_now: int) -> RtcpSenderReport | None:
        """An SR whose NTP/RTP pair comes from the publisher's, shifted by our timestamp offset."""
        source = self.forwarder.source
        if not self.started or source is None or self.packets_sent == 0:
            return None
        reference = source.stats.last_sr
        if reference is not None:
            ref_ntp, ref_rtp, ref_local = reference
            elapsed = now - ref_local
            ntp = (ref_ntp + int(elapsed * NTP_PER_SECOND)) & 0xFFFFFFFFFFFFFFFF
            source_rtp = ref_rtp + int(elapsed * self.clock_rate)
        else:
            # no SR from the publisher (yet): map our own clock to its last packet
            ntp = ntp_now
            source_rtp = source.last_timestamp + int((now - source.last_arrival) * self.clock_rate)
        return self.stats.sender_report(now, ntp, (source_rtp + self.ts_offset) & 0xFFFFFFFF)
