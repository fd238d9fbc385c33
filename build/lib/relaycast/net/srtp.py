"""SRTP/SRTCP contexts (RFC 3711, AEAD_AES_128_GCM per RFC 7714) on top of libsrtp (pylibsrtp)."""

from __future__ import annotations

from collections.abc import Callable

from pylibsrtp import Error as LibSrtpError
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from relaycast.net.dtls import SrtpKeys

_PROFILES = {
    "SRTP_AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "SRTP_AES128_CM_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}

SrtpError = LibSrtpError

# RFC 3711 §3.1 / RFC 7714 §8: the auth tag (or GCM tag) is at most 16 bytes; libsrtp reserves
# SRTP_MAX_TRAILER_LEN for tag + MKI, so keep that much room in the working buffer.
_MAX_TRAILER = 144
_BUFFER_SIZE = 2048
# NACKed packets are resent with their sequence number up to the Forwarder's cache depth.
REPLAY_WINDOW = 1024


def fast_protect(session: Session) -> Callable[[bytes], bytes]:
    """``session.protect`` without pylibsrtp's per-call allocations; identical output.

    The fan-out protects every packet once per viewer, so the wrapper's cost matters
    (bench/fanout.py). This calls libsrtp's ``srtp_protect`` on the session's own buffer with
    a length cell allocated once. It relies on pylibsrtp 1.0 internals (pinned in
    pyproject.toml); tests/unit/test_srtp.py checks it byte for byte against ``protect``.
    """
    context = session._srtp[0]
    # our own buffer, larger than pylibsrtp's 1500 bytes: publishers may send packets up to a
    # full Ethernet MTU, and a viewer's extension block can add a few bytes to them
    cdata = ffi.new("char[]", _BUFFER_SIZE)
    view = ffi.buffer(cdata)
    limit = _BUFFER_SIZE - _MAX_TRAILER
    length = ffi.new("int *")
    protect = lib.srtp_protect

    def run(packet: bytes) -> bytes:
        size = len(packet)
        if size > limit:
            raise ValueError(f"packet of {size} bytes is too long to protect")
        view[0:size] = packet
        length[0] = size
        status = protect(context, cdata, length)
        if status:
            raise SrtpError(f"srtp_protect failed with status {status}")
        return view[0 : length[0]]  # type: ignore[no-any-return]

    return run


class SrtpContext:
    """One inbound and one outbound SRTP session for a DTLS association.

    ``protect``/``unprotect`` are plain callables bound once, so the hot path pays no extra
    Python call. Outbound allows repeated transmission so that NACKed packets can be resent
    with their original sequence number when RTX is not negotiated.
    """

    def __init__(self, keys: SrtpKeys) -> None:
        profile = _PROFILES[keys.profile]
        inbound = Policy(
            key=keys.remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        inbound.window_size = REPLAY_WINDOW
        outbound = Policy(
            key=keys.local_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        outbound.allow_repeat_tx = True
        outbound.window_size = REPLAY_WINDOW
        self.profile = keys.profile
        self._rx = Session(policy=inbound)
        self._tx = Session(policy=outbound)
        self.protect: Callable[[bytes], bytes] = fast_protect(self._tx)
        self.protect_rtcp: Callable[[bytes], bytes] = self._tx.protect_rtcp
        self.unprotect: Callable[[bytes], bytes] = self._rx.unprotect
        self.unprotect_rtcp: Callable[[bytes], bytes] = self._rx.unprotect_rtcp
