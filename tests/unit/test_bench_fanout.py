"""Smoke test of bench/fanout.py: it measures something and what it sends is valid SRTP."""

from __future__ import annotations

import json
import re
import socket
import struct
from itertools import pairwise
from pathlib import Path

import pytest
from bench import fanout
from pylibsrtp import Policy, Session

from relaycast.rtp.packet import RtpPacket

_SRTP_PROFILES = {
    "gcm": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "cm": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}


def _drain(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(4096))
        except BlockingIOError:
            return datagrams


@pytest.mark.parametrize("profile", ["gcm", "cm"])
def test_fanout_measures_and_sends_decryptable_srtp(profile: str) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    rx.setblocking(False)
    rig = fanout.build_rig(3, profile, [rx.getsockname()])
    try:
        result = fanout.measure(rig, packets=20, repeats=1)
        assert set(result.us) == set(fanout.MODES)
        assert all(value > 0 for value in result.us.values())
        assert result.send_errors == 0
        assert result.viewers_per_core > 0
        _drain(rx)

        rig.set_mode("full")
        batch = rig.packets(12)
        assert fanout.is_keyframe_start("vp8", batch[0].payload)
        rig.run(batch)
        datagrams = _drain(rx)
        assert len(datagrams) == len(batch) * 3
        assert rig.mux.counters.send_errors == 0

        sessions = {
            v.downtrack.ssrc: Session(
                policy=Policy(
                    key=v.keys.local_key,
                    ssrc_type=Policy.SSRC_ANY_INBOUND,
                    srtp_profile=_SRTP_PROFILES[profile],
                )
            )
            for v in rig.viewers
        }
        received: dict[int, list[RtpPacket]] = {ssrc: [] for ssrc in sessions}
        for datagram in datagrams:
            (ssrc,) = struct.unpack_from("!I", datagram, 8)  # the SRTP header is in clear
            plain = RtpPacket.parse(sessions[ssrc].unprotect(datagram))
            assert plain.ssrc == ssrc
            received[ssrc].append(plain)
        for packets in received.values():
            assert [p.payload for p in packets] == [p.payload for p in batch]
            assert [p.marker for p in packets] == [p.marker for p in batch]
            assert {p.payload_type for p in packets} == {96}
            steps = [(b.sequence_number - a.sequence_number) & 0xFFFF for a, b in pairwise(packets)]
            assert steps == [1] * (len(packets) - 1)
            assert [p.timestamp - packets[0].timestamp for p in packets] == [
                p.timestamp - batch[0].timestamp for p in batch
            ]
            # the viewer's layout: its own mid id and value, no publisher-only extensions
            assert all(p.extensions == [(4, b"1")] for p in packets)
    finally:
        rx.close()
        if rig.mux.sock is not None:
            rig.mux.sock.close()


def test_fanout_cli_last_line_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fanout.json"
    code = fanout.main(
        [
            "--viewers",
            "1,2",
            "--packets",
            "30",
            "--repeats",
            "1",
            "--receivers",
            "1",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"fanout_us_per_packet_per_viewer=(\d+\.\d+)", lines[-1])
    assert match is not None, lines[-1]
    data = json.loads(out.read_text())
    assert [r["viewers"] for r in data["results"]] == [1, 2]
    assert data["fanout_us_per_packet_per_viewer"] == pytest.approx(float(match.group(1)), abs=1e-3)
    assert data["fanout_us_per_packet_per_viewer"] == data["results"][-1]["us"]["full"]
