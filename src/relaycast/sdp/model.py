"""Data model of a parsed SDP session description (RFC 8866, as profiled by JSEP, RFC 9429).

Only what a WHIP/WHEP server needs is modelled; everything is plain data so other modules
(and tests) can build instances by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Directions an m-section can carry (RFC 8866 §6.7).
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class Codec:
    """One payload format of an m-section: ``a=rtpmap`` + ``a=fmtp`` + ``a=rtcp-fb`` (RFC 8866
    §6.6, RFC 4585 §4.2).

    ``fmtp`` keeps the parameters in the order they were written; a parameter written without
    ``=`` (as in RED's ``111/111``) is stored with an empty value.
    """

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    fmtp: dict[str, str] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """``"video"`` for 90 kHz formats (every video format and video RTX/RED/FEC), else
        ``"audio"``."""
        return "video" if self.clock_rate == 90000 else "audio"

    @property
    def mime(self) -> str:
        """Lower-case MIME type, e.g. ``"video/vp8"``, ``"audio/opus"``."""
        return f"{self.kind}/{self.name.lower()}"

    def fmtp_value(self) -> str:
        """The ``a=fmtp`` value (without the payload type), ``""`` when there is none."""
        return ";".join(f"{k}={v}" if v else k for k, v in self.fmtp.items())

    def rtpmap_value(self) -> str:
        """The ``a=rtpmap`` encoding part, e.g. ``"opus/48000/2"``."""
        base = f"{self.name}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels is not None else base


@dataclass
class MediaSection:
    """One ``m=`` section (RFC 8866 §5.14) with the attributes JSEP uses.

    ``candidates`` hold candidate attribute values in the browser's ``RTCIceCandidate.candidate``
    form, i.e. ``"candidate:<foundation> <component> ..."`` (without ``a=``).
    Session-level ICE credentials, fingerprints, setup and ice-options are copied into each
    section by the parser; BUNDLEd sections without their own transport attributes inherit the
    bundle-tag section's (RFC 8843 §7.1.3).
    """

    kind: str
    port: int
    protocol: str
    formats: list[str]
    mid: str | None = None
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)
    extmaps: dict[int, str] = field(default_factory=dict)
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrc_groups: list[tuple[str, list[int]]] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    candidates: list[str] = field(default_factory=list)
    msid: str | None = None
    rids: list[str] = field(default_factory=list)
    #: ``a=rid`` id -> (direction, restrictions) as written (RFC 8851 §10)
    rid_params: dict[str, tuple[str, str]] = field(default_factory=dict)
    ice_options: list[str] = field(default_factory=list)
    # extras beyond the shared contract
    simulcast: str | None = None
    end_of_candidates: bool = False
    bundle_only: bool = False
    extmap_allow_mixed: bool = False

    def codec(self, payload_type: int) -> Codec | None:
        """The codec with this payload type, if any."""
        for c in self.codecs:
            if c.payload_type == payload_type:
                return c
        return None

    def rtx_for(self, payload_type: int) -> Codec | None:
        """The RTX codec whose ``apt`` names ``payload_type`` (RFC 4588 §8.6)."""
        for c in self.codecs:
            if c.name.lower() == "rtx" and c.fmtp.get("apt") == str(payload_type):
                return c
        return None

    def fid_pairs(self) -> dict[int, int]:
        """Media SSRC -> RTX SSRC from ``a=ssrc-group:FID`` (RFC 5576 §4.2, RFC 4588 §8.6)."""
        pairs: dict[int, int] = {}
        for semantics, ssrcs in self.ssrc_groups:
            if semantics.upper() == "FID" and len(ssrcs) >= 2:
                pairs[ssrcs[0]] = ssrcs[1]
        return pairs

    def describe(self, index: int) -> str:
        """A short human label such as ``"m-line 1 (video, mid 1)"``."""
        mid = f", mid {self.mid}" if self.mid is not None else ""
        return f"m-line {index} ({self.kind}{mid})"


@dataclass
class SessionDescription:
    """A whole session description. Session-level transport attributes are folded into every
    ``MediaSection`` by the parser."""

    media: list[MediaSection]
    bundle: list[str] = field(default_factory=list)
    ice_lite: bool = False
    extmap_allow_mixed: bool = False
    origin: str = ""
    groups: list[tuple[str, list[str]]] = field(default_factory=list)
