"""SDP answer builder (RFC 3264 §6, JSEP RFC 9429 §5.3) for an ICE-lite server (RFC 8445 §2.5)
and ``application/trickle-ice-sdpfrag`` bodies (RFC 8840 §9, RFC 9725 §4.4.1.2)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from relaycast.sdp.model import Codec, MediaSection, SessionDescription
from relaycast.sdp.negotiate import Negotiated, NegotiatedMedia
from relaycast.sdp.simulcast import answer_lines as simulcast_answer_lines

_HOST_TYPE_PREFERENCE = 126  # RFC 8445 §5.1.2.2
_COMPONENT_RTP = 1
#: RFC 6544 §4.2: local preference = 2^13 * direction-pref + other-pref; a passive host
#: candidate's direction-pref is 4 (active 6, S-O 2), other-pref is 0..8191
_TCP_PASSIVE_DIRECTION_PREFERENCE = 4
_TCP_OTHER_PREFERENCE = 8191


@dataclass(frozen=True)
class LocalTransport:
    """Our side of the transport: ICE credentials, the SHA-256 fingerprint of our DTLS
    certificate (``"AB:CD:..."``) and the host candidates in priority order."""

    ufrag: str
    pwd: str
    fingerprint: str
    candidates: list[tuple[str, int]]
    #: also offer each candidate's address and port over TCP (RFC 6544, tcptype passive)
    ice_tcp: bool = False


@dataclass(frozen=True)
class SendSsrcs:
    """What we send with in one play m-section (RFC 5576 §4.1, RFC 8830 §2)."""

    ssrc: int
    rtx_ssrc: int | None
    cname: str
    stream_id: str
    track_id: str


def candidate_priority(index: int) -> int:
    """Priority of our ``index``-th host candidate (RFC 8445 §5.1.2.1): type preference 126,
    local preference 65535 - index, component 1."""
    local_pref = max(0, 65535 - index)
    return (1 << 24) * _HOST_TYPE_PREFERENCE + (1 << 8) * local_pref + (256 - _COMPONENT_RTP)


def tcp_candidate_priority(index: int) -> int:
    """Priority of our ``index``-th passive TCP host candidate (RFC 6544 §4.2): the host type
    preference, local preference 2^13 * 4 (passive) + 8191 - index, component 1. Below every
    UDP host candidate of ours (their local preference is 65535 - index), so a client that can
    reach us over UDP uses UDP."""
    other = max(0, _TCP_OTHER_PREFERENCE - index)
    local_pref = (1 << 13) * _TCP_PASSIVE_DIRECTION_PREFERENCE + other
    return (1 << 24) * _HOST_TYPE_PREFERENCE + (1 << 8) * local_pref + (256 - _COMPONENT_RTP)


def candidate_lines(local: LocalTransport) -> list[str]:
    """``a=candidate`` lines (RFC 8839 §5.1) for our host candidates, UDP first (some clients
    read only the first), then, with ICE-TCP, a passive TCP candidate (RFC 6544 §4.5) at each
    address, then ``a=end-of-candidates`` (RFC 8840 §8.2): ICE-lite gathers nothing later.
    Foundations differ between UDP and TCP candidates (RFC 8445 §5.1.1.3)."""
    lines = [
        f"a=candidate:{i + 1} {_COMPONENT_RTP} udp {candidate_priority(i)} {ip} {port} typ host"
        for i, (ip, port) in enumerate(local.candidates)
    ]
    if local.ice_tcp:
        first = len(local.candidates) + 1
        lines += [
            f"a=candidate:{first + i} {_COMPONENT_RTP} tcp {tcp_candidate_priority(i)} {ip} "
            f"{port} typ host tcptype passive"
            for i, (ip, port) in enumerate(local.candidates)
        ]
    lines.append("a=end-of-candidates")
    return lines


def _addr_type(ip: str) -> str:
    return "IP6" if ":" in ip else "IP4"


def _codec_lines(codec: Codec, fbs: list[str]) -> list[str]:
    pt = codec.payload_type
    lines = [f"a=rtpmap:{pt} {codec.rtpmap_value()}"]
    fmtp = codec.fmtp_value()
    if fmtp:
        lines.append(f"a=fmtp:{pt} {fmtp}")
    lines.extend(f"a=rtcp-fb:{pt} {fb}" for fb in fbs if fb in codec.rtcp_fb)
    return lines


def _rejected_section(m: MediaSection) -> list[str]:
    """Rejected m-section: port 0 (RFC 3264 §6), keeping one of the offer's formats."""
    if m.kind == "application":
        proto, fmts = m.protocol, m.formats[0] if m.formats else "webrtc-datachannel"
    else:
        proto, fmts = m.protocol, m.formats[0] if m.formats else "0"
    lines = [f"m={m.kind} 0 {proto} {fmts}", "c=IN IP4 0.0.0.0"]
    if m.mid is not None:
        lines.append(f"a=mid:{m.mid}")
    if m.kind != "application":
        lines.append("a=inactive")
    return lines


def _accepted_section(
    m: MediaSection,
    nm: NegotiatedMedia,
    negotiated: Negotiated,
    local: LocalTransport,
    send: SendSsrcs | None,
) -> list[str]:
    pts: list[str] = []
    body: list[str] = []
    for codec in nm.codecs:
        pts.append(str(codec.payload_type))
        body.extend(_codec_lines(codec, nm.rtcp_fb))
        rtx_pt = nm.rtx.get(codec.payload_type)
        rtx = m.codec(rtx_pt) if rtx_pt is not None else None
        if rtx is not None:
            pts.append(str(rtx.payload_type))
            body.append(f"a=rtpmap:{rtx.payload_type} rtx/{rtx.clock_rate}")
            body.append(f"a=fmtp:{rtx.payload_type} apt={codec.payload_type}")
    if local.candidates:  # default candidate in m=/c= (RFC 8839 §4.2.1.2)
        ip, port = local.candidates[0]
    else:
        ip, port = "0.0.0.0", 9
    lines = [f"m={m.kind} {port} {m.protocol} {' '.join(pts)}", f"c=IN {_addr_type(ip)} {ip}"]
    if m.mid is not None:
        lines.append(f"a=mid:{m.mid}")
    lines += [
        f"a=ice-ufrag:{local.ufrag}",
        f"a=ice-pwd:{local.pwd}",
        f"a=fingerprint:sha-256 {local.fingerprint}",
        f"a=setup:{negotiated.local_setup}",
        f"a={nm.direction}",
        "a=rtcp-mux",
    ]
    if m.rtcp_rsize:
        lines.append("a=rtcp-rsize")
    for uri, ext_id in sorted(nm.extensions.items(), key=lambda item: item[1]):
        lines.append(f"a=extmap:{ext_id} {uri}")
    lines.extend(body)
    lines.extend(simulcast_answer_lines(nm.rids))
    if send is not None:
        msid = f"{send.stream_id} {send.track_id}"
        lines.append(f"a=msid:{msid}")
        ssrcs = [send.ssrc]
        if send.rtx_ssrc is not None and nm.rtx:
            lines.append(f"a=ssrc-group:FID {send.ssrc} {send.rtx_ssrc}")
            ssrcs.append(send.rtx_ssrc)
        for ssrc in ssrcs:
            lines.append(f"a=ssrc:{ssrc} cname:{send.cname}")
            lines.append(f"a=ssrc:{ssrc} msid:{msid}")
    lines.extend(candidate_lines(local))
    return lines


def build_answer(
    offer: SessionDescription,
    negotiated: Negotiated,
    local: LocalTransport,
    send: dict[str, SendSsrcs] | None = None,
    session_version: int = 1,
    session_id: int | None = None,
) -> str:
    """Build the SDP answer text (CRLF line ends) for ``offer`` as ``negotiated``.

    Every accepted section carries our ICE credentials, fingerprint and all host candidates
    (some clients, e.g. FFmpeg's whip muxer, read only the first candidate). ``send`` maps a
    play section's mid to the SSRCs we send there. ``session_id`` should stay the same across
    answers of one session (RFC 8866 §5.2); a random one is drawn when omitted."""
    sid = session_id if session_id is not None else secrets.randbits(62)
    lines = [
        "v=0",
        f"o=- {sid} {session_version} IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=ice-lite",
    ]
    if negotiated.bundle_mids:
        lines.append("a=group:BUNDLE " + " ".join(negotiated.bundle_mids))
    if offer.extmap_allow_mixed:
        lines.append("a=extmap-allow-mixed")  # RFC 8285 §6
    lines.append("a=msid-semantic:WMS *")
    by_index = {nm.index: nm for nm in negotiated.media}
    for index, m in enumerate(offer.media):
        nm = by_index.get(index)
        if nm is None or nm.rejected:
            lines.extend(_rejected_section(m))
        else:
            info = send.get(nm.mid) if send and nm.direction in ("sendonly", "sendrecv") else None
            lines.extend(_accepted_section(m, nm, negotiated, local, info))
    return "\r\n".join(lines) + "\r\n"


def build_sdpfrag(local: LocalTransport, mids: list[str]) -> str:
    """``application/trickle-ice-sdpfrag`` body with our (new) ICE credentials and candidates,
    for an ICE-restart PATCH response (RFC 9725 §4.4.1.2, format RFC 8840 §9): pseudo
    ``m=audio 9 RTP/AVP 0`` lines carry the mids; candidates go under the bundle tag (first)."""
    lines = ["a=ice-lite", f"a=ice-ufrag:{local.ufrag}", f"a=ice-pwd:{local.pwd}"]
    if mids:
        lines.append("a=group:BUNDLE " + " ".join(mids))
        for i, mid in enumerate(mids):
            lines += ["m=audio 9 RTP/AVP 0", f"a=mid:{mid}"]
            if i == 0:
                lines.extend(candidate_lines(local))
    else:
        lines.append("m=audio 9 RTP/AVP 0")
        lines.extend(candidate_lines(local))
    return "\r\n".join(lines) + "\r\n"
