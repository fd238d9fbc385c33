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
from typing import TYPE_CHECKING

from relaycast.media.feedback.reports import SenderStats
from relaycast.net.srtp import SrtpError
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.rtp.rtcp import RtcpSenderReport

if TYPE_CHECKING:
    from relaycast.media.forwarder import Forwarder
    from relaycast.media.track import Track
    from relaycast.net.transport import PeerTransport

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
NTP_PER_SECOND = 1 << 32

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class ExtLayout:
    """The header extensions one viewer negotiated: ``(viewer id, uri, constant value)``.

    Viewers with equal layouts share the rewritten extension block of each packet, so the
    block is built once per packet per layout, not once per viewer. The Forwarder interns
    equal layouts (:meth:`Forwarder.add`), so the per-packet cache is keyed by identity.
    """

    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[int, str, bytes | None], ...]) -> None:
        self.items = items

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
        # bound at activate(): libsrtp protect, the socket's sendto, the viewer's transport
        self._protect: Callable[[bytes], bytes] | None = None
        self._sendto: Callable[[bytes, tuple[str, int]], int] | None = None
        self._transport: PeerTransport | None = None
        self.started = False
        self.catching_up = False  # replaying the GOP (fast start): live packets wait
        self.compatible = False  # until a source whose codec the viewer negotiated attaches
        self.payload_type = 0
        self.rtx_payload_type: int | None = None
        self._start_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        # where our sequence/timestamp space continues after a source change (seq, ts, time)
        self._resume: tuple[int, int, float] | None = None
        self._rtx_seq = secrets.randbits(15)
        self.stats = SenderStats(ssrc, clock_rate)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.payload_bytes = 0
        self.send_errors = 0
        self.retransmitted = 0
        self.nack_misses = 0
        self.keyframe_requests = 0

    def __repr__(self) -> str:
        return f"DownTrack({self.kind}, ssrc={self.ssrc})"

    # -- lifecycle ------------------------------------------------------------------------------

    def activate(self, transport: PeerTransport) -> None:
        """The viewer's DTLS is up: start sending (from the GOP cache or the next keyframe)."""
        if transport.srtp is None or transport.mux.sock is None:
            return
        self._transport = transport
        self._protect = transport.srtp.protect
        self._sendto = transport.mux.sock.sendto
        self.forwarder.catch_up(self)

    def source_lost(self) -> None:
        """The source goes away: remember where our sequence and timestamps continue."""
        self.catching_up = False
        forwarder = self.forwarder
        if self.started and forwarder.newest is not None:
            newest = forwarder.newest
            self._resume = (
                (newest.sequence_number + self.seq_offset) & 0xFFFF,
                (newest.timestamp + self.ts_offset) & 0xFFFFFFFF,
                forwarder.newest_at,
            )
        self.started = False

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
        self.catching_up = False
        if self._transport is not None:  # keep the server's egress total after we are gone
            self._transport.mux.fanout_bytes_ended += self.bytes_sent
        self._protect = self._sendto = self._transport = None
        self.forwarder.remove(self)

    # -- the hot path ---------------------------------------------------------------------------

    def send(
        self,
        packet: RtpPacket,
        keyframe: bool,
        tails: dict[int, tuple[int, bytes, bytes]],
        replay: bool = False,
    ) -> None:
        """Rewrite, protect and send one packet; ``tails`` caches each layout's ext+payload."""
        protect = self._protect
        if protect is None or not self.compatible or (self.catching_up and not replay):
            return
        if not self.started:
            if self.kind == "video" and not keyframe:
                return
            self._start(packet)
        else:
            delta = (packet.sequence_number - self._start_seq) & 0xFFFF
            if delta > 0x8000:
                return  # older than our starting point
            if delta > 0x4000:  # let the floor follow the stream across wrap-arounds
                self._start_seq = (packet.sequence_number - 0x2000) & 0xFFFF
        layout = self.layout
        tail = tails.get(id(layout))
        if tail is None:
            source = self.forwarder.source
            b0, ext = layout.build(packet, source.ext_ids if source is not None else {})
            tail = tails[id(layout)] = (b0, ext, ext + packet.payload)
        data = protect(
            _HEADER.pack(
                tail[0],
                (0x80 if packet.marker else 0) | self.payload_type,
                (packet.sequence_number + self.seq_offset) & 0xFFFF,
                (packet.timestamp + self.ts_offset) & 0xFFFFFFFF,
                self.ssrc,
            )
            + tail[2]
        )
        try:
            self._sendto(data, self._transport.addr)  # type: ignore[misc, union-attr, arg-type]
        except OSError:  # a full socket buffer or a vanished route: the viewer NACKs
            self.send_errors += 1
            return
        self.packets_sent += 1
        self.bytes_sent += len(data)
        self.payload_bytes += len(packet.payload)

    def _start(self, packet: RtpPacket) -> None:
        """Choose offsets so that our sequence and timestamps continue where they left off."""
        if self._resume is None:
            first_seq, first_ts = secrets.randbits(15), secrets.randbits(31)  # RFC 3550 §5.1
        else:
            last_seq, last_ts, last_at = self._resume
            elapsed = max(time.monotonic() - last_at, 0.001)
            first_seq = (last_seq + 1) & 0xFFFF
            first_ts = (last_ts + max(1, int(elapsed * self.clock_rate))) & 0xFFFFFFFF
        self.seq_offset = (first_seq - packet.sequence_number) & 0xFFFF
        self.ts_offset = (first_ts - packet.timestamp) & 0xFFFFFFFF
        self._start_seq = packet.sequence_number
        self.started = True

    def _send_now(self, data: bytes) -> None:
        """Protect and send one packet outside the hot loop (retransmissions)."""
        protect, sendto, transport = self._protect, self._sendto, self._transport
        if protect is None or sendto is None or transport is None or transport.addr is None:
            return
        try:
            sendto(protect(data), transport.addr)
        except (OSError, SrtpError, ValueError):
            self.send_errors += 1

    # -- RTCP from the viewer -------------------------------------------------------------------

    def on_nack(self, lost: list[int]) -> None:
        """Answer a viewer's NACK (RFC 4585 §6.2.1) from the cache, as RTX when negotiated."""
        source = self.forwarder.source
        if self._protect is None or not self.started or source is None:
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
            self._send_now(data)
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
        self.stats.packet_count = self.packets_sent
        self.stats.octet_count = self.payload_bytes
        return self.stats.sender_report(now, ntp, (source_rtp + self.ts_offset) & 0xFFFFFFFF)
