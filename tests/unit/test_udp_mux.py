"""The media socket: first-byte demultiplexing (RFC 7983) and kernel receive timestamps."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from relaycast.net.udp_mux import Address, open_udp_mux


async def test_demultiplexing_and_receive_timestamps() -> None:
    stun: list[tuple[bytes, Address]] = []
    mux = await open_udp_mux("127.0.0.1", 0, lambda data, addr: stun.append((data, addr)))
    assert mux.sock is not None
    arrivals: list[int] = []
    dispatch = mux.datagram_received

    def record(data: bytes, addr: Address, arrival_us: int) -> None:
        arrivals.append(arrival_us)
        dispatch(data, addr, arrival_us)

    mux.datagram_received = record  # type: ignore[method-assign]
    port = mux.sock.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = time.time_ns() // 1000
        sender.sendto(b"\x00\x01" + b"\x00" * 18, ("127.0.0.1", port))  # STUN range
        sender_address = sender.getsockname()
        sender.sendto(b"\x80\x60" + b"\x00" * 20, ("127.0.0.1", port))  # RTP, unknown sender
        sender.sendto(b"\x16\xfe\xff" + b"\x00" * 10, ("127.0.0.1", port))  # DTLS, unknown
        sender.sendto(b"\xff" * 8, ("127.0.0.1", port))  # no RFC 7983 range
        sender.sendto(b"", ("127.0.0.1", port))
        for _ in range(100):
            if mux.counters.udp_bytes_in >= 20 + 22 + 13 + 8 and len(arrivals) == 5:
                break
            await asyncio.sleep(0.01)
        after = time.time_ns() // 1000
    finally:
        sender.close()
        mux.close()
    assert [data[:2] for data, _ in stun] == [b"\x00\x01"]
    assert stun[0][1] == ("127.0.0.1", sender_address[1])
    # RTP and DTLS from an unvalidated address, the 0xff datagram and the empty one
    assert mux.counters.garbage_dropped == 4
    assert mux.counters.udp_packets_in == 5
    # the kernel stamped each datagram when it arrived, before the loop got to it
    assert all(before <= arrival <= after for arrival in arrivals), (before, arrivals, after)
    assert mux.sock is None  # closed


async def test_a_dedicated_socket_gets_its_peers_datagrams_whatever_floods_the_port() -> None:
    """UdpMux.dedicate: the publisher's datagrams arrive on a socket of their own (same port,
    connected to the publisher), so garbage that fills the shared socket's queue cannot push
    them out of the kernel."""
    seen: list[tuple[bytes, Address]] = []
    mux = await open_udp_mux("127.0.0.1", 0, lambda data, addr: seen.append((data, addr)))
    assert mux.sock is not None and mux.reuse_port
    port = mux.sock.getsockname()[1]
    publisher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    publisher.bind(("127.0.0.1", 0))
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mux.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny shared queue
    own = mux.dedicate(publisher.getsockname())
    try:
        assert own is not None and own.getsockname() == mux.sock.getsockname()
        for i in range(2000):  # far more than the shared queue holds, before anyone reads
            flooder.sendto(b"\x00\x01" + bytes(18), ("127.0.0.1", port))
            if i % 20 == 0:
                publisher.sendto(
                    b"\x00\x01" + i.to_bytes(2, "big") + bytes(16), ("127.0.0.1", port)
                )
        await asyncio.sleep(0.2)  # the loop reads both sockets
        from_publisher = [d for d, a in seen if a == publisher.getsockname()]
        assert len(from_publisher) == 100, len(from_publisher)  # every one of them
        assert len(seen) - len(from_publisher) < 2000  # while the shared queue overflowed
        mux.release(own)
        mux.release(own)  # idempotent
        assert mux.dedicated == 0
    finally:
        publisher.close()
        flooder.close()
        mux.close()


async def test_the_media_port_is_not_shared_with_another_server() -> None:
    """SO_REUSEPORT (for dedicated sockets) must not let a second server bind the same port."""
    first = await open_udp_mux("127.0.0.1", 0, lambda data, addr: None)
    assert first.sock is not None
    try:
        with pytest.raises(OSError):
            await open_udp_mux("127.0.0.1", first.sock.getsockname()[1], lambda data, addr: None)
    finally:
        first.close()
