"""SrtpContext: our fast protect path gives libsrtp's exact bytes and round-trips."""

from __future__ import annotations

import os

import pytest
from pylibsrtp import Policy, Session

from relaycast.net.dtls import SrtpKeys
from relaycast.net.srtp import SrtpContext, SrtpError, fast_protect
from relaycast.rtp.packet import RtpPacket

PROFILES = {"SRTP_AEAD_AES_128_GCM": (16, 12), "SRTP_AES128_CM_SHA1_80": (16, 14)}


def pair(profile: str) -> tuple[SrtpContext, SrtpContext]:
    key_len, salt_len = PROFILES[profile]
    a, b = os.urandom(key_len + salt_len), os.urandom(key_len + salt_len)
    return SrtpContext(SrtpKeys(profile, a, b)), SrtpContext(SrtpKeys(profile, b, a))


def rtp(seq: int, size: int = 1100) -> bytes:
    return bytes(
        RtpPacket(
            payload_type=96,
            sequence_number=seq,
            timestamp=seq * 3000,
            ssrc=7,
            payload=os.urandom(size),
        )
    )


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_fast_protect_matches_pylibsrtp_byte_for_byte(profile: str) -> None:
    key = os.urandom(sum(PROFILES[profile]))
    srtp_profile = (
        Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        if "GCM" in profile
        else Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    sessions = [
        Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=srtp_profile))
        for _ in range(2)
    ]
    fast = fast_protect(sessions[1])
    for seq in range(50):
        packet = rtp(seq, size=20 + seq * 25)
        assert fast(packet) == sessions[0].protect(packet)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_round_trip_and_tamper_detection(profile: str) -> None:
    sender, receiver = pair(profile)
    packet = rtp(1)
    protected = sender.protect(packet)
    assert protected != packet
    assert receiver.unprotect(protected) == packet
    tampered = bytearray(sender.protect(rtp(2)))
    tampered[20] ^= 1
    with pytest.raises(SrtpError):
        receiver.unprotect(bytes(tampered))


def test_old_packets_can_be_resent_within_the_cache_depth() -> None:
    sender, receiver = pair("SRTP_AEAD_AES_128_GCM")
    packets = [rtp(seq, size=50) for seq in range(1000)]
    for packet in packets:
        receiver.unprotect(sender.protect(packet))
    # a NACK answered without RTX re-protects a packet 900 behind the newest one
    assert sender.protect(packets[100])


def test_full_mtu_packets_protect_and_oversized_ones_are_refused_cleanly() -> None:
    sender, receiver = pair("SRTP_AEAD_AES_128_GCM")
    packet = rtp(1, size=1460)  # a full Ethernet MTU of RTP, more than pylibsrtp's buffer takes
    assert receiver.unprotect(sender.protect(packet)) == packet
    with pytest.raises(ValueError):
        sender.protect(rtp(2, size=4000))
