"""ICE over TCP (RFC 6544) on the media port: RFC 4571 framing, what a connection must send
first, its limits, and media to and from an authenticated path.

The framing tests are pure; the others run a real listener on loopback with the real IceLite,
UdpMux and PeerTransport, and talk to it with plain asyncio streams.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from relaycast.media.stats import StreamCounters
from relaycast.net import ice_tcp, stun
from relaycast.net.dtls import DtlsCertificate, SrtpKeys
from relaycast.net.ice_lite import IceLite
from relaycast.net.ice_tcp import MAX_FRAME, FrameError, FrameReader, frame, open_ice_tcp
from relaycast.net.sink import MediaSink
from relaycast.net.srtp import SrtpContext
from relaycast.net.transport import PeerTransport
from relaycast.net.udp_mux import UdpMux, is_tcp, open_udp_mux, tcp_key, wire_address

# -- RFC 4571 framing ---------------------------------------------------------------------------


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    packets = [bytes([0, i]) * (i + 1) for i in range(1, 40)]
    stream = b"".join(frame(p) for p in packets)
    for chunk in (1, 2, 3, 7, 100, len(stream)):
        reader = FrameReader()
        out: list[bytes] = []
        for pos in range(0, len(stream), chunk):
            out += reader.feed(stream[pos : pos + chunk])
        assert out == packets, chunk
        assert reader.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    data = frame(b"\x80" * 300)
    assert reader.feed(data[:1]) == []  # half a length field
    assert reader.feed(data[1:150]) == []
    assert reader.pending == 150
    assert reader.feed(data[150:] + frame(b"\x01\x02")[:1]) == [b"\x80" * 300]
    assert reader.pending == 1


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 0xFFFF])
def test_an_empty_or_oversize_length_is_refused_before_its_bytes_arrive(length: int) -> None:
    reader = FrameReader()
    with pytest.raises(FrameError):
        reader.feed(struct.pack("!H", length))
    assert FrameReader().feed(frame(b"\x00" * MAX_FRAME)) == [b"\x00" * MAX_FRAME]


def test_garbage_reads_as_an_oversize_length() -> None:
    with pytest.raises(FrameError):  # "GET / HTTP/1.1": length 0x4745
        FrameReader().feed(b"GET / HTTP/1.1\r\n\r\n")


def test_frame_refuses_what_two_bytes_cannot_say() -> None:
    assert frame(b"abc") == b"\x00\x03abc"
    with pytest.raises(ValueError):
        frame(b"")
    with pytest.raises(ValueError):
        frame(b"x" * 0x10000)


def test_tcp_paths_never_equal_a_udp_address() -> None:
    key = tcp_key(("192.0.2.1", 5000))
    assert key != ("192.0.2.1", 5000) and is_tcp(key) and not is_tcp(("192.0.2.1", 5000))
    assert wire_address(key) == ("192.0.2.1", 5000)
    assert wire_address(("::1", 7)) == ("::1", 7)


# -- a listener on loopback -------------------------------------------------------------------


@dataclass
class Plane:
    mux: UdpMux
    ice: IceLite
    listener: ice_tcp.IceTcpListener
    port: int
    sinks: list[MediaSink] = field(default_factory=list)
    rtp: list[bytes] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def transport(self) -> PeerTransport:
        return PeerTransport(
            mux=self.mux,
            ice=self.ice,
            certificate=DtlsCertificate(),
            remote_fingerprints=[],
            dtls_client=False,
            counters=StreamCounters(),
            on_rtp=lambda data, arrival: self.rtp.append(data),
            on_rtcp=lambda data: None,
            on_connected=self.sinks.append,
            on_closed=self.closed.append,
        )

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    ice = IceLite()
    for _ in range(20):  # the kernel's free UDP port may be busy on TCP (a client's port)
        mux = await open_udp_mux("127.0.0.1", 0, ice.on_stun, ice.counters)
        assert mux.sock is not None
        port = mux.sock.getsockname()[1]
        try:
            listener = await open_ice_tcp("127.0.0.1", port, mux, ice, per_ip=3, total=100)
        except OSError:
            mux.close()
            continue
        break
    ice.mux = mux
    yield Plane(mux, ice, listener, listener.port)
    listener.close()
    mux.close()


def binding(peer: PeerTransport, *, pwd: str | None = None, nominate: bool = True) -> bytes:
    request = stun.StunMessage(
        stun.BINDING,
        stun.REQUEST,
        os.urandom(12),
        [
            (stun.USERNAME, f"{peer.local_ufrag}:them".encode()),
            (stun.PRIORITY, struct.pack("!I", 1)),
            *([(stun.USE_CANDIDATE, b"")] if nominate else []),
        ],
    )
    return request.encode((pwd or peer.local_pwd).encode())


async def read_frame(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    header = await asyncio.wait_for(reader.readexactly(2), timeout)
    return await asyncio.wait_for(reader.readexactly(struct.unpack("!H", header)[0]), timeout)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:  # an abort
        return True


async def until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not callable(condition) or not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_valid_binding_validates_the_connection_and_is_answered_on_it(
    plane: Plane,
) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    answer = await read_frame(reader)
    message = stun.StunMessage.parse(answer)
    assert message.msg_class == stun.SUCCESS
    assert stun.check_integrity(answer, peer.local_pwd.encode())
    local = writer.get_extra_info("sockname")
    mapped = message.get(stun.XOR_MAPPED_ADDRESS)
    assert mapped is not None
    # the client's real TCP address, not the path's name
    assert stun.parse_xor_address(mapped, message.transaction_id) == (local[0], local[1])
    key = tcp_key((local[0], local[1]))
    assert peer.addr == key and plane.mux.by_address[key] is peer
    assert plane.mux.counters.tcp_connections == 1
    writer.close()
    # the peer went away: a session still connecting forgets the path and waits for another
    await until(lambda: key not in plane.mux.by_address)
    assert peer.addr is None and not peer.closed
    assert key not in peer.validated


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\x16\xfe\xfd" + b"\x00" * 20, id="dtls"),
        pytest.param(b"\x80\x60" + b"\x00" * 20, id="rtp"),
        pytest.param(b"\xff" * 20, id="garbage"),
    ],
)
async def test_anything_but_stun_first_closes_the_connection(plane: Plane, first: bytes) -> None:
    reader, writer = await plane.connect()
    writer.write(frame(first))
    assert await closed_by_server(reader)
    await until(lambda: plane.mux.counters.tcp_dropped == 1)
    assert not plane.listener.connections and not plane.mux.tcp_paths
    writer.close()


async def test_a_binding_with_the_wrong_password_closes_the_connection(plane: Plane) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer, pwd="x" * 24)))
    assert await closed_by_server(reader)  # no answer, no reflection
    assert plane.mux.counters.stun_rejected == 1 and plane.mux.counters.tcp_dropped == 1
    assert peer.addr is None and not plane.mux.by_address
    writer.close()


async def test_bad_framing_closes_the_connection(plane: Plane) -> None:
    reader, writer = await plane.connect()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await closed_by_server(reader)
    await until(lambda: plane.mux.counters.tcp_dropped == 1)
    writer.close()


async def test_garbage_after_authentication_closes_the_connection(plane: Plane) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    await read_frame(reader)
    writer.write(frame(b"\xff\x00\x01"))
    assert await closed_by_server(reader)
    assert plane.mux.counters.tcp_dropped == 1
    writer.close()


async def test_a_silent_connection_is_closed_at_the_deadline(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ice_tcp, "BINDING_DEADLINE", 0.2)
    reader, writer = await plane.connect()
    writer.write(b"\x00")  # half a length field: not enough to be refused, nothing valid
    assert await closed_by_server(reader, timeout=3.0)
    assert plane.mux.counters.tcp_timeouts == 1 and not plane.listener.connections
    writer.close()


async def test_an_authenticated_connection_outlives_the_deadline(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ice_tcp, "BINDING_DEADLINE", 0.2)
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    await read_frame(reader)
    await asyncio.sleep(0.5)
    writer.write(frame(binding(peer, nominate=False)))  # consent, answered on the same path
    assert stun.StunMessage.parse(await read_frame(reader)).msg_class == stun.SUCCESS
    assert plane.mux.counters.tcp_timeouts == 0
    writer.close()


async def test_connections_per_address_are_capped(plane: Plane) -> None:
    held = [await plane.connect() for _ in range(3)]  # per_ip=3
    await until(lambda: len(plane.listener.connections) == 3)
    reader, writer = await plane.connect()
    assert await closed_by_server(reader)
    assert plane.mux.counters.tcp_refused == 1
    held[0][1].close()  # a place frees up when one goes
    await until(lambda: len(plane.listener.connections) == 2)
    reader, writer2 = await plane.connect()
    await until(lambda: len(plane.listener.connections) == 3)
    assert plane.mux.counters.tcp_refused == 1
    for _, w in [*held[1:], (reader, writer2), (reader, writer)]:
        w.close()


async def test_total_connections_are_capped(plane: Plane) -> None:
    plane.listener.total = 2
    held = [await plane.connect() for _ in range(2)]
    await until(lambda: len(plane.listener.connections) == 2)
    reader, writer = await plane.connect()
    assert await closed_by_server(reader)
    assert plane.mux.counters.tcp_refused == 1
    for _, w in [*held, (reader, writer)]:
        w.close()


def _srtp_pair() -> tuple[SrtpKeys, SrtpContext, SrtpContext]:
    a, b = os.urandom(28), os.urandom(28)  # AES-128-GCM: 16-byte key || 12-byte salt
    ours = SrtpKeys("SRTP_AEAD_AES_128_GCM", local_key=a, remote_key=b)
    theirs = SrtpKeys("SRTP_AEAD_AES_128_GCM", local_key=b, remote_key=a)
    return ours, SrtpContext(ours), SrtpContext(theirs)


async def test_media_rides_the_connection_both_ways_and_has_no_native_handles(
    plane: Plane,
) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    await read_frame(reader)
    key = peer.addr
    assert key is not None and is_tcp(key)
    keys, _, theirs = _srtp_pair()
    peer._dtls_addr = key  # as if DTLS had completed on this path
    peer._dtls_connected(keys)
    (sink,) = plane.sinks
    assert sink.native_handles() is None  # the native kernel sends over UDP sockets only
    rtp = bytes([0x80, 96]) + struct.pack("!HII", 1, 1000, 0x1234) + b"payload"
    counters = plane.mux.counters
    udp_out, tcp_out = counters.udp_bytes_out, counters.tcp_bytes_out
    sent = sink.send_rtp(rtp)
    assert sent > 0
    assert theirs.unprotect(await read_frame(reader)) == rtp
    sink.fold()  # counted once: as ICE-TCP bytes (with the 2-byte framing), not as UDP
    assert counters.tcp_bytes_out == tcp_out + sent + 2 and counters.udp_bytes_out == udp_out
    writer.write(frame(theirs.protect(rtp)))
    await until(lambda: plane.rtp == [rtp])
    # the path's connection goes: a connected session whose media went there ends
    writer.close()
    await until(lambda: peer.closed)
    assert plane.closed == ["its ICE-TCP connection closed"]
    assert sink.send_rtp(rtp) == 0 and sink.errors == 1  # nothing written to a closed path


async def test_a_udp_sink_still_has_native_handles(plane: Plane) -> None:
    _, ours, _ = _srtp_pair()
    assert plane.mux.sock is not None
    sink = MediaSink(
        protect=ours.protect,
        protect_rtcp=ours.protect_rtcp,
        sendto=plane.mux.sender_for(("127.0.0.1", 9)),
        addr=("127.0.0.1", 9),
        stream=StreamCounters(),
        server=plane.mux.counters,
        srtp=ours,
    )
    handles = sink.native_handles()
    assert handles is not None and handles[1] is plane.mux.sock
    udp_out = plane.mux.counters.udp_bytes_out
    sent = sink.send_rtp(bytes([0x80, 96]) + struct.pack("!HII", 1, 1000, 0x1234) + b"x")
    assert sent > 0
    sink.route(plane.mux.sender_for(tcp_key(("127.0.0.1", 9))), tcp_key(("127.0.0.1", 9)))
    assert sink.native_handles() is None
    # the move to ICE-TCP: what went over UDP so far stays counted as UDP
    assert plane.mux.counters.udp_bytes_out == udp_out + sent


async def test_a_session_that_closes_closes_its_connection(plane: Plane) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    await read_frame(reader)
    peer.close("bye")
    assert await closed_by_server(reader)
    await until(lambda: not plane.listener.connections and not plane.mux.tcp_paths)
    writer.close()


async def test_a_udp_datagram_from_the_same_port_reaches_no_tcp_session(plane: Plane) -> None:
    peer = plane.transport()
    reader, writer = await plane.connect()
    writer.write(frame(binding(peer)))
    await read_frame(reader)
    local = writer.get_extra_info("sockname")
    garbage = plane.mux.counters.garbage_dropped
    plane.mux.datagram_received(b"\x80\x60" + b"\x00" * 30, (local[0], local[1]), 0)
    assert plane.mux.counters.garbage_dropped == garbage + 1
    assert peer.counters.srtp_auth_failures == 0
    writer.close()


async def test_sending_to_a_closed_path_is_a_counted_drop_not_a_name_lookup(
    plane: Plane,
) -> None:
    errors = plane.mux.counters.send_errors
    plane.mux.sendto(b"\x00\x01", tcp_key(("127.0.0.1", 9)))  # no such connection
    assert plane.mux.counters.send_errors == errors + 1
