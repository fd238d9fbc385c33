"""Cost of relaycast's fan-out path, per packet per viewer.

The path measured is the production one, built from the real classes:
``Forwarder.forward()`` -> ``DownTrack.send()`` (SSRC / payload type / sequence / timestamp /
header-extension rewrite) -> ``SrtpContext.protect`` (libsrtp,
AEAD_AES_128_GCM or AES_CM_128_HMAC_SHA1_80) -> the media socket's ``sendto(2)`` to a
socket bound on 127.0.0.1.

Three modes split the cost of the Python path: ``full`` (everything), ``no-send`` (the
DownTrack's sendto drops the datagram: rewrite + SRTP) and ``rewrite`` (no SRTP and no send:
Forwarder + DownTrack only). ``native`` is ``full`` through the native kernel
(relaycast/native: rewrite + libsrtp + sendmmsg in C, one call per packet for all viewers; the
first packet of each run, the keyframe that makes a viewer LIVE, still goes through Python);
``native-no-send`` is the same without the ``sendmmsg`` (rewrite + SRTP in C).
``probe`` (opt-in, needs gcc and libcrypto) compiles and runs relaycast/loadgen/limit_probe.c
(relaycast.loadgen.probe, which ``relaycast bench --ramp`` uses too), a raw limit with no
relaycast code and no bookkeeping: a 12-byte header rewrite, the payload copy, AES-128-GCM with
OpenSSL's EVP API and ``sendmmsg`` of up to 64 datagrams, per viewer; the table then shows
native/probe, how far the kernel is from that floor.
Nothing is subtracted; each number is the wall time of
the whole loop divided by packets x viewers, the median of several repeats.

    python bench/fanout.py --viewers 1,10,50,200,500 --packets 2000 --profile gcm
    python bench/fanout.py --viewers 1,50,200,500 --modes full,native,probe --repeats 3

The last line printed is ``fanout_us_per_packet_per_viewer=<µs>`` (200 viewers, or the largest
count run; the ``native`` column when it was measured and the kernel is enabled, else ``full``)
for scripts (never the probe's).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, cast

from relaycast import native
from relaycast.loadgen.probe import PROBE_SOURCE, build_probe, run_probe
from relaycast.media.downtrack import DownTrack, ExtLayout
from relaycast.media.forwarder import Forwarder
from relaycast.media.stats import StreamCounters
from relaycast.media.track import Track
from relaycast.net.dtls import SrtpKeys
from relaycast.net.sink import MediaSink
from relaycast.net.srtp import SrtpContext
from relaycast.net.udp_mux import Address, UdpMux
from relaycast.rtp.codecs import is_keyframe_start
from relaycast.rtp.packet import RtpPacket, build_extensions
from relaycast.sdp import Codec
from relaycast.sdp.negotiate import (
    URI_ABS_SEND_TIME,
    URI_SDES_MID,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
)

PROFILES = {"gcm": "SRTP_AEAD_AES_128_GCM", "cm": "SRTP_AES128_CM_SHA1_80"}
KEY_SALT = {"gcm": (16, 12), "cm": (16, 14)}
MODES = ("full", "no-send", "rewrite")  # the default: the Python path, split
# when asked for (--modes full,native,probe)
ALL_MODES = (*MODES, "native", "native-no-send", "probe")

VIDEO_BPS = 2_500_000
AUDIO_BPS = 64_000
FPS = 30
PAYLOAD_MIN, PAYLOAD_MAX = 1100, 1200
KEYFRAME_EVERY = 60  # frames (2 s)
OPUS_PAYLOAD = AUDIO_BPS // 8 // 50  # 20 ms frames: 160 bytes, 50 packets per second
PROBE_PAYLOAD = (PAYLOAD_MIN + PAYLOAD_MAX) // 2  # the probe sends one size, the mean

# The publisher's extension ids (as Chrome offers them) and a viewer's negotiated layout.
SOURCE_EXT_IDS = {URI_SDES_MID: 4, URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3}
VIEWER_LAYOUT = ExtLayout(((4, URI_SDES_MID, b"1"), (13, URI_VIDEO_ORIENTATION, None)))
VP8 = Codec(96, "VP8", 90000, rtcp_fb=["nack", "nack pli", "ccm fir", "goog-remb"])


# -- packets -------------------------------------------------------------------------------------


def vp8_payload(size: int, picture_id: int, first: bool, keyframe: bool) -> bytes:
    """RFC 7741 §4.2 descriptor (X, I with a 15-bit PictureID) + random frame bytes; on the
    first packet of a frame the §4.3 payload header's P bit says key (0) or inter (1) frame."""
    descriptor = bytes((0x90 if first else 0x80, 0x80)) + struct.pack("!H", 0x8000 | picture_id)
    body = bytearray(secrets.token_bytes(size - len(descriptor)))
    if first:
        body[0] = (body[0] & 0xFE) | (0 if keyframe else 1)
    return descriptor + bytes(body)


def make_video_packets(
    count: int, first_seq: int, first_frame: int, ssrc: int
) -> tuple[list[RtpPacket], int]:
    """``count`` VP8 packets of a 2.5 Mbps / 30 fps stream, parsed from the wire as on ingress.

    Frames are split into 1100-1200-byte payloads; the first frame is a keyframe (so is every
    ``KEYFRAME_EVERY``-th); every packet carries mid, abs-send-time and transport-cc.
    Returns the packets and the number of the next frame.
    """
    frame_bytes = VIDEO_BPS // 8 // FPS
    packets: list[RtpPacket] = []
    frame = first_frame
    seq = first_seq
    twcc = first_seq
    while len(packets) < count:
        keyframe = (frame - first_frame) % KEYFRAME_EVERY == 0
        left = frame_bytes
        first = True
        timestamp = (frame * (90000 // FPS)) & 0xFFFFFFFF
        while left > 0 and len(packets) < count:
            size = min(left, PAYLOAD_MIN + secrets.randbelow(PAYLOAD_MAX - PAYLOAD_MIN + 1))
            size = max(size, 16)
            left -= size
            send_time = int(time.monotonic() * (1 << 18)) & 0xFFFFFF
            profile, block = build_extensions(
                [
                    (SOURCE_EXT_IDS[URI_SDES_MID], b"1"),
                    (SOURCE_EXT_IDS[URI_ABS_SEND_TIME], send_time.to_bytes(3, "big")),
                    (SOURCE_EXT_IDS[URI_TRANSPORT_CC], struct.pack("!H", twcc & 0xFFFF)),
                ]
            )
            wire = (
                struct.pack(
                    "!BBHII",
                    0x90,
                    (0x80 if left <= 0 else 0) | VP8.payload_type,
                    seq & 0xFFFF,
                    timestamp,
                    ssrc,
                )
                + struct.pack("!HH", profile, len(block) // 4)
                + block
                + vp8_payload(size, frame & 0x7FFF, first, keyframe)
            )
            packets.append(RtpPacket.parse(wire))
            first = False
            seq += 1
            twcc += 1
        frame += 1
    return packets, frame


def packets_per_second(avg_video_payload: float) -> tuple[float, float]:
    """(video, audio) packets per second at 2.5 Mbps VP8 and 64 kbps Opus (20 ms)."""
    return VIDEO_BPS / 8 / avg_video_payload, AUDIO_BPS / 8 / OPUS_PAYLOAD


# -- the rig -------------------------------------------------------------------------------------


def _discard(data: bytes) -> None:
    pass


def _null_sendto(data: bytes, addr: Address) -> int:
    return len(data)


def _sink(srtp: SrtpContext, addr: Address, mux: UdpMux, mode: str) -> MediaSink:
    """The sink the transport binds at DTLS time, minus the SRTP or the send per mode."""
    assert mux.sock is not None
    return MediaSink(
        protect=_identity if mode == "rewrite" else srtp.protect,
        protect_rtcp=srtp.protect_rtcp,
        sendto=mux.sock.sendto if mode in ("full", "native", "native-no-send") else _null_sendto,
        addr=addr,
        stream=StreamCounters(),
        server=mux.counters,
        srtp=srtp,
    )


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class Viewer:
    downtrack: DownTrack
    srtp: SrtpContext
    keys: SrtpKeys  # local_key is what the viewer would unprotect with
    addr: Address


@dataclass
class Rig:
    """One publisher video Track, its Forwarder and ``len(viewers)`` viewers."""

    forwarder: Forwarder
    track: Track
    mux: UdpMux
    viewers: list[Viewer]
    next_seq: int = 1
    next_frame: int = 0
    mode: str = field(default="full")

    def set_mode(self, mode: str) -> None:
        self.forwarder.set_native(False)
        for viewer in self.viewers:
            sink = _sink(viewer.srtp, viewer.addr, self.mux, mode)
            viewer.downtrack.sink, viewer.downtrack._send_rtp = sink, sink.send_rtp
        self.forwarder.set_native(mode.startswith("native"))
        if self.forwarder.native is not None:
            self.forwarder.native._group.set_dry_run(mode == "native-no-send")
        self.mode = mode

    def packets(self, count: int) -> list[RtpPacket]:
        """The next ``count`` source packets, starting on a keyframe."""
        packets, self.next_frame = make_video_packets(
            count, self.next_seq, self.next_frame, self.track.ssrc
        )
        self.next_seq += count
        return packets

    def restart(self) -> None:
        """Every DownTrack waits for the next keyframe again (as after a publisher reconnect),
        so each run starts fresh; our outgoing sequence numbers still continue."""
        for viewer in self.viewers:
            viewer.downtrack.source_lost()
            viewer.downtrack.source_changed(self.track)

    def run(self, packets: Sequence[RtpPacket]) -> tuple[int, int]:
        """Forward every packet (the first a keyframe); returns elapsed (wall, CPU) ns.

        Wall time (``perf_counter_ns``) is the measure; the CPU time of this thread
        (``thread_time_ns``) shows how much of it was spent descheduled on a busy machine.
        """
        self.restart()
        forward = self.forwarder.forward
        # as Track.on_packet decides it (ingress itself is not part of the fan-out cost)
        flags = [is_keyframe_start("vp8", p.payload) for p in packets]
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            cpu = time.thread_time_ns()
            start = time.perf_counter_ns()
            for packet, keyframe in zip(packets, flags, strict=True):
                forward(packet, keyframe, 0.0)
            wall = time.perf_counter_ns() - start
            return wall, time.thread_time_ns() - cpu
        finally:
            if gc_was_enabled:
                gc.enable()


def build_rig(
    viewers: int,
    profile: str,
    receiver_addrs: Sequence[Address],
) -> Rig:
    """The real objects wired as the server wires them (Subscriber, the transport's
    MediaSink), with random SRTP keys instead of a DTLS handshake and viewer addresses
    ``receiver_addrs`` (round-robin)."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    forwarder = Forwarder("video", use_native=False)  # set_mode switches it
    track = Track(
        kind="video",
        codec=VP8,
        ssrc=secrets.randbits(32) | 1,
        sender_ssrc=1,
        rtcp_fb=list(VP8.rtcp_fb),
        ext_ids=dict(SOURCE_EXT_IDS),
        forwarder=forwarder,
        send_rtcp=_discard,
        keyframe_interval=1.0,
    )
    forwarder.attach_source(track)

    def no_stun(data: bytes, addr: Address) -> None:
        pass

    mux = UdpMux(no_stun)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    with contextlib.suppress(OSError):  # capped by the kernel, not fatal
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    mux.sock = sock  # as open_udp_mux does: the fan-out calls sock.sendto directly
    key_len, salt_len = KEY_SALT[profile]
    rig_viewers: list[Viewer] = []
    for index in range(viewers):
        downtrack = DownTrack(
            kind="video",
            forwarder=forwarder,
            ssrc=secrets.randbits(32) | 1,
            rtx_ssrc=secrets.randbits(32) | 1,
            payload_types={"vp8": 96},
            rtx_payload_types={96: 97},
            clock_rate=90000,
            layout=VIEWER_LAYOUT,
            cname=secrets.token_hex(8),
        )
        keys = SrtpKeys(
            PROFILES[profile],
            local_key=secrets.token_bytes(key_len + salt_len),
            remote_key=secrets.token_bytes(key_len + salt_len),
        )
        srtp = SrtpContext(keys)
        addr = receiver_addrs[index % len(receiver_addrs)]
        downtrack.source_changed(track)
        downtrack.connect(_sink(srtp, addr, mux, "full"))  # as Subscriber.on_connected does
        rig_viewers.append(Viewer(downtrack, srtp, keys, addr))
    return Rig(forwarder, track, mux, rig_viewers)


# -- receivers -----------------------------------------------------------------------------------


def bind_receivers(count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _drain(socks: list[socket.socket], stop: EventType) -> None:
    import selectors

    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in selector.select(0.1):
            sock = cast(socket.socket, key.fileobj)
            try:
                while True:
                    sock.recv(2048)
            except BlockingIOError:
                pass


def udp_rcvbuf_errors() -> int | None:
    """The kernel's UDP RcvbufErrors counter (Linux), to report receiver-side drops."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    except OSError:
        return None
    rows = [row for row in lines if row and row[0] == "Udp:"]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return None
    return int(rows[1][rows[0].index("RcvbufErrors")])


# -- measurement ---------------------------------------------------------------------------------


@dataclass
class Result:
    viewers: int
    packets: int
    us: dict[str, float]  # mode -> median wall µs per packet per viewer
    cpu_us: dict[str, float]  # mode -> median CPU µs per packet per viewer
    runs: dict[str, list[float]]
    sent: int
    send_errors: int
    viewers_per_core: float  # from the wall-time 'full' median


def viewers_per_core(us_per_packet_per_viewer: float) -> float:
    """Viewers one core can serve at 2.5 Mbps video + 64 kbps audio, fan-out cost only."""
    video_pps, audio_pps = packets_per_second((PAYLOAD_MIN + PAYLOAD_MAX) / 2)
    return 1e6 / (us_per_packet_per_viewer * (video_pps + audio_pps))


def measure(
    rig: Rig,
    packets: int,
    repeats: int,
    modes: Sequence[str] = MODES,
    on_run: Callable[[str, float], None] | None = None,
) -> Result:
    """Median µs per packet per viewer of each mode over ``repeats`` runs after a warm-up;
    the modes take turns so that a load change on a shared machine hits them alike."""
    viewers = len(rig.viewers)
    runs: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu_runs: dict[str, list[float]] = {mode: [] for mode in modes}
    errors_before = rig.mux.counters.send_errors
    sent_before = sum(v.downtrack.packets_sent for v in rig.viewers)
    expected = 0
    warm_up = min(packets, 200)
    for mode in modes:
        rig.set_mode(mode)
        rig.run(rig.packets(warm_up))  # caches, libsrtp's per-SSRC streams
        expected += warm_up * viewers
    for _ in range(repeats):
        for mode in modes:
            rig.set_mode(mode)
            batch = rig.packets(packets)
            wall, cpu = rig.run(batch)
            expected += len(batch) * viewers
            value = wall / 1000 / (len(batch) * viewers)
            runs[mode].append(value)
            cpu_runs[mode].append(cpu / 1000 / (len(batch) * viewers))
            if on_run:
                on_run(mode, value)
    sent = sum(v.downtrack.packets_sent for v in rig.viewers) - sent_before
    if sent != expected:
        raise RuntimeError(f"DownTracks sent {sent} packets, expected {expected}")
    medians = {mode: statistics.median(values) for mode, values in runs.items()}
    reference = medians.get("full", next(iter(medians.values())))
    return Result(
        viewers=viewers,
        packets=packets,
        us=medians,
        cpu_us={mode: statistics.median(values) for mode, values in cpu_runs.items()},
        runs=runs,
        sent=sent,
        send_errors=rig.mux.counters.send_errors - errors_before,
        viewers_per_core=viewers_per_core(reference),
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--viewers", default="1,10,50,200,500", help="comma-separated counts")
    parser.add_argument("--packets", type=int, default=2000, help="source packets per run")
    parser.add_argument(
        "--max-sends",
        type=int,
        default=150_000,
        help="cap packets x viewers per run (fewer packets for large counts)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gcm")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(ALL_MODES)}")
    parser.add_argument("--receivers", type=int, default=64, help="receiving sockets (max)")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="read the receivers in another process (default: the kernel drops when full)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(c) for c in args.viewers.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not counts or any(c < 1 for c in counts) or any(m not in ALL_MODES for m in modes):
        print("--viewers needs positive counts, --modes a subset of " + ",".join(ALL_MODES))
        return 2
    if any(m.startswith("native") for m in modes) and not native.available():
        print(f"the native kernel is not built: {native.describe()}")
        return 2
    if "probe" in modes and all(m == "probe" for m in modes):
        print("probe is a reference for the other modes: e.g. --modes full,native,probe")
        return 2
    probe_dir = None
    probe = None
    if "probe" in modes:
        probe_dir = tempfile.TemporaryDirectory(prefix="relaycast-probe-")
        probe, why = build_probe(Path(probe_dir.name))
        if probe is None:
            print(f"probe skipped: cannot build {PROBE_SOURCE.name} ({why})")
            modes.remove("probe")
    rig_modes = [m for m in modes if m != "probe"]
    ratio = "native" in modes and probe is not None
    receivers = bind_receivers(max(1, min(args.receivers, max(counts))))
    addrs: list[Address] = [s.getsockname()[:2] for s in receivers]
    stop = multiprocessing.Event()
    drainer = None
    if args.drain:
        drainer = multiprocessing.Process(target=_drain, args=(receivers, stop), daemon=True)
        drainer.start()
    info = machine()
    print(
        f"relaycast fan-out benchmark: {info['cpu']} ({info['cpus']} cpus), Python "
        f"{info['python']}, SRTP {PROFILES[args.profile]}, {len(receivers)} receiving "
        f"socket(s){', drained' if args.drain else ''}"
    )
    video_pps, audio_pps = packets_per_second((PAYLOAD_MIN + PAYLOAD_MAX) / 2)
    print(
        f"stream: VP8 {VIDEO_BPS / 1e6:g} Mbps ({video_pps:.0f} pkt/s, {PAYLOAD_MIN}-"
        f"{PAYLOAD_MAX} B payloads) + Opus {AUDIO_BPS // 1000} kbps ({audio_pps:.0f} pkt/s)"
    )
    print(
        "µs per packet per viewer, median of "
        f"{args.repeats}; viewers/core from the 'full' column at {video_pps + audio_pps:.0f} "
        "pkt/s (fan-out only: no ingress, RTCP or event loop)"
    )
    if hasattr(os, "getloadavg"):
        print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    header = f"{'viewers':>8} {'packets':>8}" + "".join(f" {m:>9}" for m in modes)
    if ratio:
        header += f" {'native/probe':>12}"
    header += f" {'srtp':>6} {'sendto':>6} {'viewers/core':>12} {'send errs':>9}"
    header += "  | CPU time:" + "".join(f" {m:>8}" for m in modes)
    print(header)
    results: list[Result] = []
    drops_before = udp_rcvbuf_errors()
    try:
        for count in counts:
            rig = build_rig(count, args.profile, addrs)
            packets = max(50, min(args.packets, args.max_sends // count))
            result = measure(rig, packets, args.repeats, rig_modes)
            if probe is not None:
                wall, cpu, runs = run_probe(
                    probe, count, packets, args.repeats, len(receivers), PROBE_PAYLOAD
                )
                result.us["probe"], result.cpu_us["probe"], result.runs["probe"] = wall, cpu, runs
            results.append(result)
            row = f"{count:>8} {packets:>8}" + "".join(f" {result.us[m]:>9.2f}" for m in modes)
            if ratio:
                row += f" {result.us['native'] / result.us['probe']:>11.2f}x"
            srtp = result.us.get("no-send", 0) - result.us.get("rewrite", 0)
            send = result.us.get("full", 0) - result.us.get("no-send", 0)
            row += f" {srtp:>6.2f} {send:>6.2f} {result.viewers_per_core:>12.0f}"
            row += f" {result.send_errors:>9}  |          "
            row += "".join(f" {result.cpu_us[m]:>8.2f}" for m in modes)
            print(row, flush=True)
            if rig.mux.sock is not None:
                rig.mux.sock.close()
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(2)
            if drainer.is_alive():
                drainer.terminate()
        for sock in receivers:
            sock.close()
        if probe_dir is not None:
            probe_dir.cleanup()
    drops_after = udp_rcvbuf_errors()
    drops = None if drops_before is None or drops_after is None else drops_after - drops_before
    print(
        "(srtp = no-send - rewrite, sendto = full - no-send: differences of wall medians; "
        "CPU time = this thread's CPU, lower than wall when the machine is shared)"
    )
    if probe is not None:
        print(
            "(probe = relaycast/loadgen/limit_probe.c, a separate process after each count's runs: "
            "header rewrite + copy + AES-128-GCM (OpenSSL EVP) + sendmmsg, no relaycast code, no "
            "bookkeeping)"
        )
    if drops is not None:
        print(f"receiver-side kernel drops (UDP RcvbufErrors, whole host): {drops}")
    headline = next((r for r in results if r.viewers == 200), results[-1])
    path = "native" if native.enabled() and "native" in headline.us else "full"
    value = headline.us.get(path, next(iter(headline.us.values())))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "profile": PROFILES[args.profile],
                    "repeats": args.repeats,
                    "drain": args.drain,
                    "receivers": len(receivers),
                    "video_pps": video_pps,
                    "audio_pps": audio_pps,
                    "kernel_rcvbuf_drops": drops,
                    "results": [r.__dict__ for r in results],
                    "fanout_us_per_packet_per_viewer": value,
                },
                indent=2,
            )
        )
    print(f"fanout_us_per_packet_per_viewer={value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
