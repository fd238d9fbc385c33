"""The server side of a WHEP session: its egress leg sends the stream to one viewer."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaycast.media.downtrack import CLOSED, MID_URI, PAUSED, DownTrack, ExtLayout
from relaycast.media.egress import EgressLeg
from relaycast.media.feedback.congestion import ViewerCongestion
from relaycast.media.layers import LayerInfo, LayerSelector, layer_infos
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
        self.video: DownTrack | None = None
        self.video_mid: str | None = None
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
                self.video = downtrack
                self.video_mid = media.mid
            downtracks.append(downtrack)
            self.send_ssrcs[media.mid] = SendSsrcs(
                ssrc=ssrc,
                rtx_ssrc=rtx_ssrc,
                cname=self.cname,
                stream_id=stream_id,
                track_id=f"{stream_id}-{media.kind}",
            )
        self.egress = EgressLeg(downtracks, counters=stream.counters, cname=self.cname)
        # TWCC to viewers, the bandwidth estimator, probes and playout delay (media/bwe,
        # media/feedback/congestion.py); the layer selection reads ``self.bwe``
        congestion = ViewerCongestion(
            downtracks, playout_delay=getattr(server.config, "playout_delay", True)
        )
        self.egress.congestion = congestion
        self.bwe = congestion.bwe
        # simulcast: this viewer's layer choice (media/layers.py), made again whenever a layer
        # comes or goes, every second, and when the viewer pins one
        self.layers = LayerSelector()
        if self.video is not None:
            stream.forwarders["video"].layer_listeners[self] = self._layers_changed
            self.select_layer(time.monotonic())

    @property
    def downtracks(self) -> list[DownTrack]:
        return self.egress.downtracks

    # -- simulcast layers -----------------------------------------------------------------------

    def _layers_changed(self) -> None:
        self.select_layer(time.monotonic())

    def estimate_bps(self, now: float) -> int | None:
        """This viewer's bandwidth estimate: the estimator's (``self.bwe``) when there is
        one, else REMB and receiver-report loss (EgressLeg.estimate); None: unknown."""
        bwe = getattr(self, "bwe", None)
        if bwe is not None and getattr(bwe, "measured", True):
            return int(bwe.estimate_bps)
        return self.egress.estimate.estimate_bps(now)

    def _probe_ok(self, now: float) -> Callable[[int], bool] | None:
        bwe = getattr(self, "bwe", None)
        if bwe is None or not hasattr(bwe, "probe_succeeded"):
            return None
        has_feedback = getattr(bwe, "has_transport_feedback", None)
        if has_feedback is not None and not has_feedback(now):
            return None  # no transport-wide feedback: nothing to probe with
        return lambda bps: bool(bwe.probe_succeeded(bps, now))

    def select_layer(self, now: float) -> None:
        """Put the video DownTrack on the layer the selection picks (media/layers.py)."""
        video = self.video
        if video is None or video.state is CLOSED:
            return
        root = self.stream.forwarders["video"]
        infos = layer_infos(root, now)
        video.layer_mode = self.layers.mode
        if not any(info.active for info in infos):
            # no simulcast layer is sent: the single encoding, once there is one
            if root.source is not None and (video.forwarder is not root or video.state is PAUSED):
                video.switch_to(root, fast_start=video.state is not PAUSED)
                video.layer_reason = "single encoding"
            return
        current = video.target_layer if video.forwarder is not root else None
        decision = self.layers.decide(
            infos, current, self.estimate_bps(now), now, self._probe_ok(now)
        )
        self._want_probe(infos, decision.target)
        reason = decision.reason
        if decision.target is None:
            video.pause()
        elif decision.target in root.layers:
            video.switch_to(root.layers[decision.target], fast_start=video.state is not PAUSED)
            if video.pending is not None:
                reason = f"waiting for keyframe of {decision.target}"
        video.layer_reason = reason

    def _want_probe(self, infos: list[LayerInfo], target: str | None) -> None:
        """Tell the estimator's prober the rate of the layer above the target, if any."""
        want = getattr(getattr(self, "bwe", None), "want_probe", None)
        if want is None:
            return
        rids = [info.rid for info in infos if info.active]
        above = rids.index(target) + 1 if target in rids else 0
        higher = [info for info in infos if info.active][above:]
        want(int(higher[0].bitrate_bps * 1.15) if higher else None)

    def pin_layer(self, mid: str | None, rid: str | None) -> None:
        """WHEP layer extension: pin ``rid`` of the video section ``mid`` (None: automatic).
        ValueError naming what is wrong when the mid or the rid is unknown."""
        if rid is not None:
            if self.video is None or (mid is not None and mid != self.video_mid):
                raise ValueError(
                    f"mediaId {mid!r} is not this session's video (its mid is {self.video_mid!r})"
                )
            known = list(self.stream.forwarders["video"].layers)
            if rid not in known:
                offered = ", ".join(known) or "none: the stream is not simulcast"
                raise ValueError(f"encodingId {rid!r} is not a layer of this stream ({offered})")
        self.layers.pin(rid)
        self.select_layer(time.monotonic())

    def layer_status(self, now: float) -> dict[str, object]:
        """The WHEP layer extension's GET body (and the API's view of this viewer)."""
        video = self.video
        infos = layer_infos(self.stream.forwarders["video"], now)
        return {
            "mode": self.layers.mode,
            "current": video.layer if video is not None else None,
            "target": video.target_layer if video is not None else None,
            "reason": video.layer_reason if video is not None else "no video",
            "estimate_bps": self.estimate_bps(now),
            "layers": [info.as_json() for info in infos],
        }

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
        self.select_layer(now)

    def _teardown(self) -> None:
        self.stream.forwarders["video"].layer_listeners.pop(self, None)
        self.egress.close()
        self.stream.subscribers.discard(self)
