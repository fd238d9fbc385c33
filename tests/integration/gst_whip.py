"""A WHIP publisher and a WHEP viewer built on GStreamer's ``webrtcbin``.

Debian 12's GStreamer (1.22) has ``webrtcbin`` but no ``whipsink``/``whepsrc`` (those are in
gst-plugins-rs, which Debian does not ship), so this script does the HTTP exchange itself and
lets webrtcbin (libnice ICE, GStreamer's DTLS/SRTP, its RTP stack) do the rest. It runs under
the system Python with PyGObject (``/usr/bin/python3``, packages python3-gi and
gir1.2-gst-plugins-bad-1.0), not the test venv, which cannot import ``gi``.

    gst_whip.py publish URL --key KEY --video vp8|h264 --seconds S
    gst_whip.py view URL --video-frames N --audio-frames N --timeout S

The offer is sent whole (ICE gathering finished, candidates in the SDP), as WHIP allows.
``publish`` streams videotestsrc (320x240, 30 fps) + audiotestsrc (Opus) for S seconds.
``view`` offers VP8, H.264 and Opus receive-only, decodes what arrives with decodebin and stops
once it has decoded N video and N audio frames (or at the timeout). Both print one JSON line
(``{"event": "done", ...}``) on stdout and exit 0 when the peer connection reached
``connected`` and no pipeline error happened; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import Gst, GstSdp, GstWebRTC, Nice  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

WIDTH, HEIGHT, FPS = 320, 240, 30

VIDEO_ENCODERS = {
    "vp8": (
        "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=30 target-bitrate=600000 "
        "error-resilient=partitions ! rtpvp8pay picture-id-mode=15-bit mtu=1200 ! "
        "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    ),
    "h264": (
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=600 ! "
        "video/x-h264,profile=constrained-baseline ! "
        "rtph264pay config-interval=-1 aggregate-mode=zero-latency mtu=1200 ! "
        "application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000"
    ),
}

PUBLISH_PIPELINE = (
    "webrtcbin name=webrtc bundle-policy=max-bundle "
    f"videotestsrc is-live=true pattern=ball ! "
    f"video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1 ! videoconvert ! queue ! "
    "{video} ! webrtc. "
    "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! queue ! "
    "opusenc bitrate=64000 ! rtpopuspay ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc."
)

FEEDBACK = "rtcp-fb-nack=(boolean)true,rtcp-fb-nack-pli=(boolean)true,rtcp-fb-ccm-fir=(boolean)true"
# What the viewer accepts: VP8, and H.264 (packetization-mode=1) in the profiles encoders use.
VIEW_VIDEO_CAPS = ";".join(
    [f"application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000,{FEEDBACK}"]
    + [
        "application/x-rtp,media=video,encoding-name=H264,"
        f"payload={pt},clock-rate=90000,packetization-mode=(string)1,"
        f"profile-level-id=(string){plid},{FEEDBACK}"
        for pt, plid in ((102, "42e01f"), (104, "42001f"), (106, "4d001f"), (108, "640c1f"))
    ]
)
VIEW_AUDIO_CAPS = (
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,"
    "encoding-params=(string)2"
)


def log(message: str) -> None:
    print(f"gst_whip: {message}", file=sys.stderr, flush=True)


class Peer:
    """One webrtcbin in a pipeline, with the offer/answer done over WHIP or WHEP."""

    def __init__(self, pipeline: Any, key: str | None, local_address: str) -> None:
        self.pipeline = pipeline
        self.webrtc = pipeline.get_by_name("webrtc")
        # The test server listens on 127.0.0.1 only and libnice gathers no loopback candidate
        # by itself: pin ICE to that address (harness configuration, as peers.py does for
        # aiortc), UDP only.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.set_property("ice-tcp", False)
        address = Nice.Address.new()
        if not address.set_from_string(local_address):
            raise ValueError(f"not an IP address: {local_address}")
        self.ice.get_property("agent").add_local_address(address)
        self.key = key
        self.location: str | None = None
        self.gathered = threading.Event()
        self.connected = threading.Event()
        self.failed = threading.Event()
        self.negotiation_needed = threading.Event()
        self.candidates: list[tuple[int, str]] = []
        self.webrtc.connect("on-negotiation-needed", lambda _e: self.negotiation_needed.set())
        self.webrtc.connect("on-ice-candidate", self._on_candidate)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection)

    def _on_candidate(self, _element: Any, mline: int, candidate: str) -> None:
        self.candidates.append((mline, candidate))

    def _on_gathering(self, element: Any, _spec: Any) -> None:
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            self.gathered.set()

    def _on_connection(self, element: Any, _spec: Any) -> None:
        state = element.get_property("connection-state")
        log(f"connection state {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED:
            self.connected.set()
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            self.failed.set()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _offer_text(self) -> str:
        """The local description with every gathered candidate (added when webrtcbin has not
        written them into it itself)."""
        text: str = self.webrtc.get_property("local-description").sdp.as_text()
        if "a=candidate:" in text:
            return text
        sections = text.split("\r\nm=")
        for mline, candidate in self.candidates:
            if mline + 1 < len(sections):
                sections[mline + 1] = sections[mline + 1].rstrip("\r\n") + f"\r\na={candidate}\r\n"
        return "\r\nm=".join(sections)

    def negotiate(self, url: str, timeout: float) -> None:
        """Offer, wait for ICE gathering, POST the offer, apply the answer."""
        # webrtcbin can offer only once every sink pad has caps; it says so with this signal
        if not self.negotiation_needed.wait(timeout):
            raise RuntimeError("webrtcbin never asked for negotiation")
        # the offer is borrowed from the reply, which lives as long as its promise: keep both
        offered = Gst.Promise.new()
        self.webrtc.emit("create-offer", None, offered)
        if offered.wait() != Gst.PromiseResult.REPLIED:
            raise RuntimeError("create-offer gave no reply")
        reply = offered.get_reply()
        offer = reply.get_value("offer")
        if offer is None or offer.sdp is None:
            raise RuntimeError(f"create-offer failed: {reply.to_string()}")
        promise = Gst.Promise.new()
        self.webrtc.emit("set-local-description", offer, promise)
        promise.wait()
        if not self.gathered.wait(timeout):
            log("ICE gathering not complete, sending the candidates so far")
        sdp = self._offer_text()
        log("offer:\n" + sdp)
        request = urllib.request.Request(
            url, data=sdp.encode(), method="POST", headers=self._headers("application/sdp")
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, answer = response.status, response.read().decode()
                location = response.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise RuntimeError(f"POST {url}: HTTP {exc.code}: {body}") from exc
        log(f"POST {url}: {status}, Location {location}\nanswer:\n{answer}")
        if status != 201:
            raise RuntimeError(f"POST {url}: HTTP {status}, expected 201")
        self.location = urllib.parse.urljoin(url, location)
        ok, message = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            raise RuntimeError(f"cannot parse the answer ({ok})")
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        promise = Gst.Promise.new()
        self.webrtc.emit("set-remote-description", description, promise)
        promise.wait()

    def delete(self) -> None:
        if not self.location:
            return
        request = urllib.request.Request(self.location, method="DELETE", headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                log(f"DELETE {self.location}: {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            log(f"DELETE {self.location}: {exc}")

    def poll_bus(self, seconds: float) -> str | None:
        """Pump the bus for up to *seconds*; returns an error message if the pipeline failed."""
        bus = self.pipeline.get_bus()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = bus.timed_pop_filtered(
                int(min(left, 0.1) * Gst.SECOND), Gst.MessageType.ERROR | Gst.MessageType.EOS
            )
            if msg is None:
                continue
            if msg.type == Gst.MessageType.ERROR:
                error, debug = msg.parse_error()
                return f"{msg.src.get_name()}: {error.message} ({debug})"
            return "unexpected end of stream"
        return None


def publish(args: argparse.Namespace) -> int:
    pipeline = Gst.parse_launch(PUBLISH_PIPELINE.format(video=VIDEO_ENCODERS[args.video]))
    peer = Peer(pipeline, args.key, args.local_address)
    pipeline.set_state(Gst.State.PLAYING)
    for transceiver in peer_transceivers(peer):
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
    error: str | None = None
    try:
        peer.negotiate(args.url, args.timeout)
        start = time.monotonic()
        while time.monotonic() - start < args.seconds and error is None:
            error = peer.poll_bus(0.5)
            if peer.failed.is_set():
                error = "peer connection failed"
    finally:
        peer.delete()
        pipeline.set_state(Gst.State.NULL)
    result = {"event": "done", "connected": peer.connected.is_set(), "error": error}
    print(json.dumps(result), flush=True)
    return 0 if peer.connected.is_set() and error is None else 1


def peer_transceivers(peer: Peer) -> list[Any]:
    found: list[Any] = []
    while (transceiver := peer.webrtc.emit("get-transceiver", len(found))) is not None:
        found.append(transceiver)
    return found


class Counter:
    """Decoded frames per kind, and the first decoded video sizes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.frames = {"video": 0, "audio": 0}
        self.sizes: list[tuple[int, int]] = []
        self.codecs: list[str] = []

    def probe(self, pad: Any, info: Any, kind: str) -> Any:
        with self.lock:
            self.frames[kind] += 1
            if kind == "video" and len(self.sizes) < 5:
                caps = pad.get_current_caps()
                if caps is not None:
                    s = caps.get_structure(0)
                    self.sizes.append((s.get_value("width"), s.get_value("height")))
        return Gst.PadProbeReturn.OK


def view(args: argparse.Namespace) -> int:
    pipeline = Gst.Pipeline.new("viewer")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipeline.add(webrtc)
    counter = Counter()
    recvonly = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
    webrtc.emit("add-transceiver", recvonly, Gst.Caps.from_string(VIEW_VIDEO_CAPS))
    webrtc.emit("add-transceiver", recvonly, Gst.Caps.from_string(VIEW_AUDIO_CAPS))

    def on_decoded(_decodebin: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name()
        kind = "video" if name.startswith("video/") else "audio"
        sink = Gst.ElementFactory.make("fakesink", None)
        sink.set_property("sync", False)
        sink.set_property("async", False)
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, counter.probe, kind)
        log(f"decoding {kind}: {caps.to_string()}")

    def on_pad(_element: Any, pad: Any) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps()
        log(f"incoming stream: {caps.to_string() if caps else '?'}")
        if caps is not None:
            with counter.lock:
                counter.codecs.append(caps.get_structure(0).get_string("encoding-name"))
        queue = Gst.ElementFactory.make("queue", None)
        decodebin = Gst.ElementFactory.make("decodebin", None)
        decodebin.connect("pad-added", on_decoded)
        pipeline.add(queue)
        pipeline.add(decodebin)
        queue.link(decodebin)
        queue.sync_state_with_parent()
        decodebin.sync_state_with_parent()
        pad.link(queue.get_static_pad("sink"))

    webrtc.connect("pad-added", on_pad)
    peer = Peer(pipeline, None, args.local_address)
    pipeline.set_state(Gst.State.PLAYING)
    error: str | None = None
    try:
        peer.negotiate(args.url, min(args.timeout, 15.0))
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and error is None:
            with counter.lock:
                enough = (
                    counter.frames["video"] >= args.video_frames
                    and counter.frames["audio"] >= args.audio_frames
                )
            if enough:
                break
            error = peer.poll_bus(0.2)
            if peer.failed.is_set():
                error = "peer connection failed"
    finally:
        peer.delete()
        pipeline.set_state(Gst.State.NULL)
    with counter.lock:
        result = {
            "event": "done",
            "connected": peer.connected.is_set(),
            "error": error,
            "frames": counter.frames,
            "sizes": counter.sizes,
            "codecs": counter.codecs,
        }
    print(json.dumps(result), flush=True)
    return 0 if peer.connected.is_set() and error is None else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", help="WHIP: stream test sources")
    pub.add_argument("url")
    pub.add_argument("--key", required=True)
    pub.add_argument("--video", choices=sorted(VIDEO_ENCODERS), default="vp8")
    pub.add_argument("--seconds", type=float, default=10.0)
    pub.add_argument("--timeout", type=float, default=15.0, help="for ICE gathering and HTTP")
    watch = commands.add_parser("view", help="WHEP: decode what arrives")
    watch.add_argument("url")
    watch.add_argument("--video-frames", type=int, default=60)
    watch.add_argument("--audio-frames", type=int, default=50)
    watch.add_argument("--timeout", type=float, default=30.0)
    for command in (pub, watch):
        command.add_argument(
            "--local-address", default="127.0.0.1", help="the one address ICE gathers on"
        )
    args = parser.parse_args()
    Gst.init(None)
    log(f"{Gst.version_string()}")
    return publish(args) if args.command == "publish" else view(args)


if __name__ == "__main__":
    sys.exit(main())
