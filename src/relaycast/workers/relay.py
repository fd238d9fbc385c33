"""The relay between workers: a stream's packets from the worker holding its publisher to
every worker with viewers of it (after mediasoup's pipe transports).

On the publisher's worker each Forwarder is a :class:`RelayForwarder`: after its local fan-out
it sends the plain (decrypted, RTX-unwrapped) RTP packet to the workers subscribed to the
stream, one ``send`` per packet per worker, whatever their number of viewers::

    R | flags (1: keyframe) | relay id (u32) | arrival (f64, CLOCK_MONOTONIC, system-wide) | RTP

On a viewer's worker a :class:`RelaySource` (a Track whose packets come from the link) is the
source of the local Stream's Forwarders, so the local Forwarder keeps its own NACK and GOP
caches: fast start and NACK answers never cross workers. Keyframe requests go back coalesced
(at most one per :data:`KEYFRAME_SPACING` from a worker; the origin's Track coalesces them
with its own viewers'). The publisher's sender-report mapping and bitrate follow once a second.

Control messages (JSON after the type byte): ``U`` a worker has (or no longer has) viewers of
a stream, ``P`` it holds (or no longer holds) a stream's publisher, ``A`` a source starts
(relay id, stream, kind, rid, codec, SSRC, extension ids), ``G`` it ends, ``K`` keyframe
request, ``I`` sender-report mapping, bitrate and frame rate. A worker that subscribes is sent
``A`` and the GOP the origin holds, so its first viewer starts without waiting for a keyframe.

Simulcast: each layer Forwarder (``Forwarder.layer(rid)``) of a :class:`RelayForwarder` is one
too (:meth:`RelayForwarder._new_layer`), so every layer is a source of its own (relay id, ``A``
with its ``rid``, GOP, ``I``, ``K`` back to that layer's Track and so its SSRC). A subscribed
worker gets every layer: the viewers' layer selection there needs each layer's activity,
bitrate, picture size and sender reports, and a switch starts at the target layer's next
keyframe without asking the origin for a new subscription. The receiving worker attaches a
layer's :class:`RelaySource` to ``forwarders["video"].layer(rid)``.

A publisher that reconnects (on any worker) detaches its old Track everywhere (``G`` or the
link closing) and attaches the new one (``A``): the viewers' DownTracks keep their SSRC and
sequence space and restart on its first keyframe, as within one process.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import StreamCounters
from relaycast.media.track import Track
from relaycast.rtp.packet import RtpPacket
from relaycast.rtp.rtcp import RtcpSenderReport
from relaycast.sdp import Codec

if TYPE_CHECKING:
    from relaycast.media.server import MediaServer
    from relaycast.media.stream import Stream

log = logging.getLogger(__name__)

RTP = b"R"
SUBSCRIBE = b"U"
PUBLISHER = b"P"
ANNOUNCE = b"A"
GONE = b"G"
KEYFRAME = b"K"
INFO = b"I"
RELAY_TYPES = frozenset((RTP, SUBSCRIBE, PUBLISHER, ANNOUNCE, GONE, KEYFRAME, INFO))

_RTP_HEADER = struct.Struct("!cBId")
#: a worker asks the origin for a keyframe at most this often per source (s)
KEYFRAME_SPACING = 0.1

Send = Callable[[int, bytes], bool]


def _control(kind: bytes, body: dict[str, Any]) -> bytes:
    return kind + json.dumps(body, separators=(",", ":")).encode()


class RelayForwarder(Forwarder):
    """A Forwarder that also sends a local publisher's packets to the subscribed workers."""

    def __init__(
        self, kind: str, relay: Relay, stream: str, *, use_native: bool | None = None
    ) -> None:
        super().__init__(kind, use_native=use_native)
        self.relay = relay
        self.stream_name = stream
        self.relay_id = 0  # while the source is a local publisher's Track
        #: workers to send every packet to (empty unless the source is local)
        self.targets: tuple[int, ...] = ()

    def _new_layer(self, rid: str) -> Forwarder:
        """A simulcast layer is relayed like the stream's other Forwarders (its own relay id,
        announced with its rid)."""
        return RelayForwarder(
            self.kind, self.relay, self.stream_name, use_native=self.native is not None
        )

    def attach_source(self, track: Track) -> None:
        super().attach_source(track)
        self.relay.source_attached(self, track)

    def detach_source(self, track: Track) -> None:
        was_source = self.source is track
        super().detach_source(track)
        if was_source:
            self.relay.source_detached(self, track)

    def forward(self, packet: RtpPacket, keyframe: bool, now: float) -> None:
        super().forward(packet, keyframe, now)
        if self.targets:
            self.relay.send_packet(self, packet, keyframe, now)


class RelaySource(Track):
    """The source of a Forwarder whose publisher is on another worker."""

    def __init__(
        self,
        relay: Relay,
        origin: int,
        relay_id: int,
        *,
        kind: str,
        codec: Codec,
        ssrc: int,
        ext_ids: dict[str, int],
        forwarder: Forwarder,
        keyframe_interval: float,
        counters: StreamCounters,
        rid: str | None = None,
    ) -> None:
        super().__init__(
            kind=kind,
            codec=codec,
            ssrc=ssrc,
            sender_ssrc=0,
            rtcp_fb=[],  # no NACKs over the link: it does not lose packets
            ext_ids=ext_ids,
            forwarder=forwarder,
            send_rtcp=self._no_rtcp,
            keyframe_interval=keyframe_interval,
            counters=counters,
            rid=rid,
        )
        self.relay = relay
        self.origin = origin
        self.relay_id = relay_id
        self._asked = 0.0

    @staticmethod
    def _no_rtcp(packet: bytes) -> None:
        return None

    def on_relayed(self, packet: RtpPacket, keyframe: bool, now: float, size: int) -> None:
        """A packet the origin's Track forwarded: the same bookkeeping, then the fan-out."""
        self.packets += 1
        self.bytes += size
        self.reception.on_packet(packet.sequence_number, packet.timestamp, now)
        if keyframe:
            self.keyframes_seen += 1
            self.keyframes.keyframe_received(now)
        self.last_timestamp = packet.timestamp
        self.last_arrival = now
        self.forwarder.forward(packet, keyframe, now)

    def request_keyframe(self) -> None:
        if self.kind != "video":
            return
        now = time.monotonic()
        if now - self._asked < KEYFRAME_SPACING:
            return
        self._asked = now
        self.counters.keyframe_requests_sent += 1
        self.relay.send(self.origin, _control(KEYFRAME, {"id": self.relay_id}))


class Relay:
    """One worker's side of the relay."""

    def __init__(self, index: int, count: int, server: MediaServer, send: Send) -> None:
        self.index = index
        self.count = count
        self.server = server
        self.send = send
        #: remote workers with viewers, per stream name
        self.subscribers: dict[str, set[int]] = {}
        #: the worker holding each stream's publisher, as the others announced it
        self.publishers: dict[str, int] = {}
        self._subscribed: set[str] = set()  # streams we told the others we watch
        self._publishing: set[str] = set()  # streams we told the others we publish
        self._outgoing: dict[int, RelayForwarder] = {}  # relay id -> forwarder (local source)
        self._incoming: dict[tuple[int, int], RelaySource] = {}
        self._next_id = 1
        self.packets_out = 0
        self.packets_in = 0

    def forwarder(self, stream: str, kind: str) -> Forwarder:
        """``MediaServer.forwarder_factory``."""
        return RelayForwarder(kind, self, stream)

    # -- local changes --------------------------------------------------------------------------

    def stream_changed(self, name: str) -> None:
        """A session of stream ``name`` came or went here: tell the others what changed."""
        stream = self.server.streams.get(name)
        watching = stream is not None and bool(stream.subscribers)
        publishing = stream is not None and stream.publisher is not None
        if watching != (name in self._subscribed):
            (self._subscribed.add if watching else self._subscribed.discard)(name)
            self._broadcast(_control(SUBSCRIBE, {"stream": name, "on": watching}))
        if publishing != (name in self._publishing):
            (self._publishing.add if publishing else self._publishing.discard)(name)
            self._broadcast(_control(PUBLISHER, {"stream": name, "on": publishing}))

    def _broadcast(self, message: bytes) -> None:
        for peer in range(self.count):
            if peer != self.index:
                self.send(peer, message)

    def source_attached(self, forwarder: RelayForwarder, track: Track) -> None:
        if isinstance(track, RelaySource):
            forwarder.targets = ()
            return
        forwarder.relay_id = self._next_id
        self._next_id += 1
        self._outgoing[forwarder.relay_id] = forwarder
        forwarder.targets = tuple(sorted(self.subscribers.get(forwarder.stream_name, ())))
        for peer in forwarder.targets:
            self._announce(peer, forwarder, track)

    def source_detached(self, forwarder: RelayForwarder, track: Track) -> None:
        if isinstance(track, RelaySource):
            self._incoming.pop((track.origin, track.relay_id), None)
            return
        message = _control(GONE, {"id": forwarder.relay_id})
        for peer in forwarder.targets:
            self.send(peer, message)
        self._outgoing.pop(forwarder.relay_id, None)
        forwarder.targets = ()
        forwarder.relay_id = 0

    def _announce(self, peer: int, forwarder: RelayForwarder, track: Track) -> None:
        codec = track.codec
        self.send(
            peer,
            _control(
                ANNOUNCE,
                {
                    "id": forwarder.relay_id,
                    "stream": forwarder.stream_name,
                    "kind": forwarder.kind,
                    "rid": forwarder.rid,
                    "ssrc": track.ssrc,
                    "ext_ids": track.ext_ids,
                    "codec": {
                        "payload_type": codec.payload_type,
                        "name": codec.name,
                        "clock_rate": codec.clock_rate,
                        "channels": codec.channels,
                        "fmtp": codec.fmtp,
                        "rtcp_fb": codec.rtcp_fb,
                    },
                },
            ),
        )
        self._send_info(peer, forwarder, track)

    def _send_info(self, peer: int, forwarder: RelayForwarder, track: Track) -> None:
        last_sr = track.reception.last_sr
        self.send(
            peer,
            _control(
                INFO,
                {"id": forwarder.relay_id, "sr": list(last_sr) if last_sr else None,
                 "bitrate": track.bitrate, "fps": track.frame_rate},
            ),
        )  # fmt: skip

    # -- the hot path ---------------------------------------------------------------------------

    def send_packet(
        self, forwarder: RelayForwarder, packet: RtpPacket, keyframe: bool, now: float
    ) -> None:
        message = _RTP_HEADER.pack(RTP, keyframe, forwarder.relay_id, now) + bytes(packet)
        send = self.send
        for peer in forwarder.targets:
            send(peer, message)
        self.packets_out += 1

    def _on_rtp(self, sender: int, message: bytes) -> None:
        if len(message) < _RTP_HEADER.size + 12:
            return
        _, flags, relay_id, arrival = _RTP_HEADER.unpack_from(message)
        source = self._incoming.get((sender, relay_id))
        if source is None:
            return
        if source.forwarder.source is not source:  # replaced meanwhile
            self._incoming.pop((sender, relay_id), None)
            return
        data = message[_RTP_HEADER.size :]
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        self.packets_in += 1
        source.on_relayed(packet, bool(flags & 1), arrival, len(data))

    # -- messages -------------------------------------------------------------------------------

    def on_message(self, sender: int, message: bytes) -> None:
        kind = message[:1]
        if kind == RTP:
            self._on_rtp(sender, message)
            return
        try:
            body = json.loads(message[1:])
        except ValueError:
            log.warning("relay: a malformed %r message from worker %d", kind, sender)
            return
        if kind == SUBSCRIBE:
            self._on_subscribe(sender, str(body["stream"]), bool(body["on"]))
        elif kind == PUBLISHER:
            name = str(body["stream"])
            if body["on"]:
                self.publishers[name] = sender
            elif self.publishers.get(name) == sender:
                del self.publishers[name]
        elif kind == ANNOUNCE:
            self._on_announce(sender, body)
        elif kind == GONE:
            source = self._incoming.pop((sender, int(body["id"])), None)
            if source is not None and source.forwarder.source is source:
                source.forwarder.detach_source(source)
        elif kind == KEYFRAME:
            forwarder = self._outgoing.get(int(body["id"]))
            if forwarder is not None and forwarder.source is not None:
                forwarder.source.request_keyframe()
        elif kind == INFO:
            source = self._incoming.get((sender, int(body["id"])))
            if source is not None:
                sr = body.get("sr")
                if sr:
                    ntp, rtp, local = int(sr[0]), int(sr[1]), float(sr[2])
                    report = RtcpSenderReport(source.ssrc, ntp, rtp, 0, 0)
                    source.reception.on_sender_report(report, local)
                source.bitrate = float(body.get("bitrate") or 0.0)
                source.frame_rate = float(body.get("fps") or 0.0)

    def _on_subscribe(self, sender: int, name: str, on: bool) -> None:
        peers = self.subscribers.setdefault(name, set())
        (peers.add if on else peers.discard)(sender)
        if not peers:
            del self.subscribers[name]
        stream = self.server.streams.get(name)
        if stream is None:
            return
        for forwarder in self._relaying(stream):
            source = forwarder.source
            assert source is not None
            before = forwarder.targets
            forwarder.targets = tuple(sorted(peers))
            if on and sender not in before:
                self._announce(sender, forwarder, source)
                self._send_gop(sender, forwarder)

    def _relaying(self, stream: Stream) -> list[RelayForwarder]:
        """The stream's Forwarders (simulcast layers included) whose source is a local
        publisher's Track."""
        out: list[RelayForwarder] = []
        every = [f for root in stream.forwarders.values() for f in (root, *root.layers.values())]
        for forwarder in every:
            if (
                isinstance(forwarder, RelayForwarder)
                and forwarder.source is not None
                and not isinstance(forwarder.source, RelaySource)
                and forwarder.relay_id
            ):
                out.append(forwarder)
        return out

    def _send_gop(self, peer: int, forwarder: RelayForwarder) -> None:
        """The packets since the last keyframe, so the new worker's viewers start at once."""
        now = time.monotonic()
        for position, packet in enumerate(forwarder.gop):
            message = _RTP_HEADER.pack(RTP, position == 0, forwarder.relay_id, now)
            self.send(peer, message + bytes(packet))

    def _on_announce(self, sender: int, body: dict[str, Any]) -> None:
        stream = self.server.streams.get(str(body["stream"]))
        kind = str(body["kind"])
        if stream is None or kind not in stream.forwarders:
            return
        forwarder = stream.forwarders[kind]
        rid = body.get("rid")
        if rid is not None:  # a simulcast layer: its Forwarder here (made on first use)
            forwarder = forwarder.layer(str(rid))
        current = forwarder.source
        if current is not None and not isinstance(current, RelaySource):
            log.warning(
                "relay: %r%s has a publisher here and on worker %d; keeping ours",
                stream.name,
                "" if rid is None else f" (layer {rid})",
                sender,
            )
            return
        c = body["codec"]
        codec = Codec(
            payload_type=int(c["payload_type"]),
            name=str(c["name"]),
            clock_rate=int(c["clock_rate"]),
            channels=None if c["channels"] is None else int(c["channels"]),
            fmtp={str(k): str(v) for k, v in c["fmtp"].items()},
            rtcp_fb=[str(x) for x in c["rtcp_fb"]],
        )
        source = RelaySource(
            self,
            sender,
            int(body["id"]),
            kind=kind,
            codec=codec,
            ssrc=int(body["ssrc"]),
            ext_ids={str(k): int(v) for k, v in body["ext_ids"].items()},
            forwarder=forwarder,
            keyframe_interval=self.server.config.keyframe_interval,
            counters=stream.counters,
            rid=None if rid is None else str(rid),
        )
        self._incoming[(sender, source.relay_id)] = source
        forwarder.attach_source(source)

    # -- peers ----------------------------------------------------------------------------------

    def peer_up(self, peer: int) -> None:
        """Our link to ``peer`` (re)connected: tell it what we watch and publish."""
        for name in sorted(self._subscribed):
            self.send(peer, _control(SUBSCRIBE, {"stream": name, "on": True}))
        for name in sorted(self._publishing):
            self.send(peer, _control(PUBLISHER, {"stream": name, "on": True}))

    def peer_down(self, peer: int) -> None:
        """``peer`` went away (died or stopped): forget its viewers, publishers and sources."""
        for name in [n for n, peers in self.subscribers.items() if peer in peers]:
            self._on_subscribe(peer, name, False)
        for name in [n for n, p in self.publishers.items() if p == peer]:
            del self.publishers[name]
        for key in [k for k in self._incoming if k[0] == peer]:
            source = self._incoming.pop(key)
            if source.forwarder.source is source:
                source.forwarder.detach_source(source)

    def tick(self, now: float) -> None:
        """Once a second: sender-report mapping and bitrate (the NACK answer budgets follow
        it) to the subscribed workers."""
        for forwarder in list(self._outgoing.values()):
            source = forwarder.source
            if source is None:
                continue
            for peer in forwarder.targets:
                self._send_info(peer, forwarder, source)

    def stats(self) -> dict[str, int]:
        return {
            "relay_packets_out": self.packets_out,
            "relay_packets_in": self.packets_in,
            "relayed_sources_in": len(self._incoming),
            "relayed_sources_out": len(self._outgoing),
        }
