"""The server side of a WHEP session: its egress leg sends the stream to one viewer."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from relaycast.media.downtrack import MID_URI, DownTrack, ExtLayout
from relaycast.media.egress import EgressLeg
from relaycast.media.session import Session
from relaycast.net.sink import MediaSink
from relaycast.rtp.rtcp import RtcpPacket
from relaycast.sdp import Negotiated, SendSsrcs, codec_key

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream


def _random_ssrc() -> int:
    return secrets.randbits(32) | 1


class Subscriber(Session):
    """A viewer: the session around an :class:`EgressLeg` with one DownTrack per section."""

    role = "subscriber"

    def __init__(self, server: MediaServer, stream: Stream, negotiated: Negotiated) -> None:
        super().__init__(server, stream, negotiated)
        self.cname = secrets.token_hex(8)
        self.send_ssrcs: dict[str, SendSsrcs] = {}
        downtracks: list[DownTrack] = []
        stream_id = f"relaycast-{stream.name}"
        for media in negotiated.media:
            if media.rejected or media.kind not in ("audio", "video") or not media.codecs:
                continue
            ssrc = _random_ssrc()
            rtx_ssrc = _random_ssrc() if media.rtx else None
            items = tuple(
                (ext_id, uri, media.mid.encode() if uri == MID_URI else None)
                for uri, ext_id in sorted(media.extensions.items(), key=lambda item: item[1])
            )
            forwarder = stream.forwarders[media.kind]
            downtrack = DownTrack(
                kind=media.kind,
                forwarder=forwarder,
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                payload_types={codec_key(c): c.payload_type for c in media.codecs},
                rtx_payload_types=dict(media.rtx),
                clock_rate=media.codecs[0].clock_rate,
                layout=ExtLayout(items),
                cname=self.cname,
                counters=stream.counters,
            )
            if forwarder.source is not None:
                downtrack.source_changed(forwarder.source)
            if media.kind == "video":
                downtrack.on_first_keyframe = self._first_keyframe
            downtracks.append(downtrack)
            self.send_ssrcs[media.mid] = SendSsrcs(
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                cname=self.cname,
                stream_id=stream_id,
                track_id=f"{stream_id}-{media.kind}",
            )
        self.egress = EgressLeg(downtracks, counters=stream.counters, cname=self.cname)

    @property
    def downtracks(self) -> list[DownTrack]:
        return self.egress.downtracks

    def _first_keyframe(self) -> None:
        """Time to first frame: from the WHEP POST to the first keyframe we sent this viewer."""
        self.server.first_keyframe.observe(time.monotonic() - self.created)

    # -- the leg's port -------------------------------------------------------------------------

    def on_connected(self, sink: MediaSink) -> None:
        self.egress.connect(sink)

    def on_rtp(self, data: bytes, arrival_us: int) -> None:
        self.counters.bad_packets += 1  # viewers are receive-only

    def admit_rtcp(self, now: float) -> bool:
        return self.egress.admit_rtcp(now)

    def on_rtcp_packets(self, packets: list[RtcpPacket], now: float) -> None:
        self.egress.on_rtcp(packets, now)

    def send_reports(self, now: float) -> None:
        """Slow timer: sender reports (RFC 3550 §6.4.1)."""
        if self.connected_at is None or self.closed:
            return
        for packet in self.egress.reports(now):
            self.egress.sink.send_rtcp(packet)

    def _teardown(self) -> None:
        self.egress.close()
        self.stream.subscribers.discard(self)
