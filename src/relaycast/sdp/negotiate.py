"""Offer/answer negotiation (RFC 3264 §6, JSEP RFC 9429 §5.3) for WHIP publishers and WHEP
viewers. Pure functions from a parsed offer to a :class:`Negotiated` the answer builder and the
media plane both use; payload types and extension ids are always the offerer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relaycast.sdp.codecs import (
    codec_key,
    describe,
    is_supported,
    preference,
    supported_summary,
    unsupported_reason,
)
from relaycast.sdp.model import Codec, MediaSection, SessionDescription
from relaycast.sdp.simulcast import URI_REPAIRED_RID, URI_RID, send_layers

URI_SDES_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"

#: Header extensions accepted from publishers (abs-send-time only without transport-cc).
PUBLISH_EXTENSIONS = (
    URI_SDES_MID,
    URI_TRANSPORT_CC,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_VIDEO_ORIENTATION,
)
#: Header extensions we write towards viewers: transport-wide sequence numbers are our own,
#: per viewer transport (TWCC to viewers, media/bwe); playout delay on video (media/feedback/
#: playout_delay.py).
PLAY_EXTENSIONS = (
    URI_SDES_MID,
    URI_AUDIO_LEVEL,
    URI_VIDEO_ORIENTATION,
    URI_TRANSPORT_CC,
    URI_PLAYOUT_DELAY,
)

_PLAY_FB = ("nack", "nack pli", "ccm fir", "transport-cc")

#: Media transports we can terminate: DTLS-SRTP (RFC 5764 §8) with or without AVPF.
MEDIA_PROTOCOLS = (
    "UDP/TLS/RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "TCP/DTLS/RTP/SAVPF",
    "TCP/TLS/RTP/SAVPF",
)


class NegotiationError(ValueError):
    """The offer is well-formed but asks for nothing we can provide. ``status`` is the HTTP
    status to answer with (422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class NegotiatedMedia:
    """Outcome for one m-section of the offer; see the module docstring for conventions."""

    mid: str
    kind: str
    index: int
    codecs: list[Codec] = field(default_factory=list)
    rtx: dict[int, int] = field(default_factory=dict)
    extensions: dict[str, int] = field(default_factory=dict)
    rtcp_fb: list[str] = field(default_factory=list)
    direction: str = "inactive"
    remote_ssrcs: list[int] = field(default_factory=list)
    remote_rtx_ssrcs: dict[int, int] = field(default_factory=dict)
    rejected: bool = True
    #: simulcast: the RTP stream ids of the accepted layers, in the offerer's order
    #: (RFC 8853 §5.2); empty for a single encoding
    rids: list[str] = field(default_factory=list)


@dataclass
class Negotiated:
    """Whole-session outcome: accepted media plus the remote transport parameters."""

    media: list[NegotiatedMedia]
    remote_ufrag: str
    remote_pwd: str
    remote_fingerprints: list[tuple[str, str]]
    remote_setup: str
    bundle_mids: list[str]
    local_setup: str

    def accepted(self) -> list[NegotiatedMedia]:
        """The media sections answered with a port (not rejected)."""
        return [m for m in self.media if not m.rejected]

    def by_kind(self, kind: str) -> NegotiatedMedia | None:
        """The accepted section of ``kind`` (at most one per kind)."""
        return next((m for m in self.accepted() if m.kind == kind), None)


def _mid(m: MediaSection, index: int) -> str:
    return m.mid if m.mid is not None else str(index)


def _in_use(offer: SessionDescription, m: MediaSection) -> bool:
    """False for sections the offerer itself rejected (port 0, not bundled; RFC 8843 §7.3)."""
    return m.port != 0 or (m.mid is not None and m.mid in offer.bundle)


def _rejected(m: MediaSection, index: int) -> NegotiatedMedia:
    return NegotiatedMedia(mid=_mid(m, index), kind=m.kind, index=index)


def _check_transport(m: MediaSection, index: int) -> None:
    if m.protocol.upper() not in MEDIA_PROTOCOLS:
        raise NegotiationError(
            f"{m.describe(index)} uses protocol {m.protocol}; relaycast needs DTLS-SRTP "
            "(UDP/TLS/RTP/SAVPF, RFC 5764 §8)"
        )
    if not m.rtcp_mux:
        raise NegotiationError(
            f"{m.describe(index)}: rtcp-mux is required (a=rtcp-mux, RFC 8858); RTP and RTCP "
            "share one port"
        )


def _ssrcs(m: MediaSection) -> tuple[list[int], dict[int, int]]:
    """Primary SSRCs in order of appearance, and primary -> RTX from FID groups."""
    fid = m.fid_pairs()
    secondary: set[int] = set(fid.values())
    for semantics, group in m.ssrc_groups:
        if semantics.upper() in ("FEC-FR", "FEC") and len(group) >= 2:
            secondary.update(group[1:])
    order: list[int] = []
    for _, group in m.ssrc_groups:
        order.extend(group)
    order.extend(m.ssrcs)
    primary: list[int] = []
    for ssrc in order:
        if ssrc not in secondary and ssrc not in primary:
            primary.append(ssrc)
    return primary, fid


def _rtx_map(m: MediaSection, codecs: list[Codec]) -> dict[int, int]:
    out: dict[int, int] = {}
    if m.kind != "video":
        return out
    for c in codecs:
        rtx = m.rtx_for(c.payload_type)
        if rtx is not None:
            out[c.payload_type] = rtx.payload_type
    return out


def _offered_reasons(m: MediaSection) -> str:
    names = []
    for c in m.codecs:
        if c.name.lower() in ("rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"):
            continue
        reason = unsupported_reason(c)
        names.append(reason if reason is not None else describe(c))
    return ", ".join(dict.fromkeys(names)) or "no codecs"


def _publish_fb(codec: Codec, transport_cc: bool) -> list[str]:
    offered = set(codec.rtcp_fb)
    out: list[str] = [fb for fb in ("nack", "nack pli", "ccm fir") if fb in offered]
    if transport_cc and "transport-cc" in offered:
        out.append("transport-cc")
    elif "goog-remb" in offered:
        out.append("goog-remb")
    return out


def _transport_summary(
    offer: SessionDescription, media: list[NegotiatedMedia], bundle_mids: list[str]
) -> Negotiated:
    accepted = [n for n in media if not n.rejected]
    first = offer.media[accepted[0].index]
    remote_setup = first.setup or "active"  # RFC 4145 §4: absent means active
    if remote_setup == "holdconn":
        raise NegotiationError("a=setup:holdconn: the offer puts the DTLS connection on hold")
    # The offerer has already checked ufrag/pwd presence for sections in use (parse_sdp).
    return Negotiated(
        media=media,
        remote_ufrag=first.ice_ufrag or "",
        remote_pwd=first.ice_pwd or "",
        remote_fingerprints=list(first.fingerprints),
        remote_setup=remote_setup,
        bundle_mids=bundle_mids,
        local_setup="active" if remote_setup == "passive" else "passive",  # RFC 5763 §5
    )


def _bundle_mids(offer: SessionDescription, media: list[NegotiatedMedia]) -> list[str]:
    accepted = [n.mid for n in media if not n.rejected]
    if not offer.bundle:
        return []
    return [mid for mid in accepted if mid in offer.bundle]


def negotiate_publish(offer: SessionDescription) -> Negotiated:
    """Negotiate a WHIP publish offer (RFC 9725 §4.2): accept one audio and one video
    sendonly/sendrecv section, each with the first supported codec in the offerer's order
    (RFC 3264 §6.1) plus its RTX; reject everything else with port 0. A video section that
    offers simulcast (RFC 8853) keeps its layers (``NegotiatedMedia.rids``) and the RTP
    stream id extensions that name them (RFC 8852)."""
    media: list[NegotiatedMedia] = []
    kinds_done: set[str] = set()
    problems: list[str] = []
    for index, m in enumerate(offer.media):
        if m.kind not in ("audio", "video") or not _in_use(offer, m):
            media.append(_rejected(m, index))
            continue
        if m.kind in kinds_done:
            problems.append(f"{m.describe(index)}: only one {m.kind} section is supported")
            media.append(_rejected(m, index))
            continue
        if m.direction not in ("sendonly", "sendrecv"):
            problems.append(f"{m.describe(index)} is {m.direction}; a publisher must send")
            media.append(_rejected(m, index))
            continue
        codec = next((c for c in m.codecs if is_supported(c, m.kind)), None)
        if codec is None:
            problems.append(f"{m.describe(index)} offered {_offered_reasons(m)}")
            media.append(_rejected(m, index))
            continue
        _check_transport(m, index)
        uris = set(m.extmaps.values())
        extensions: dict[str, int] = {}
        for ext_id, uri in sorted(m.extmaps.items()):
            if uri not in PUBLISH_EXTENSIONS or uri in extensions:
                continue
            if uri == URI_ABS_SEND_TIME and URI_TRANSPORT_CC in uris:
                continue
            extensions[uri] = ext_id
        transport_cc = URI_TRANSPORT_CC in extensions
        rids = send_layers(m, codec.payload_type) if m.kind == "video" else []
        if rids:  # the RTP stream id extensions tell the layers apart (RFC 8852 §3)
            for ext_id, uri in sorted(m.extmaps.items()):
                if uri in (URI_RID, URI_REPAIRED_RID) and uri not in extensions:
                    extensions[uri] = ext_id
        primary, fid = _ssrcs(m)
        media.append(
            NegotiatedMedia(
                mid=_mid(m, index),
                kind=m.kind,
                index=index,
                codecs=[codec],
                rtx=_rtx_map(m, [codec]),
                extensions=extensions,
                rtcp_fb=_publish_fb(codec, transport_cc),
                direction="recvonly",
                remote_ssrcs=primary,
                remote_rtx_ssrcs=fid,
                rejected=False,
                rids=rids,
            )
        )
        kinds_done.add(m.kind)
    if not kinds_done:
        detail = "; ".join(problems) if problems else "the offer has no audio or video section"
        raise NegotiationError(
            f"nothing to publish: {detail}. relaycast accepts {supported_summary()}"
        )
    return _transport_summary(offer, media, _bundle_mids(offer, media))


def _play_codecs(
    m: MediaSection, index: int, source: Codec | None
) -> tuple[list[Codec], str | None]:
    """Codecs to answer a viewer section with, or ([], reason) when there is none."""
    supported = [c for c in m.codecs if is_supported(c, m.kind)]
    if source is not None:
        key = codec_key(source)
        match = next((c for c in supported if codec_key(c) == key), None)
        if match is None and key == "h264:constrained-baseline":
            # a Baseline decoder decodes Constrained Baseline (H.264 Annex A.2.1.1)
            match = next((c for c in supported if codec_key(c) == "h264:baseline"), None)
        if match is None:
            offered = ", ".join(dict.fromkeys(describe(c) for c in supported)) or (
                _offered_reasons(m)
            )
            hint = f"Enable {describe(source).split(' (')[0]} or watch in another browser"
            raise NegotiationError(
                f"this stream is {describe(source)}; your browser offered only {offered} "
                f"for {m.kind} ({m.describe(index)}). {hint}"
            )
        return [match], None
    by_key: dict[str, Codec] = {}
    for c in supported:
        by_key.setdefault(codec_key(c), c)
    chosen = sorted(by_key.values(), key=preference)  # stable: offer order within a name
    if not chosen:
        return [], f"{m.describe(index)} offered {_offered_reasons(m)}"
    return chosen, None


def negotiate_play(offer: SessionDescription, source: dict[str, Codec] | None) -> Negotiated:
    """Negotiate a WHEP viewer offer. ``source`` maps ``"audio"``/``"video"`` to the codec the
    publisher sends (None when nobody publishes). With a source, a viewer section gets exactly
    that codec under the viewer's payload type; without, every supported codec the viewer offers
    (one per :func:`codec_key`, in our preference order) so a later publisher can be forwarded."""
    media: list[NegotiatedMedia] = []
    kinds_done: set[str] = set()
    problems: list[str] = []
    for index, m in enumerate(offer.media):
        if m.kind not in ("audio", "video") or not _in_use(offer, m):
            media.append(_rejected(m, index))
            continue
        if m.kind in kinds_done or m.direction not in ("recvonly", "sendrecv"):
            why = "is a second one" if m.kind in kinds_done else f"is {m.direction}"
            problems.append(f"{m.describe(index)} {why}")
            media.append(_rejected(m, index))
            continue
        src = source.get(m.kind) if source else None
        codecs, problem = _play_codecs(m, index, src)
        if not codecs:
            problems.append(problem or m.describe(index))
            media.append(_rejected(m, index))
            continue
        _check_transport(m, index)
        extensions: dict[str, int] = {}
        for ext_id, uri in sorted(m.extmaps.items()):
            if uri in PLAY_EXTENSIONS and uri not in extensions:
                if uri == URI_PLAYOUT_DELAY and m.kind != "video":
                    continue
                extensions[uri] = ext_id
        offered_fb = {fb for c in codecs for fb in c.rtcp_fb}
        if URI_TRANSPORT_CC not in extensions:
            offered_fb.discard("transport-cc")
        media.append(
            NegotiatedMedia(
                mid=_mid(m, index),
                kind=m.kind,
                index=index,
                codecs=codecs,
                rtx=_rtx_map(m, codecs),
                extensions=extensions,
                rtcp_fb=[fb for fb in _PLAY_FB if fb in offered_fb],
                direction="sendonly",
                rejected=False,
            )
        )
        kinds_done.add(m.kind)
    if not kinds_done:
        detail = "; ".join(problems) if problems else "the offer has no audio or video section"
        raise NegotiationError(f"nothing to play: {detail}. relaycast sends {supported_summary()}")
    return _transport_summary(offer, media, _bundle_mids(offer, media))
