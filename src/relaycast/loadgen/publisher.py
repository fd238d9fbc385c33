"""Synthetic WHIP publisher: sends a pre-encoded clip (see :mod:`media_clip`) in real time.

Each frame's packets leave at the frame's capture time (video every 1/fps s, Opus every 20 ms),
the clip loops with RTP sequence numbers and timestamps still increasing (RFC 3550 §5.1). Every
original transmission is logged as (crc32 of payload, payload length, kind, keyframe-start flag,
send time on CLOCK_REALTIME) so viewers' arrivals can be matched to it. The publisher answers
the server's NACKs from a small history (RFC 4585 §6.2.1) and sends sender reports every second
(RFC 3550 §6.4.1). A PLI/FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1) is honoured like a live encoder
would (at most every 500 ms): the clip jumps to its next keyframe. The requests are counted, so a
server that relies on them for fast start instead of its keyframe cache shows up in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import struct
import time
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from relaycast.loadgen.client_transport import (
    H264_PT,
    OPUS_PT,
    VP8_PT,
    ClientTransport,
    build_offer,
    parse_answer,
)
from relaycast.loadgen.media_clip import AUDIO_CLOCK, AUDIO_FRAME_SAMPLES, VIDEO_CLOCK, MediaClip
from relaycast.net.dtls import DtlsCertificate
from relaycast.rtp.rtcp import (
    RtcpFir,
    RtcpNack,
    RtcpPli,
    RtcpSenderReport,
    ntp_now,
    parse_compound,
)

_RTP_HEADER = struct.Struct("!BBHII")
KIND_VIDEO = 0
KIND_AUDIO = 1
_HISTORY = 4096


@dataclass
class SendLog:
    """Original transmissions, one entry per RTP packet (retransmissions are not logged)."""

    crc: array[int] = field(default_factory=lambda: array("I"))
    length: array[int] = field(default_factory=lambda: array("H"))
    kind: array[int] = field(default_factory=lambda: array("B"))
    key: array[int] = field(default_factory=lambda: array("B"))
    t_ns: array[int] = field(default_factory=lambda: array("q"))

    def save(self, path: str) -> None:
        import numpy as np

        np.savez(
            path,
            crc=np.frombuffer(self.crc, dtype=np.uint32),
            length=np.frombuffer(self.length, dtype=np.uint16),
            kind=np.frombuffer(self.kind, dtype=np.uint8),
            key=np.frombuffer(self.key, dtype=np.uint8),
            t_ns=np.frombuffer(self.t_ns, dtype=np.int64),
        )


@dataclass
class _Stream:
    kind: int
    pt: int
    ssrc: int
    clock: int
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    ts_base: int = field(default_factory=lambda: secrets.randbits(32))
    packets: int = 0
    octets: int = 0
    last_ts: int = 0
    last_ns: int = 0


class SyntheticPublisher:
    """One WHIP session sending ``clip`` until :meth:`stop`."""

    def __init__(self, clip: MediaClip, base_url: str, stream: str, key: str) -> None:
        self.clip = clip
        self.base_url = base_url.rstrip("/")
        self.stream = stream
        self.key = key
        self.certificate = DtlsCertificate()
        self.transport = ClientTransport(
            self.certificate, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp
        )
        vpt = VP8_PT if clip.codec == "vp8" else H264_PT
        self.video = _Stream(KIND_VIDEO, vpt, secrets.randbits(32), VIDEO_CLOCK)
        self.audio = _Stream(KIND_AUDIO, OPUS_PT, secrets.randbits(32), AUDIO_CLOCK)
        self.log = SendLog()
        self.location: str | None = None
        self.history: list[bytes | None] = [None] * _HISTORY
        self.nacks = 0
        self.resent = 0
        self.plis = 0
        self.keyframes_sent_on_request = 0
        self.late_frames = 0
        self.started_ns = 0
        self.stopped_ns = 0
        self._stop = asyncio.Event()
        self._skip_to_keyframe = False
        self._last_key_request = 0
        keys = [i for i, f in enumerate(clip.video) if f.keyframe]
        self._gop = keys[1] - keys[0] if len(keys) > 1 else len(clip.video)
        self._video_crc = [[zlib.crc32(p) for p in f.payloads] for f in clip.video]
        self._audio_crc = [zlib.crc32(f.payloads[0]) for f in clip.audio]

    async def connect(self, http: aiohttp.ClientSession, timeout: float = 10.0) -> None:
        """WHIP POST (RFC 9725 §4.2), then ICE + DTLS."""
        t = self.transport
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.certificate.fingerprint,
            local=t.local,
            direction="sendonly",
            video_codec=self.clip.codec,
            ssrcs={"video": self.video.ssrc, "audio": self.audio.ssrc},
        )
        async with http.post(
            f"{self.base_url}/whip/{self.stream}",
            data=offer,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.key}"},
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHIP POST answered {resp.status}: {answer[:300]}")
            self.location = resp.headers.get("Location")
        t.start(parse_answer(answer))
        await t.wait_connected(timeout)

    async def run(self) -> None:
        """Send until :meth:`stop`; frames are sent at their capture time."""
        clip = self.clip
        loop = asyncio.get_running_loop()
        sr_task = loop.create_task(self._sender_reports())
        frame_ns = 1_000_000_000 // clip.fps
        audio_ns = 20_000_000
        t0 = time.monotonic_ns() + 20_000_000  # pacing clock
        self.started_ns = time.time_ns() + 20_000_000  # log clock (CLOCK_REALTIME)
        vi = ai = clip_pos = 0
        nv, na = len(clip.video), len(clip.audio)
        try:
            while not self._stop.is_set():
                v_due = t0 + vi * frame_ns
                a_due = t0 + ai * audio_ns
                due = min(v_due, a_due)
                now = time.monotonic_ns()
                if due > now:
                    try:
                        await asyncio.wait_for(self._stop.wait(), (due - now) / 1e9)
                        break
                    except TimeoutError:
                        pass
                elif now - due > 3 * frame_ns:
                    # descheduled (a busy load core): slip the clock instead of bursting the
                    # backlog, as a live encoder would
                    self.late_frames += 1
                    t0 += now - due
                    continue
                if v_due <= a_due:
                    if self._skip_to_keyframe:
                        self._skip_to_keyframe = False
                        pos = clip_pos % nv
                        if not clip.video[pos].keyframe:
                            clip_pos += self._gop - pos % self._gop
                    frame = clip.video[clip_pos % nv]
                    ts = vi * (VIDEO_CLOCK // clip.fps)
                    self._send_frame(
                        self.video,
                        frame.payloads,
                        self._video_crc[clip_pos % nv],
                        ts,
                        frame.keyframe,
                    )
                    vi += 1
                    clip_pos += 1
                else:
                    frame = clip.audio[ai % na]
                    self._send_frame(
                        self.audio,
                        frame.payloads,
                        [self._audio_crc[ai % na]],
                        ai * AUDIO_FRAME_SAMPLES,
                        False,
                    )
                    ai += 1
        finally:
            sr_task.cancel()
            self.stopped_ns = time.time_ns()

    def _send_frame(
        self, s: _Stream, payloads: list[bytes], crcs: list[int], ts: int, keyframe: bool
    ) -> None:
        srtp = self.transport.srtp
        if srtp is None:
            return
        last = len(payloads) - 1
        rtp_ts = (s.ts_base + ts) & 0xFFFFFFFF
        log = self.log
        send = self.transport.send
        for i, payload in enumerate(payloads):
            marker = 0x80 if (i == last and s.kind == KIND_VIDEO) else 0
            seq = s.seq
            s.seq = (seq + 1) & 0xFFFF
            plain = _RTP_HEADER.pack(0x80, marker | s.pt, seq, rtp_ts, s.ssrc) + payload
            if s.kind == KIND_VIDEO:
                self.history[seq % _HISTORY] = plain
            send(srtp.protect(plain))
            now = time.time_ns()
            log.crc.append(crcs[i])
            log.length.append(len(payload))
            log.kind.append(s.kind)
            log.key.append(1 if (keyframe and i == 0) else 0)
            log.t_ns.append(now)
            s.packets += 1
            s.octets += len(payload)
        s.last_ts = rtp_ts
        s.last_ns = time.monotonic_ns()

    async def _sender_reports(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            parts = []
            for s in (self.video, self.audio):
                if not s.packets:
                    continue
                elapsed = (time.monotonic_ns() - s.last_ns) * s.clock // 1_000_000_000
                parts.append(
                    bytes(
                        RtcpSenderReport(
                            s.ssrc,
                            ntp_now(),
                            (s.last_ts + elapsed) & 0xFFFFFFFF,
                            s.packets,
                            s.octets,
                        )
                    )
                )
            if parts:
                self.transport.send_rtcp(b"".join(parts))

    def _on_rtp(self, plain: bytes, arrival_ns: int) -> None:
        pass  # a sendonly publisher receives no media

    def _on_rtcp(self, plain: bytes) -> None:
        try:
            packets = parse_compound(plain)
        except ValueError:
            return
        for p in packets:
            if isinstance(p, RtcpNack) and p.media_ssrc == self.video.ssrc:
                self.nacks += 1
                for seq in p.lost:
                    pkt = self.history[seq % _HISTORY]
                    if pkt is not None and struct.unpack_from("!H", pkt, 2)[0] == seq:
                        self.transport.send_rtp(pkt)
                        self.resent += 1
            elif isinstance(p, (RtcpPli, RtcpFir)):
                # like a live encoder: the next frame is a keyframe (at most every 500 ms);
                # the clip jumps to its next GOP start
                self.plis += 1
                now = time.monotonic_ns()
                if now - self._last_key_request > 500_000_000:
                    self._last_key_request = now
                    self._skip_to_keyframe = True
                    self.keyframes_sent_on_request += 1

    def stop(self) -> None:
        self._stop.set()

    async def close(self, http: aiohttp.ClientSession | None) -> None:
        if http is not None and self.location:
            try:
                headers = {"Authorization": f"Bearer {self.key}"}  # WHIP DELETE needs the key
                async with http.delete(self._url(self.location), headers=headers):
                    pass
            except aiohttp.ClientError:
                pass
        self.transport.close()

    def _url(self, location: str) -> str:
        if location.startswith("http"):
            return location
        return self.base_url + location

    def summary(self) -> dict[str, Any]:
        span = max(1, self.stopped_ns - self.started_ns) / 1e9
        octets = self.video.octets + self.audio.octets
        return {
            "video_packets": self.video.packets,
            "audio_packets": self.audio.packets,
            "payload_mbps": octets * 8 / span / 1e6,
            "nacks_received": self.nacks,
            "packets_resent": self.resent,
            "keyframe_requests": self.plis,
            "keyframes_on_request": self.keyframes_sent_on_request,
            "late_frames": self.late_frames,
            "send_errors": self.transport.send_errors,
            "auth_failures": self.transport.auth_failures,
            "started_ns": self.started_ns,
            "stopped_ns": self.stopped_ns,
        }


@dataclass(frozen=True)
class PublisherConfig:
    base_url: str
    stream: str
    key: str
    clip_args: dict[str, Any]
    log_path: str
    cpus: tuple[int, ...] | None = None


def publisher_process(cfg: PublisherConfig, conn: Any) -> None:
    """Entry point of the publisher process: ``conn`` gets ("ready", info) once media flows,
    then "stop" ends it and ("done", summary) comes back after the send log is saved."""
    if cfg.cpus:
        os.sched_setaffinity(0, set(cfg.cpus))
    # The publisher is the measurement's clock and uses ~3 % of a core: a modest real-time
    # priority keeps its frames on time on a busy load core (falls back to nice when denied).
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(5))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-5)
    asyncio.run(_publisher_main(cfg, conn))


async def _publisher_main(cfg: PublisherConfig, conn: Any) -> None:
    from relaycast.loadgen.media_clip import load_clip

    loop = asyncio.get_running_loop()
    clip = load_clip(**cfg.clip_args)
    pub = SyntheticPublisher(clip, cfg.base_url, cfg.stream, cfg.key)
    stop_requested = asyncio.Event()

    def on_command() -> None:
        try:
            msg = conn.recv()
        except EOFError:
            msg = "stop"
        if msg == "stop":
            stop_requested.set()
            pub.stop()

    loop.add_reader(conn.fileno(), on_command)
    async with aiohttp.ClientSession() as http:
        try:
            await pub.connect(http)
        except Exception as exc:
            conn.send(("error", f"publisher could not connect: {exc}"))
            pub.transport.close()
            return
        runner = loop.create_task(pub.run())
        conn.send(("ready", {"video_bitrate": clip.video_bitrate}))
        await stop_requested.wait()
        await runner
        loop.remove_reader(conn.fileno())
        pub.log.save(cfg.log_path)
        await pub.close(http)
    conn.send(("done", pub.summary()))
