"""Coverage-guided fuzzing of relaycast's datagram entry point (atheris / libFuzzer).

An in-process MediaServer with live sessions: a publisher and a viewer fully connected over real
loopback sockets with the load generator's ClientTransport (ICE, DTLS, SRTP), a viewer that
passed ICE but is still waiting for DTLS, and addresses nobody validated. Each input becomes one
datagram fed to ``UdpMux.datagram_received`` from one of those addresses, inside the running
event loop. Inputs are decoded structure-aware (atheris' FuzzedDataProvider):

* raw bytes;
* a real captured datagram (STUN check, DTLS flight, SRTP, SRTCP) mutated a little;
* a STUN message built from fuzzed attributes, signed with the session's real ICE password
  (so the code after the integrity check is reached), with attributes after the integrity;
* fuzzed plaintext RTCP protected with the viewer's or the publisher's real SRTCP keys;
* fuzzed plaintext RTP protected with the publisher's real SRTP keys (fresh sequence numbers).

A crash is any exception escaping the entry point, raised in a callback it scheduled (the loop's
exception handler) or logged at ERROR with a traceback by relaycast (e.g. "media timer
failed"). Crashes are counted, deduplicated by exception type and innermost relaycast frame,
saved with a reproducer (``--crash-dir``) and fuzzing goes on (``--stop-on-crash`` stops at the
first). Sessions that an input legitimately closed are rebuilt, and counted.

    python bench/fuzz_udp.py -runs=50000 [-seed=1] [--stats-json=out.json] [--crash-dir=DIR]
    python bench/fuzz_udp.py --seconds=600            # a time budget, with the same summary
    python bench/fuzz_udp.py --replay=CRASH_FILE      # re-run one saved reproducer

Other libFuzzer flags (-max_len, -max_total_time, corpus directories) pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["relaycast"]):
    from relaycast.config import Config
    from relaycast.loadgen.client_transport import ClientTransport, build_offer, parse_answer
    from relaycast.loadgen.media_clip import load_clip
    from relaycast.media.server import MediaServer
    from relaycast.net import stun
    from relaycast.net.dtls import DtlsCertificate
    from relaycast.net.srtp import SrtpError
    from relaycast.sdp import parse_sdp

STREAM = "live"
_RTP = struct.Struct("!BBHII")


#: how ``Harness.decode`` builds a datagram, by the input's first choice
MODES = [
    "raw",
    "mutated-capture",
    "signed-stun",
    "srtcp-viewer",
    "srtcp-publisher",
    "srtp-publisher",
    "srtp-publisher",
]


class Crash(Exception):
    """An exception the server raised or logged while handling a fuzz input."""


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("relaycast") and record.exc_info:
            self.records.append(record)


class Harness:
    """The server, its sessions and the captured datagrams; rebuilt pieces are counted."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.loop_errors.append(ctx))
        self.errors = _ErrorLog()
        logging.getLogger("relaycast").addHandler(self.errors)
        logging.getLogger("relaycast").setLevel(logging.ERROR)
        self.rebuilt = {"publisher": 0, "viewer": 0, "connecting": 0}
        self.templates: dict[str, list[bytes]] = {"stun": [], "dtls": [], "srtp": [], "srtcp": []}
        self.cert = DtlsCertificate()
        self.clip = load_clip("vp8", 300_000, width=320, height=240, keyframe_interval=1.0)
        self.video_ssrc = 0x11111111  # fixed, so saved plaintexts replay as they were
        self.audio_ssrc = 0x22222222
        self.last: dict[str, Any] = {"mode": -1, "plain": b""}
        self.history: list[dict[str, Any]] = []  # the last inputs, for a crash's reproducer
        self.seq = {self.video_ssrc: 1000, self.audio_ssrc: 5000}
        self.frame = 0
        self.received = 0
        self.with_arrival = False
        self.loop.run_until_complete(self._start())

    # -- setup ------------------------------------------------------------------------------------

    async def _start(self) -> None:
        config = Config(
            host="127.0.0.1",
            port=0,
            udp_port=0,
            public_ips=("127.0.0.1",),
            host_candidates=False,
            stream_keys={STREAM: "fuzz"},
        )
        self.server = MediaServer(config)
        await self.server.start()
        params = inspect.signature(self.server.mux.datagram_received).parameters
        self.with_arrival = len(params) >= 3
        self.media = ("127.0.0.1", self.server.udp_port)
        await self._connect_publisher()
        await self._connect_viewer()
        self._connecting_viewer()
        self.unvalidated = ("127.0.0.5", 40001)

    def _capturing(self, transport: ClientTransport) -> None:
        raw = transport.send

        def send(data: bytes) -> None:
            first = data[0] if data else 255
            kind = "stun" if first < 4 else "dtls" if 19 < first < 64 else None
            if kind is None and 127 < first < 192:
                kind = "srtcp" if len(data) > 1 and 191 < data[1] < 224 else "srtp"
            if kind is not None and len(self.templates[kind]) < 64:
                self.templates[kind].append(bytes(data))
            raw(data)

        transport.send = send  # type: ignore[method-assign]

    async def _connect_publisher(self) -> None:
        t = ClientTransport(self.cert, on_rtp=lambda *_: None)
        self._capturing(t)
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.cert.fingerprint,
            local=t.local,
            direction="sendonly",
            video_codec="vp8",
            ssrcs={"video": self.video_ssrc, "audio": self.audio_ssrc},
        )
        self.publisher = self.server.publish(STREAM, parse_sdp(offer))
        t.start(parse_answer(self.publisher.answer))
        await t.wait_connected(10)
        self.pub = t
        for _ in range(40):  # a keyframe and some frames: the forwarder has a source and a cache
            self.send_media(4)
            await asyncio.sleep(0.005)

    async def _connect_viewer(self) -> None:
        def on_rtp(_plain: bytes, _t: int) -> None:
            self.received += 1

        t = ClientTransport(self.cert, on_rtp=on_rtp, on_rtcp=lambda _p: None)
        self._capturing(t)
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.cert.fingerprint,
            local=t.local,
            direction="recvonly",
            video_codec="vp8",
        )
        self.viewer = self.server.play(STREAM, parse_sdp(offer))
        t.start(parse_answer(self.viewer.answer))
        await t.wait_connected(10)
        self.view = t
        t.send_rtcp(
            struct.pack("!BBHI", 0x81, 205, 3, 1) + struct.pack("!II", 2, 0x00010000)
        )  # a NACK, captured as a template

    def _connecting_viewer(self) -> None:
        """A viewer session whose address passed ICE, no DTLS yet (fake peer address)."""
        t = ClientTransport(self.cert, on_rtp=lambda *_: None)
        offer = build_offer(
            ufrag=t.local_ufrag,
            pwd=t.local_pwd,
            fingerprint=self.cert.fingerprint,
            local=("127.0.0.4", 40000),
            direction="recvonly",
            video_codec="vp8",
        )
        t.sock.close()
        self.connecting = self.server.play(STREAM, parse_sdp(offer))
        self.connecting_remote = t.local_ufrag
        self.connecting_addr = ("127.0.0.4", 40000)
        self.entry(self.check_for(self.connecting, self.connecting_remote), self.connecting_addr)

    def check_for(self, session: Any, remote_ufrag: str, nominate: bool = False) -> bytes:
        tr = session.transport
        attrs = [
            (stun.USERNAME, f"{tr.local_ufrag}:{remote_ufrag}".encode()),
            (stun.PRIORITY, struct.pack("!I", 1853824767)),
            (stun.ICE_CONTROLLING, secrets.token_bytes(8)),
        ]
        if nominate:
            attrs.append((stun.USE_CANDIDATE, b""))
        msg = stun.StunMessage(stun.BINDING, stun.REQUEST, secrets.token_bytes(12), attrs)
        return msg.encode(tr.local_pwd.encode(), fingerprint=True)

    def moved(self) -> list[str]:
        """The connected sessions whose send address is no longer their client's socket."""
        out = []
        for name, session, client in (
            ("viewer", self.viewer, self.view),
            ("publisher", self.publisher, self.pub),
        ):
            addr = getattr(session.transport, "addr", None)
            if addr is not None and tuple(addr[:2]) != client.sock.getsockname()[:2]:
                out.append(name)
        return out

    def taken_over(self) -> list[str]:
        """Connected clients' addresses that the mux now routes to another session."""
        table = getattr(self.server.mux, "by_address", None)
        if not isinstance(table, dict):
            return []
        out = []
        for name, session, client in (
            ("viewer", self.viewer, self.view),
            ("publisher", self.publisher, self.pub),
        ):
            owner = table.get(client.sock.getsockname()[:2])
            if owner is not None and owner is not session.transport:
                out.append(name)
        return out

    def give_back(self) -> None:
        for session, client in ((self.viewer, self.view), (self.publisher, self.pub)):
            if not session.closed:
                self.server.mux.bind(client.sock.getsockname()[:2], session.transport)

    def restore(self) -> None:
        """A fresh nominating check from the real client address (what the client would send)."""
        for session, client in ((self.viewer, self.view), (self.publisher, self.pub)):
            if not session.closed:
                real = client.sock.getsockname()[:2]
                self.run(self.check_for(session, client.local_ufrag, nominate=True), real)

    # -- running --------------------------------------------------------------------------------

    def entry(self, data: bytes, addr: tuple[str, int]) -> None:
        mux = self.server.mux
        if self.with_arrival:
            mux.datagram_received(data, addr, time.time_ns() // 1000)  # type: ignore[call-arg]
        else:
            mux.datagram_received(data, addr)

    def run(self, data: bytes, addr: tuple[str, int]) -> None:
        async def one() -> None:
            self.entry(data, addr)
            await asyncio.sleep(0)

        self.history.append({**self.last, "addr": list(addr), "datagram": data})
        del self.history[:-300]
        self.loop_errors.clear()
        self.errors.records.clear()
        self.loop.run_until_complete(one())
        self._check()

    def pump(self, seconds: float) -> None:
        """Let the loop run (timers, the clients' sockets) while the publisher streams."""

        async def go() -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                self.send_media(2)
                await asyncio.sleep(0.005)

        self.loop_errors.clear()
        self.errors.records.clear()
        self.loop.run_until_complete(go())
        self._check()

    def _check(self) -> None:
        if self.loop_errors:
            ctx = self.loop_errors[0]
            exc = ctx.get("exception")
            raise Crash(f"in a loop callback: {ctx.get('message')}") from exc
        if self.errors.records:
            rec = self.errors.records[0]
            exc = rec.exc_info[1] if rec.exc_info else None
            raise Crash(f"logged: {rec.getMessage()}") from exc

    def send_media(self, packets: int) -> None:
        srtp = self.pub.srtp
        if srtp is None:
            return
        clip = self.clip
        for _ in range(packets):
            frame = clip.video[self.frame % len(clip.video)]
            self.frame += 1
            last = len(frame.payloads) - 1
            audio = clip.audio[self.frame % len(clip.audio)].payloads[0]
            plains = [
                self.rtp(self.video_ssrc, 96, p, i == last) for i, p in enumerate(frame.payloads)
            ]
            plains.append(self.rtp(self.audio_ssrc, 111, audio, 0))
            for plain in plains:
                with contextlib.suppress(SrtpError):  # the harness' own sender state
                    self.pub.send(srtp.protect(plain))

    def rtp(self, ssrc: int, pt: int, payload: bytes, marker: int) -> bytes:
        seq = self.seq.get(ssrc, 0)
        self.seq[ssrc] = (seq + 1) & 0xFFFF
        return _RTP.pack(0x80, (0x80 if marker else 0) | pt, seq, self.frame * 3000, ssrc) + payload

    def repair(self) -> None:
        """Rebuild sessions an input closed (legitimately or not), so fuzzing stays meaningful."""
        if self.connecting.closed or self.connecting.connected_at is not None:
            self.rebuilt["connecting"] += 1
            self._connecting_viewer()
        if self.publisher.closed or self.pub.srtp is None:
            self.rebuilt["publisher"] += 1
            self.pub.close()
            self.loop.run_until_complete(self._connect_publisher())
        if self.viewer.closed or self.view.srtp is None:
            self.rebuilt["viewer"] += 1
            self.view.close()
            self.loop.run_until_complete(self._connect_viewer())

    def alive(self) -> dict[str, Any]:
        """After the run: does the live stream still reach the connected viewer, and does the
        server still answer a valid check?"""
        before = self.received
        bytes_before, auth_before = self.view.bytes_in, self.view.auth_failures
        sent_before = sum(d.packets_sent for d in getattr(self.viewer, "downtracks", []))
        tr = self.publisher.transport
        rtp_before, err_before = getattr(tr, "rtp_in", 0), getattr(tr, "srtp_errors", 0)
        self.pump(1.0)
        got = self.received - before
        sent = sum(d.packets_sent for d in getattr(self.viewer, "downtracks", [])) - sent_before
        answered = []
        probe = self.view.sock.getsockname()[:2]
        self.run(self.check_for(self.viewer, self.view.local_ufrag), probe)
        answered.append(not self.viewer.closed)
        return {
            "viewer_packets_in_1s": got,
            "viewer_bytes_in_1s": self.view.bytes_in - bytes_before,
            "viewer_auth_failures_in_1s": self.view.auth_failures - auth_before,
            "server_packets_sent_to_viewer_in_1s": sent,
            "forwarder_sources": {
                kind: getattr(getattr(fw, "source", None), "ssrc", None)
                for kind, fw in self.viewer.stream.forwarders.items()
            },
            "publisher_ssrcs": [self.video_ssrc, self.audio_ssrc],
            "publisher_rtp_in_1s": getattr(tr, "rtp_in", 0) - rtp_before,
            "publisher_srtp_errors_1s": getattr(tr, "srtp_errors", 0) - err_before,
            "downtracks": [repr(vars(d))[:600] for d in getattr(self.viewer, "downtracks", [])],
            "publisher_open": not self.publisher.closed,
            "viewer_open": not self.viewer.closed,
            "send_address_moved": self.moved(),
            "address_taken_over": self.taken_over(),
            "alive": got > 20 and not self.publisher.closed and all(answered),
        }

    # -- decoding inputs ------------------------------------------------------------------------

    def addresses(self) -> list[tuple[str, int]]:
        return [
            self.pub.sock.getsockname()[:2],
            self.view.sock.getsockname()[:2],
            self.connecting_addr,
            self.unvalidated,
            ("127.0.0.1", 1),
        ]

    def decode(self, raw: bytes) -> tuple[bytes, tuple[str, int]]:
        fdp = atheris.FuzzedDataProvider(raw)
        mode = fdp.ConsumeIntInRange(0, 6)
        self.last = {"mode": mode, "plain": b""}
        addrs = self.addresses()
        addr = addrs[fdp.ConsumeIntInRange(0, len(addrs) - 1)]
        if mode == 0:
            return fdp.ConsumeBytes(fdp.remaining_bytes()), addr
        if mode == 1:
            kinds = [k for k, v in self.templates.items() if v]
            pool = self.templates[kinds[fdp.ConsumeIntInRange(0, len(kinds) - 1)]]
            data = bytearray(pool[fdp.ConsumeIntInRange(0, len(pool) - 1)])
            for _ in range(fdp.ConsumeIntInRange(0, 4)):
                op = fdp.ConsumeIntInRange(0, 3)
                if not data:
                    break
                pos = fdp.ConsumeIntInRange(0, len(data) - 1)
                if op == 0:
                    data[pos] ^= 1 << fdp.ConsumeIntInRange(0, 7)
                elif op == 1:
                    data[pos] = fdp.ConsumeIntInRange(0, 255)
                elif op == 2:
                    del data[pos:]
                else:
                    data[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
            return bytes(data), addr
        if mode == 2:
            return self._stun(fdp), addr
        if mode in (3, 4):
            client = self.view if mode == 3 else self.pub
            addr = client.sock.getsockname()[:2]
            srtp = client.srtp
            pt = fdp.PickValueInList([200, 201, 202, 203, 204, 205, 206, 207, 192, 195])
            count = fdp.ConsumeIntInRange(0, 31)
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
            length = fdp.ConsumeIntInRange(0, 400) if fdp.ConsumeBool() else (len(body) + 4) // 4
            plain = struct.pack("!BBH", 0x80 | count, pt, length & 0xFFFF) + body
            plain += fdp.ConsumeBytes(fdp.remaining_bytes())
            self.last["plain"] = plain
            if srtp is None or len(plain) < 8:
                return plain, addr
            try:
                return srtp.protect_rtcp(plain), addr
            except (SrtpError, ValueError):
                return plain, addr
        # RTP from the publisher, fresh sequence numbers, fuzzed header bits and payload
        addr = self.pub.sock.getsockname()[:2]
        ssrc = fdp.PickValueInList([self.video_ssrc, self.audio_ssrc, 0xDEADBEEF])
        pt = fdp.PickValueInList([96, 111, 97, 0, 127])
        b0 = 0x80 | (fdp.ConsumeIntInRange(0, 0x3F) if fdp.ConsumeBool() else 0)
        seq = self.seq.get(ssrc, 0)
        if fdp.ConsumeBool():  # a jump ahead (libsrtp will not protect an older index twice)
            seq = (seq + fdp.ConsumeIntInRange(0, 3000)) & 0xFFFF
        self.seq[ssrc] = (seq + 1) & 0xFFFF
        head = struct.pack("!BBHII", b0, pt | (0x80 if fdp.ConsumeBool() else 0), seq, 0, ssrc)
        plain = head + fdp.ConsumeBytes(fdp.remaining_bytes())
        self.last["plain"] = plain
        srtp = self.pub.srtp
        if srtp is None:
            return plain, addr
        try:
            return srtp.protect(plain), addr
        except (SrtpError, ValueError):
            return plain, addr

    def _stun(self, fdp: Any) -> bytes:
        sessions = [
            (self.viewer, self.view.local_ufrag),
            (self.publisher, self.pub.local_ufrag),
            (self.connecting, self.connecting_remote),
        ]
        session, remote = sessions[fdp.ConsumeIntInRange(0, 2)]
        tr = session.transport
        attrs: list[tuple[int, bytes]] = []
        if fdp.ConsumeBool():
            attrs.append((stun.USERNAME, f"{tr.local_ufrag}:{remote}".encode()))
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            kind = fdp.PickValueInList(
                [
                    stun.USERNAME,
                    stun.PRIORITY,
                    stun.USE_CANDIDATE,
                    stun.ICE_CONTROLLING,
                    stun.ICE_CONTROLLED,
                    stun.ERROR_CODE,
                    stun.XOR_MAPPED_ADDRESS,
                    stun.MESSAGE_INTEGRITY,
                    stun.FINGERPRINT,
                    fdp.ConsumeIntInRange(0, 0xFFFF),
                ]
            )
            attrs.append((kind, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))))
        method = fdp.PickValueInList([stun.BINDING, stun.BINDING, 0x003, 0xFFF])
        klass = fdp.ConsumeIntInRange(0, 3)
        msg = stun.StunMessage(method, klass, fdp.ConsumeBytes(12).ljust(12, b"\0"), attrs)
        key = tr.local_pwd.encode() if fdp.ConsumeBool() else fdp.ConsumeBytes(8)
        data = msg.encode(key, fingerprint=fdp.ConsumeBool())
        if fdp.ConsumeBool():  # attributes after MESSAGE-INTEGRITY / FINGERPRINT
            tail = struct.pack("!HH", stun.USE_CANDIDATE, 0) + fdp.ConsumeBytes(8)
            data = data[:2] + struct.pack("!H", len(data) - 20 + len(tail)) + data[4:] + tail
        return data


# -- driver ---------------------------------------------------------------------------------------


def _crash_key(exc: BaseException) -> str:
    cause: BaseException = exc.__cause__ or exc
    frames = traceback.extract_tb(cause.__traceback__)
    inner = [f for f in frames if "relaycast" in f.filename] or frames
    where = f"{Path(inner[-1].filename).name}:{inner[-1].lineno}" if inner else "?"
    return f"{type(cause).__name__} at {where}"


def main() -> int:
    own = {a.split("=", 1)[0]: a.split("=", 1)[1] if "=" in a else "" for a in sys.argv[1:]}
    stats_path = own.get("--stats-json")
    crash_dir = Path(own.get("--crash-dir") or ROOT / "bench" / "fuzz-crashes")
    stop_on_crash = "--stop-on-crash" in own
    replay = own.get("--replay")
    runs = int(own.get("-runs", "-1") or -1)
    budget = float(own.get("--seconds", "0") or 0)  # our own time limit (stats are printed)
    argv = [sys.argv[0], *(a for a in sys.argv[1:] if not a.startswith("--"))]
    for flag, default in (("-max_len", "1500"), ("-len_control", "0")):
        if not any(a.startswith(flag + "=") for a in argv):
            argv.append(f"{flag}={default}")

    harness = Harness()
    state: dict[str, Any] = {
        "inputs": 0,
        "crashes": 0,
        "redirects": 0,
        "redirect_examples": [],
        "takeovers": 0,
        "takeover_examples": [],
        "unique": {},
        "started": time.monotonic(),
    }

    def summary(final: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "inputs": state["inputs"],
            "crashes": state["crashes"],
            "unique_crashes": state["unique"],
            "seconds": round(time.monotonic() - state["started"], 1),
            "rebuilt_sessions": dict(harness.rebuilt),
            "redirects": state["redirects"],
            "redirects_by_mode": state.get("redirects_by_mode", {}),
            "redirect_examples": state["redirect_examples"],
            "takeovers": state["takeovers"],
            "takeover_examples": state["takeover_examples"],
            "entry_point": "UdpMux.datagram_received"
            + ("(data, addr, arrival_us)" if harness.with_arrival else "(data, addr)"),
        }
        if final:
            out.update(harness.alive())
        return out

    def finish() -> None:
        result = summary(final=True)
        print("fuzz_udp: " + json.dumps(result, indent=1), flush=True)
        if stats_path:
            Path(stats_path).write_text(json.dumps(result, indent=1))
        os._exit(0 if result["crashes"] == 0 and result["alive"] else 1)

    def test_one(raw: bytes) -> None:
        state["inputs"] += 1
        data, addr = harness.decode(raw)
        try:
            harness.run(data, addr)
        except Exception as exc:
            key = _crash_key(exc)
            state["crashes"] += 1
            if key not in state["unique"]:
                crash_dir.mkdir(parents=True, exist_ok=True)
                path = crash_dir / f"crash-{len(state['unique'])}.json"
                path.write_text(
                    json.dumps(
                        {
                            "key": key,
                            "addr_index": harness.addresses().index(addr)
                            if addr in harness.addresses()
                            else -1,
                            "datagram_hex": data.hex(),
                            "mode": harness.last["mode"],
                            "srtp_plaintext_hex": harness.last["plain"].hex(),
                            "input_hex": raw.hex(),
                            "last_inputs": [
                                {
                                    "mode": MODES[h["mode"]] if h["mode"] >= 0 else "setup",
                                    "addr": h["addr"],
                                    "datagram_hex": h["datagram"].hex(),
                                    "srtp_plaintext_hex": h["plain"].hex(),
                                }
                                for h in harness.history
                            ],
                            "traceback": "".join(traceback.format_exception(exc.__cause__ or exc)),
                        },
                        indent=1,
                    )
                )
                state["unique"][key] = {"first_input": state["inputs"], "file": str(path)}
                print(f"fuzz_udp: CRASH {key} -> {path}\n  datagram {data.hex()}", flush=True)
            if stop_on_crash:
                raise
        moved = harness.moved()
        if moved:
            state["redirects"] += 1
            by_mode = state.setdefault("redirects_by_mode", {})
            mode_name = MODES[harness.last["mode"]]
            by_mode[mode_name] = by_mode.get(mode_name, 0) + 1
            if len(state["redirect_examples"]) < 5:
                state["redirect_examples"].append(
                    {
                        "sessions": moved,
                        "mode": harness.last["mode"],
                        "from": list(addr),
                        "datagram_hex": data.hex()[:400],
                    }
                )
        taken = harness.taken_over()
        if taken:
            state["takeovers"] += 1
            if len(state["takeover_examples"]) < 5:
                state["takeover_examples"].append(
                    {
                        "sessions": taken,
                        "mode": harness.last["mode"],
                        "from": list(addr),
                        "datagram_hex": data.hex()[:400],
                    }
                )
        try:
            if taken:
                harness.give_back()
            if moved:
                harness.restore()
            harness.repair()
            if state["inputs"] % 500 == 0:
                harness.pump(0.01)
        except Crash as exc:
            state["crashes"] += 1
            state["unique"].setdefault(_crash_key(exc), {"first_input": state["inputs"]})
            print(f"fuzz_udp: CRASH while streaming after input {state['inputs']}: {exc}")
        if state["inputs"] == runs or (budget and time.monotonic() - state["started"] > budget):
            finish()

    if replay:
        doc = json.loads(Path(replay).read_text())
        data = bytes.fromhex(doc["datagram_hex"])
        addr = harness.addresses()[doc["addr_index"]]
        plain = bytes.fromhex(doc.get("srtp_plaintext_hex", ""))
        if doc.get("mode") in (3, 4, 5, 6) and plain:  # re-protect with this run's keys
            client = harness.view if doc["mode"] == 3 else harness.pub
            assert client.srtp is not None
            rtcp = doc["mode"] in (3, 4)
            data = client.srtp.protect_rtcp(plain) if rtcp else client.srtp.protect(plain)
        harness.run(data, addr)  # raises what it raised when found
        print("fuzz_udp: the reproducer no longer crashes")
        return 0

    import atexit

    atexit.register(lambda: state["inputs"] and finish())
    atheris.Setup(argv, test_one)
    atheris.Fuzz()
    finish()  # only reached without -runs (e.g. -max_total_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
