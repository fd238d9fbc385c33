"""Where a session's media goes, and who can move it (RFC 8445 §7.3, RFC 8489 §14.5).

The transports are real (IceLite, UdpMux on a loopback socket, PeerTransport, DtlsEndpoint);
datagrams are handed to the entry points as the socket would, from chosen source addresses.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator

import pytest

from relaycast.media.stats import StreamCounters
from relaycast.net import stun
from relaycast.net.dtls import DtlsCertificate, valid_dtls_records
from relaycast.net.ice_lite import IceLite
from relaycast.net.transport import PeerTransport
from relaycast.net.udp_mux import Address, UdpMux, open_udp_mux

PEER: Address = ("127.0.0.1", 40001)
OTHER: Address = ("127.0.0.1", 40002)
VICTIM: Address = ("127.0.0.9", 5004)


@pytest.fixture
async def mux() -> AsyncIterator[tuple[UdpMux, IceLite]]:
    ice = IceLite()
    mux = await open_udp_mux("127.0.0.1", 0, ice.on_stun, ice.counters)
    ice.mux = mux
    yield mux, ice
    mux.close()


def transport(mux: UdpMux, ice: IceLite) -> PeerTransport:
    return PeerTransport(
        mux=mux,
        ice=ice,
        certificate=DtlsCertificate(),
        remote_fingerprints=[],
        dtls_client=False,
        counters=StreamCounters(),
        on_rtp=lambda data, arrival: None,
        on_rtcp=lambda data: None,
        on_connected=lambda sink: None,
        on_closed=lambda reason: None,
    )


def binding(peer: PeerTransport, *, nominate: bool, tid: bytes | None = None) -> bytes:
    request = stun.StunMessage(
        stun.BINDING,
        stun.REQUEST,
        tid or os.urandom(12),
        [
            (stun.USERNAME, f"{peer.local_ufrag}:them".encode()),
            (stun.PRIORITY, struct.pack("!I", 1)),
            *([(stun.USE_CANDIDATE, b"")] if nominate else []),
        ],
    )
    return request.encode(peer.local_pwd.encode())


def append_use_candidate(data: bytes) -> bytes:
    """Append USE-CANDIDATE after MESSAGE-INTEGRITY/FINGERPRINT, fixing the length field."""
    body = data[20:] + struct.pack("!HH", stun.USE_CANDIDATE, 0)
    return data[:2] + struct.pack("!H", len(body)) + data[4:20] + body


async def test_a_nomination_appended_after_message_integrity_moves_nothing(
    mux: tuple[UdpMux, IceLite],
) -> None:
    udp, ice = mux
    peer = transport(udp, ice)
    ice.on_stun(binding(peer, nominate=True), PEER)
    assert peer.addr == PEER
    plain = binding(peer, nominate=False)
    ice.on_stun(plain, OTHER)  # validates OTHER, no nomination
    assert peer.addr == PEER
    tampered = append_use_candidate(binding(peer, nominate=False))
    assert stun.check_integrity(tampered, peer.local_pwd.encode())  # MI ignores what follows
    ice.on_stun(tampered, OTHER)
    assert peer.addr == PEER, "USE-CANDIDATE outside MESSAGE-INTEGRITY moved the media"


async def test_a_replayed_nomination_from_elsewhere_is_refused(
    mux: tuple[UdpMux, IceLite],
) -> None:
    udp, ice = mux
    peer = transport(udp, ice)
    ice.on_stun(binding(peer, nominate=True), PEER)
    captured = binding(peer, nominate=True)
    ice.on_stun(captured, PEER)  # the real one
    ice.on_stun(captured, VICTIM)  # the same bytes, replayed from a forged source
    assert peer.addr == PEER
    assert VICTIM not in udp.by_address
    assert udp.counters.stun_replayed == 1
    ice.on_stun(captured, PEER)  # a retransmission from the same address: still answered
    assert udp.counters.stun_replayed == 1
    fresh = binding(peer, nominate=True)  # a new nomination from the peer does move it
    ice.on_stun(fresh, OTHER)
    assert peer.addr == OTHER


async def test_an_address_another_live_session_holds_is_not_taken_over(
    mux: tuple[UdpMux, IceLite],
) -> None:
    udp, ice = mux
    owner, intruder = transport(udp, ice), transport(udp, ice)
    ice.on_stun(binding(owner, nominate=True), PEER)
    ice.on_stun(binding(intruder, nominate=True), PEER)
    assert udp.by_address[PEER] is owner and intruder.addr is None
    assert udp.counters.stun_address_conflicts == 1
    owner.close()
    ice.on_stun(binding(intruder, nominate=True), PEER)  # free once the owner is gone
    assert udp.by_address[PEER] is intruder


async def test_a_silent_sessions_address_goes_to_the_new_session_and_ends_the_old(
    mux: tuple[UdpMux, IceLite],
) -> None:
    """A NAT gave a vanished peer's port to a new client: after 2 s of silence it may have it."""
    udp, ice = mux
    old, new = transport(udp, ice), transport(udp, ice)
    ice.on_stun(binding(old, nominate=True), PEER)
    old.last_heard_us -= 3_000_000  # silent for 3 s
    ice.on_stun(binding(new, nominate=True), PEER)
    assert udp.by_address[PEER] is new and new.addr == PEER
    assert old.closed and "taken over" in old.close_reason


async def test_a_session_validates_a_bounded_number_of_addresses(
    mux: tuple[UdpMux, IceLite],
) -> None:
    udp, ice = mux
    peer = transport(udp, ice)
    for port in range(41000, 41050):
        ice.on_stun(binding(peer, nominate=False), ("127.0.0.1", port))
    assert len(peer.validated) == 8
    assert sum(1 for t in udp.by_address.values() if t is peer) == 8


async def test_dtls_garbage_before_the_handshake_neither_moves_media_nor_kills_it(
    mux: tuple[UdpMux, IceLite],
) -> None:
    udp, ice = mux
    closed: list[str] = []
    peer = transport(udp, ice)
    peer._on_closed = closed.append
    ice.on_stun(binding(peer, nominate=True), PEER)
    ice.on_stun(binding(peer, nominate=False), OTHER)
    udp.datagram_received(b"\x16\xfe\xfd" + b"\x00" * 10, OTHER, 0)  # truncated record
    hello = bytes([1]) + (40).to_bytes(3, "big") + b"\x00\x00" + (0).to_bytes(3, "big")
    hello += (40).to_bytes(3, "big") + os.urandom(40)  # a ClientHello of random bytes
    record = bytes([22, 0xFE, 0xFF, 0, 0]) + bytes(6) + len(hello).to_bytes(2, "big") + hello
    udp.datagram_received(record, OTHER, 0)
    assert peer.addr == PEER
    assert not peer.closed and closed == []
    assert udp.counters.dtls_bad_records == 1
    assert peer.dtls.resets == 1


@pytest.mark.parametrize(
    ("data", "valid"),
    [
        (b"", False),
        (b"\x16\xfe\xfd" + bytes(8) + b"\x00\x00", False),  # empty record
        (b"\x16\xfe\xfd" + bytes(8) + b"\x00\x10" + bytes(4), False),  # runs past the end
        (b"\x18\xfe\xfd" + bytes(8) + b"\x00\x01\x00", False),  # heartbeat: not ours
        (b"\x17\xfe\xfd" + bytes(8) + b"\x00\x01\x00", True),  # application data
        (b"\x15\xfe\xfd" + b"\x00\x01" + bytes(6) + b"\x00\x02\x01\x00", True),  # an alert
        (b"\x16\xfe\xff" + bytes(8) + b"\x00\x0c" + b"\x63" + bytes(11), False),  # bad msg type
    ],
)
def test_dtls_record_framing(data: bytes, valid: bool) -> None:
    assert valid_dtls_records(data) is valid
