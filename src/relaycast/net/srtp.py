"""SRTP/SRTCP contexts (RFC 3711, AEAD_AES_128_GCM per RFC 7714) on top of libsrtp (pylibsrtp)."""

from __future__ import annotations

from pylibsrtp import Error as LibSrtpError
from pylibsrtp import Policy, Session

from relaycast.net.dtls import SrtpKeys

_PROFILES = {
    "SRTP_AEAD_AES_128_GCM": Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "SRTP_AES128_CM_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
}

SrtpError = LibSrtpError


class SrtpContext:
    """One inbound and one outbound SRTP session for a DTLS association.

    ``protect``/``unprotect`` are the bound libsrtp methods themselves, so the hot path pays
    no Python call in between. Outbound allows repeated transmission so that NACKed packets
    can be resent with their original sequence number when RTX is not negotiated.
    """

    def __init__(self, keys: SrtpKeys) -> None:
        profile = _PROFILES[keys.profile]
        inbound = Policy(
            key=keys.remote_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        inbound.window_size = 1024
        outbound = Policy(
            key=keys.local_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        outbound.allow_repeat_tx = True
        self.profile = keys.profile
        self._rx = Session(policy=inbound)
        self._tx = Session(policy=outbound)
        self.protect = self._tx.protect
        self.protect_rtcp = self._tx.protect_rtcp
        self.unprotect = self._rx.unprotect
        self.unprotect_rtcp = self._rx.unprotect_rtcp
