"""The edge pull: a WHEP client inside relaycast that feeds a local Stream from another node.

One :class:`EdgePull` per stream per node, shared by all the node's viewers of that stream. It
``POST``s an offer to ``<source>/whep/<stream>`` (signed with the cluster secret,
:mod:`.auth`), then runs full ICE as the controlling agent, DTLS as client and SRTP over a UDP
socket of its own (:class:`relaycast.loadgen.client_transport.ClientTransport`, bound to the
node's address rather than loopback). The RTP it receives goes into an
:class:`relaycast.media.ingress.IngressLeg` on the local Stream's Forwarders, exactly as a local
publisher's would: Tracks, NACK generation, keyframe requests, receiver reports. Its RTCP goes
back over the same transport, so the source node's egress leg answers the NACKs from its cache
and passes keyframe requests to its own source, coalesced (design.md, "Cluster").

The offer lists every codec relaycast forwards, so whatever the publisher sends can be pulled;
the source answers with the live codec, or all of them before the streamer is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from relaycast.cluster.auth import node_headers
from relaycast.loadgen.client_transport import ClientTransport, parse_answer
from relaycast.media.ingress import IngressLeg
from relaycast.net.dtls import DtlsCertificate
from relaycast.rtp.rtcp import parse_compound
from relaycast.sdp import (
    URI_AUDIO_LEVEL,
    URI_SDES_MID,
    URI_VIDEO_ORIENTATION,
    Codec,
    Negotiated,
    NegotiatedMedia,
    SdpError,
    is_supported,
    parse_sdp,
)

if TYPE_CHECKING:
    from relaycast.media.stream import Stream

log = logging.getLogger(__name__)

SIGNAL_TIMEOUT = 5.0  # seconds for the source's answer to our offer
CONNECT_TIMEOUT = 10.0  # seconds for ICE + DTLS with the source
STALL_TIMEOUT = 5.0  # a live pull that got no RTP this long has lost its source

# payload type, rtpmap, fmtp, RTX payload type: every video format relaycast forwards
_H264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id="
_VIDEO: tuple[tuple[int, str, str, int], ...] = (
    (96, "VP8/90000", "", 97),
    (102, "H264/90000", _H264 + "42e01f", 103),  # constrained baseline
    (104, "H264/90000", _H264 + "42001f", 105),  # baseline
    (106, "H264/90000", _H264 + "4d001f", 107),  # main
    (108, "H264/90000", _H264 + "64001f", 109),  # high
    (112, "H264/90000", _H264 + "640c1f", 113),  # constrained high
    (114, "H264/90000", _H264 + "f4001f", 115),  # high 4:4:4 predictive
    (98, "VP9/90000", "profile-id=0", 99),
    (100, "VP9/90000", "profile-id=2", 101),
    (45, "AV1/90000", "", 46),
)
_OPUS = (111, "opus/48000/2", "minptime=10;useinbandfec=1")
_FEEDBACK = ("nack", "nack pli", "ccm fir")


class PullError(Exception):
    """The pull could not start; ``status`` is the source's HTTP status when it answered."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def build_pull_offer(ufrag: str, pwd: str, fingerprint: str, local: tuple[str, int]) -> str:
    """A BUNDLEd recvonly audio + video offer with every format relaycast forwards."""
    ip, port = local
    lines = [
        "v=0",
        f"o=relaycast-node {secrets.randbits(62)} 2 IN IP4 {ip}",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic:WMS *",
    ]
    common = [
        f"c=IN IP4 {ip}",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:active",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
    ]
    candidate = [f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host", "a=end-of-candidates"]
    video_pts = " ".join(f"{pt} {rtx}" for pt, _, _, rtx in _VIDEO)
    lines += [f"m=video {port} UDP/TLS/RTP/SAVPF {video_pts}", "a=mid:0", *common]
    lines += [f"a=extmap:1 {URI_SDES_MID}", f"a=extmap:3 {URI_VIDEO_ORIENTATION}"]
    for pt, rtpmap, fmtp, rtx in _VIDEO:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in _FEEDBACK]
        lines += [f"a=rtpmap:{rtx} rtx/90000", f"a=fmtp:{rtx} apt={pt}"]
    lines += candidate
    pt, rtpmap, fmtp = _OPUS
    lines += [f"m=audio {port} UDP/TLS/RTP/SAVPF {pt}", "a=mid:1", *common]
    lines += [f"a=extmap:1 {URI_SDES_MID}", f"a=extmap:2 {URI_AUDIO_LEVEL}"]
    lines += [f"a=rtpmap:{pt} {rtpmap}", f"a=fmtp:{pt} {fmtp}", *candidate]
    return "\r\n".join(lines) + "\r\n"


def negotiated_from_answer(text: str) -> Negotiated:
    """What the source will send us, as the Negotiated an IngressLeg routes by: every accepted
    section with the codecs (and RTX) of the answer. Raises PullError for an unusable one."""
    try:
        answer = parse_sdp(text)
    except SdpError as exc:
        raise PullError(f"the source's answer is not valid SDP: {exc}") from exc
    media: list[NegotiatedMedia] = []
    for index, m in enumerate(answer.media):
        kind = m.kind
        codecs = [c for c in m.codecs if kind in ("audio", "video") and is_supported(c, kind)]
        if m.port == 0 or not codecs:
            media.append(NegotiatedMedia(mid=m.mid or str(index), kind=kind, index=index))
            continue
        rtx: dict[int, int] = {}
        for codec in codecs:
            found = m.rtx_for(codec.payload_type)
            if found is not None and kind == "video":
                rtx[codec.payload_type] = found.payload_type
        feedback = sorted({fb for c in codecs for fb in c.rtcp_fb if fb in _FEEDBACK})
        media.append(
            NegotiatedMedia(
                mid=m.mid or str(index),
                kind=kind,
                index=index,
                codecs=codecs,
                rtx=rtx,
                extensions={uri: ext_id for ext_id, uri in m.extmaps.items()},
                rtcp_fb=feedback,
                direction="recvonly",
                rejected=False,
            )
        )
    accepted = [m for m in media if not m.rejected]
    if not accepted:
        raise PullError("the source's answer accepts no audio or video")
    first = answer.media[accepted[0].index]
    return Negotiated(
        media=media,
        remote_ufrag=first.ice_ufrag or "",
        remote_pwd=first.ice_pwd or "",
        remote_fingerprints=list(first.fingerprints),
        remote_setup=first.setup or "passive",
        bundle_mids=[m.mid for m in accepted],
        local_setup="active",
    )


class NodeTransport(ClientTransport):
    """The client transport on a socket bound to the node's own address (the load generator's
    binds loopback), so that it can reach other machines."""

    def __init__(self, certificate: DtlsCertificate, bind_ip: str, **kwargs: object) -> None:
        super().__init__(certificate, **kwargs)  # type: ignore[arg-type]
        self.sock.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
        sock.bind((bind_ip, 0))
        self.sock = sock
        self.local = sock.getsockname()[:2]


class _RtcpSink:
    """The ingress leg's sink: its RTCP goes back to the source over the pull's transport."""

    def __init__(self, transport: ClientTransport) -> None:
        self._transport = transport

    def send_rtp(self, packet: bytes) -> int:
        return 0

    def send_rtcp(self, packet: bytes) -> int:
        self._transport.send_rtcp(packet)
        return len(packet)


class EdgePull:
    """One pull of ``stream`` from ``source`` (a node URL). States: ``signalling`` ->
    ``connecting`` -> ``attached`` (DTLS up, its ingress feeds the Stream) -> ``live`` (RTP
    flows) ; ``failed`` / ``closed``."""

    def __init__(
        self,
        *,
        stream: Stream,
        source: str,
        path: list[str],
        node_url: str,
        secret: str | None,
        certificate: DtlsCertificate,
        bind_ip: str,
        http: aiohttp.ClientSession,
        max_bitrate: int,
        keyframe_interval: float,
        on_attach: Callable[[EdgePull], None],
        on_end: Callable[[EdgePull, str], None],
    ) -> None:
        self.stream = stream
        self.source = source
        self.path = path  # the chain from the origin to the source
        self.node_url = node_url
        self.secret = secret
        self.http = http
        self.max_bitrate = max_bitrate
        self.keyframe_interval = keyframe_interval
        self.on_attach = on_attach
        self.on_end = on_end
        self.state = "signalling"
        self.created = time.monotonic()
        self.connected_at: float | None = None  # first RTP (the local stream is live)
        self.last_rtp: float | None = None
        self.reason = ""
        self.location: str | None = None
        self.ingress: IngressLeg | None = None
        self._negotiated: Negotiated | None = None
        self._attached = False
        self.transport = NodeTransport(
            certificate, bind_ip, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp,
            on_srtp=self._on_srtp, fast_gcm=False,
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None
        #: the signalling task (set by the node) and, when it failed, why
        self.signalled: asyncio.Task[None] | None = None
        self.error: PullError | None = None

    def __repr__(self) -> str:
        return f"EdgePull({self.stream.name} <- {self.source}, {self.state})"

    @property
    def closed(self) -> bool:
        return self.state in ("failed", "closed")

    # -- the Stream's view (relaycast.media.stream.Upstream) ------------------------------------

    def codecs(self) -> dict[str, Codec]:
        """The codecs the source sends: once live, those of the Tracks; before, the answer's
        when it named one per kind (the source was live), else nothing known."""
        if self.ingress is not None and self.ingress.tracks:
            return {t.kind: t.codec for t in self.ingress.tracks.values()}
        negotiated = self._negotiated
        if negotiated is None:
            return {}
        out: dict[str, Codec] = {}
        for media in negotiated.accepted():
            if len(media.codecs) != 1:
                return {}
            out[media.kind] = media.codecs[0]
        return out

    # -- lifecycle ------------------------------------------------------------------------------

    async def signal(self) -> None:
        """POST our offer, take the answer, start ICE. Raises PullError."""
        transport = self.transport
        offer = build_pull_offer(
            transport.local_ufrag, transport.local_pwd, transport.certificate.fingerprint,
            transport.local,
        )  # fmt: skip
        path = f"/whep/{self.stream.name}"
        body = offer.encode()
        headers = {"Content-Type": "application/sdp"}
        if self.secret is not None:
            headers.update(node_headers(self.secret, "POST", path, self.node_url, body))
        try:
            async with asyncio.timeout(SIGNAL_TIMEOUT):
                async with self.http.post(
                    self.source + path, data=body, headers=headers, allow_redirects=False
                ) as response:
                    text = await response.text()
                    status = response.status
                    location = response.headers.get("Location")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PullError(f"{self.source} is unreachable ({type(exc).__name__}: {exc})") from exc
        if status != 201:
            detail = text.strip()[:300]
            raise PullError(f"{self.source} answered {status}: {detail}", status)
        if location:
            self.location = location if "://" in location else self.source + location
        self._negotiated = negotiated_from_answer(text)
        try:
            remote = parse_answer(text)
        except ValueError as exc:
            raise PullError(f"the source's answer is unusable: {exc}") from exc
        self.state = "connecting"
        transport.start(remote)
        self._task = asyncio.create_task(self._await_connected())

    async def _await_connected(self) -> None:
        try:
            await self.transport.wait_connected(CONNECT_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            self.fail(f"ICE/DTLS with {self.source} failed: {exc or 'timeout'}")

    def _on_srtp(self) -> bool:
        """DTLS is up (called synchronously by the transport before any SRTP is read): the
        ingress takes over the Stream's Forwarders from now on."""
        negotiated = self._negotiated
        if negotiated is None or self.closed:
            return False
        self.ingress = IngressLeg(
            negotiated,
            forwarders=self.stream.forwarders,
            counters=self.stream.counters,
            sender_ssrc=secrets.randbits(32) | 1,
            cname=secrets.token_hex(8),
            max_bitrate=self.max_bitrate,
            keyframe_interval=self.keyframe_interval,
        )
        self.ingress.sink = _RtcpSink(self.transport)
        self.state = "attached"
        self.on_attach(self)
        self._attached = True
        return False  # the transport keeps reading its socket

    def _on_rtp(self, data: bytes, arrival_ns: int) -> None:
        ingress = self.ingress
        if ingress is None or not self._attached:
            return
        now = time.monotonic()
        if self.connected_at is None:
            self.connected_at = now
            self.state = "live"
            log.info("pull of %r from %s is live", self.stream.name, self.source)
        self.last_rtp = now
        ingress.on_rtp(data, arrival_ns // 1000)

    def _on_rtcp(self, data: bytes) -> None:
        ingress = self.ingress
        if ingress is None or not self._attached:
            return
        try:
            packets = parse_compound(data)
        except ValueError:
            self.stream.counters.bad_packets += 1
            return
        ingress.on_rtcp(packets, time.monotonic())

    def poll_feedback(self, now: float) -> None:
        """Fast timer: NACKs and keyframe requests to the source."""
        if self.ingress is not None and self._attached:
            for packet in self.ingress.poll(now):
                self.ingress.send_rtcp(packet)

    def send_reports(self, now: float) -> None:
        """Slow timer: receiver reports to the source."""
        if self.ingress is not None and self._attached:
            for packet in self.ingress.reports(now):
                self.ingress.send_rtcp(packet)

    def stalled(self, now: float) -> str | None:
        """Why this pull should be given up now, or None."""
        if self.closed:
            return None
        if self.last_rtp is not None:
            if now - self.last_rtp > STALL_TIMEOUT:
                return f"no media from {self.source} for {now - self.last_rtp:.0f} s"
            return None
        if self.state in ("signalling", "connecting") and now - self.created > (
            SIGNAL_TIMEOUT + CONNECT_TIMEOUT
        ):
            return f"no connection to {self.source}"
        return None

    def fail(self, reason: str) -> None:
        if self.closed:
            return
        self._finish("failed", reason)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self._finish("closed", reason)

    def _finish(self, state: str, reason: str) -> None:
        self.state = state
        self.reason = reason
        self._attached = False
        log.info("pull of %r from %s ends: %s", self.stream.name, self.source, reason)
        if self.ingress is not None:
            self.ingress.close()  # its Tracks leave the Forwarders (if still their source)
        self.transport.close()  # DTLS close_notify: the source ends our session at once
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        if self.location is not None:
            asyncio.get_running_loop().create_task(self._delete(self.location))
        self.on_end(self, reason)

    async def _delete(self, url: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with asyncio.timeout(SIGNAL_TIMEOUT):
                async with self.http.delete(url) as response:
                    await response.read()

    def describe(self, now: float) -> dict[str, object]:
        return {
            "stream": self.stream.name,
            "source": self.source,
            "path": self.path,
            "state": self.state,
            "age_s": round(now - self.created, 1),
            "last_rtp_s": None if self.last_rtp is None else round(now - self.last_rtp, 1),
        }
