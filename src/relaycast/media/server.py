"""The media plane: one UDP socket, the streams, the sessions and the timers that drive RTCP."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable, Callable

from relaycast import native
from relaycast.config import Config
from relaycast.media.forwarder import Forwarder
from relaycast.media.layers import layer_snapshot, video_frame_size
from relaycast.media.publisher import Publisher
from relaycast.media.recording import Recorder
from relaycast.media.session import Session
from relaycast.media.stats import (
    DurationHistogram,
    ServerCounters,
    ServerSnapshot,
    StreamSnapshot,
)
from relaycast.media.stream import Stream
from relaycast.media.subscriber import Subscriber
from relaycast.net.addresses import candidate_addresses
from relaycast.net.dtls import DtlsCertificate
from relaycast.net.ice_lite import IceLite
from relaycast.net.ice_tcp import IceTcpListener, open_ice_tcp
from relaycast.net.udp_mux import UdpMux, is_tcp, open_udp_mux
from relaycast.sdp import (
    LocalTransport,
    SessionDescription,
    build_answer,
    negotiate_play,
    negotiate_publish,
)

log = logging.getLogger(__name__)

FAST_TICK = 0.02  # NACK, keyframe-request and transport-cc timer (s)
SLOW_TICK = 1.0  # reports, consent and statistics timer (s)
TRIM_INTERVAL = 10.0  # at most this often, give freed heap back to the OS after sessions end (s)


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None elsewhere.

    Each session's OpenSSL and libsrtp state is C heap; after thousands of viewers come and go,
    glibc keeps the freed pages, so RSS stays at its high-water mark (docs/benchmarks.md,
    soak). Trimming gives them back; it takes a few milliseconds, so it runs on the slow tick at
    most every TRIM_INTERVAL, and only when sessions ended since the last time.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def fanout_paths(stream: Stream) -> dict[str, int]:
    """How many DownTracks of ``stream`` (every kind and layer) the native kernel sends for,
    and how many take the Python path."""
    native = python = 0
    pending = list(stream.forwarders.values())
    while pending:
        forwarder = pending.pop()
        pending.extend(forwarder.layers.values())
        for downtrack in forwarder.downtracks:
            if downtrack.native is not None:
                native += 1
            else:
                python += 1
    return {"native": native, "python": python}


class StreamBusy(Exception):
    """Another publisher is live on this stream (WHIP answers 409)."""


class MediaServer:
    """Owns everything on the media side; built by ``create_app``, no module-level state."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.certificate = DtlsCertificate()
        self.counters = ServerCounters()
        self.ice = IceLite(self.counters)
        self._mux: UdpMux | None = None
        self.udp_port = config.udp_port
        #: ICE-TCP on the media port number (config.ice_tcp), None when off or not possible
        self.ice_tcp: IceTcpListener | None = None
        self.candidates: list[str] = []
        self.streams: dict[str, Stream] = {}
        self.sessions: dict[str, Session] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.on_tick: list[Callable[[float], None]] = []
        #: called on the fast (20 ms) timer, and with each new publisher (relaycast.cluster)
        self.on_fast_tick: list[Callable[[float], None]] = []
        self.on_publish: list[Callable[[Publisher], None]] = []
        self._trim = _malloc_trim()
        self._trimmed = (0.0, 0)  # when, and sessions_closed then
        self.first_keyframe = DurationHistogram()  # WHEP POST -> first keyframe to the viewer
        self.handshake = DurationHistogram()  # session created -> DTLS connected
        self.recorder = Recorder(config) if config.record_dir else None
        # -- set by a worker (relaycast/workers) before start; single process: as is --------
        #: first characters of every session id (the worker's index)
        self.session_prefix = ""
        #: the media ports are shared with other workers (SO_REUSEPORT, no exclusivity probe);
        #: every validated peer address then gets a connected socket (UdpMux.pin_addresses)
        self.shared_ports = False
        #: makes a Stream's Forwarders, ``(stream name, kind) -> Forwarder`` (the relay's)
        self.forwarder_factory: Callable[[str, str], Forwarder] | None = None
        #: called with a stream's name when a session of it is made or forgotten
        self.stream_listeners: list[Callable[[str], None]] = []

    @property
    def mux(self) -> UdpMux:
        if self._mux is None:
            raise RuntimeError("media server not started")
        return self._mux

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._mux = await open_udp_mux(
            self.config.media_bind_host(),
            self.config.udp_port,
            self.ice.on_stun,
            self.counters,
            shared=self.shared_ports,
        )
        self.ice.mux = self._mux
        assert self._mux.sock is not None
        self.udp_port = self._mux.sock.getsockname()[1]
        self.candidates = candidate_addresses(self.config)
        if self.config.ice_tcp:
            await self._start_ice_tcp()
        log.info("fan-out path: %s", native.describe())
        if self.recorder is not None:
            self.recorder.start(asyncio.get_running_loop())
            self.on_tick.append(self.recorder.tick)
        self._tasks = [
            asyncio.create_task(self._every(FAST_TICK, self._fast_tick)),
            asyncio.create_task(self._every(SLOW_TICK, self._slow_tick)),
        ]

    async def _start_ice_tcp(self) -> None:
        """Listen for ICE-TCP on the media port number. A port another program holds on TCP
        costs the candidates, not the server (8443 is a common HTTPS port)."""
        config = self.config
        try:
            self.ice_tcp = await open_ice_tcp(
                config.media_bind_host(),
                self.udp_port,
                self.mux,
                self.ice,
                per_ip=2 * config.max_sessions_per_ip,
                total=config.max_sessions,
                reuse_port=self.shared_ports,
            )
        except OSError as exc:
            log.warning("no ICE-TCP: tcp/%d cannot be bound (%s)", self.udp_port, exc)
            return
        log.info("ICE-TCP on tcp/%d", self.udp_port)

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.close("server shutting down")
        if self.ice_tcp is not None:
            self.ice_tcp.close()
            self.ice_tcp = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.recorder is not None:  # finish the files (trailers, sidecars) off the loop
            await asyncio.to_thread(self.recorder.close)
        if self._mux is not None:
            self._mux.close()
            self._mux = None

    async def _every(
        self, interval: float, tick: Callable[[float], Awaitable[None] | None]
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                tick(time.monotonic())
            except Exception:  # a timer must never die
                log.exception("media timer failed")

    def _fast_tick(self, now: float) -> None:
        for stream in list(self.streams.values()):
            if stream.publisher is not None:
                stream.publisher.poll_feedback(now)
        for callback in self.on_fast_tick:
            callback(now)

    def _slow_tick(self, now: float) -> None:
        timeout = self.config.consent_timeout
        deadline = self.config.handshake_timeout
        for session in list(self.sessions.values()):
            if session.connected_at is None and now - session.created > deadline:
                self.counters.handshake_timeouts += 1
                session.close(f"ICE+DTLS not done within {deadline:g} s")
            elif session.transport.consent_expired(now, timeout):
                self.counters.consent_timeouts += 1
                session.close(f"consent expired (no STUN for {timeout:.0f} s)")
            elif isinstance(session, (Publisher, Subscriber)):
                session.send_reports(now)
        for callback in self.on_tick:
            callback(now)
        self._release_memory(now)

    def _release_memory(self, now: float) -> None:
        """Give freed C heap back to the OS when sessions ended (see _malloc_trim)."""
        closed = self.counters.sessions_closed
        last, closed_then = self._trimmed
        if self._trim is None or closed == closed_then or now - last < TRIM_INTERVAL:
            return
        self._trimmed = (now, closed)
        self._trim()

    # -- sessions -------------------------------------------------------------------------------

    def local_transport(self, session: Session) -> LocalTransport:
        return LocalTransport(
            ufrag=session.transport.local_ufrag,
            pwd=session.transport.local_pwd,
            fingerprint=self.certificate.fingerprint,
            candidates=[(ip, self.udp_port) for ip in self.candidates],
            ice_tcp=self.ice_tcp is not None,
        )

    def _stream(self, name: str) -> Stream:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(name, self.forwarder_factory)
        return stream

    def publish(self, name: str, offer: SessionDescription) -> Publisher:
        """WHIP: negotiate (NegotiationError), refuse a second live publisher (StreamBusy)."""
        negotiated = negotiate_publish(offer)
        current = self.streams[name].publisher if name in self.streams else None
        if current is not None:
            if current.is_active(time.monotonic()):
                raise StreamBusy(name)
            current.close("replaced by a new publisher")  # may drop an empty Stream
        stream = self._stream(name)
        publisher = Publisher(self, stream, negotiated)
        publisher.answer = build_answer(offer, negotiated, self.local_transport(publisher))
        stream.publisher = publisher
        self.sessions[publisher.id] = publisher
        if self.recorder is not None:
            self.recorder.attach(name, publisher)
        self.counters.sessions_created += 1
        log.info("publisher %s on %r", publisher.id[:6], name)
        for callback in self.on_publish:
            callback(publisher)
        self._stream_changed(name)
        return publisher

    def play(self, name: str, offer: SessionDescription) -> Subscriber:
        """WHEP: answer with the live codec, or every codec we forward when not live yet."""
        stream = self.streams.get(name)
        source = stream.source_codecs() if stream else None
        negotiated = negotiate_play(offer, source)
        stream = self._stream(name)
        subscriber = Subscriber(self, stream, negotiated)
        subscriber.answer = build_answer(
            offer, negotiated, self.local_transport(subscriber), send=subscriber.send_ssrcs
        )
        stream.subscribers.add(subscriber)
        self.sessions[subscriber.id] = subscriber
        self.counters.sessions_created += 1
        self._stream_changed(name)
        return subscriber

    def _stream_changed(self, name: str) -> None:
        for listener in self.stream_listeners:
            try:
                listener(name)
            except Exception:  # a listener must not break signalling
                log.exception("stream listener failed")

    def egress_bytes(self) -> int:
        """UDP bytes sent: media, retransmissions, RTCP, STUN and DTLS."""
        live = 0
        for session in self.sessions.values():
            sink = session.transport.sink
            if sink is not None and not is_tcp(sink.addr):  # ICE-TCP: tcp_bytes_out
                live += sink.bytes
        return self.counters.udp_bytes_out + live

    def snapshot(self) -> ServerSnapshot:
        """Everything the HTTP layer shows, copied out of the media plane (design.md)."""
        streams: list[StreamSnapshot] = []
        for stream in self.streams.values():
            publisher = stream.publisher
            codecs = stream.source_codecs() or {}
            live_for = None
            if publisher is not None and publisher.connected_at is not None:
                live_for = time.monotonic() - publisher.connected_at
            elif stream.pull is not None and stream.pull.connected_at is not None:
                live_for = time.monotonic() - stream.pull.connected_at
            connected = sum(1 for s in stream.subscribers if s.connected_at is not None)
            counters = stream.counters.as_dict()
            for subscriber in stream.subscribers:  # media the live sinks sent (MediaSink.fold)
                sink = subscriber.transport.sink
                if sink is not None:
                    counters["egress_packets"] += sink.packets
                    counters["egress_bytes"] += sink.bytes
            streams.append(
                StreamSnapshot(
                    name=stream.name,
                    live=stream.live,
                    viewers=connected,
                    viewers_connecting=len(stream.subscribers) - connected,
                    video_codec=codecs["video"].name if "video" in codecs else None,
                    audio_codec=codecs["audio"].name if "audio" in codecs else None,
                    live_for=live_for,
                    counters=counters,
                    frame_size=video_frame_size(stream.forwarders["video"])
                    if stream.live
                    else None,
                    **layer_snapshot(stream, time.monotonic()),
                    fanout_paths=fanout_paths(stream),
                )
            )
        publishers = sum(1 for s in self.sessions.values() if s.role == "publisher")
        return ServerSnapshot(
            sessions=len(self.sessions),
            publishers=publishers,
            subscribers=len(self.sessions) - publishers,
            counters={**self.counters.as_dict(), "udp_bytes_out": self.egress_bytes()},
            streams=streams,
            histograms={
                "time_to_first_keyframe": self.first_keyframe.snapshot(),
                "handshake": self.handshake.snapshot(),
            },
        )

    def find(self, session_id: str, role: str, stream: str) -> Session | None:
        session = self.sessions.get(session_id)
        if session is None or session.role != role or session.stream.name != stream:
            return None
        return session

    def release(self, stream: Stream) -> None:
        """Drop ``stream`` if nothing uses it any more (after its pull ended)."""
        if stream.empty and self.streams.get(stream.name) is stream:
            del self.streams[stream.name]

    def forget(self, session: Session) -> None:
        """Called once by a closing session (the end of the close cascade)."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.counters.sessions_closed += 1
        stream = session.stream
        if stream.empty and self.streams.get(stream.name) is stream:
            del self.streams[stream.name]
        self._stream_changed(stream.name)
