"""SDP offer parser (RFC 8866) for the subset JSEP (RFC 9429) and WHIP/WHEP clients use.

Errors are :class:`SdpError` with a message that quotes the offending line and its number, so
the HTTP layer can hand it to the person who sent the offer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from relaycast.sdp.model import DIRECTIONS, Codec, MediaSection, SessionDescription

#: Largest SDP body accepted, in bytes (offers from browsers are 4-8 KiB).
MAX_SDP_BYTES = 64 * 1024

#: Fingerprint hash functions we understand and their digest sizes (RFC 8122 §5).
FINGERPRINT_SIZES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}

_SETUP_VALUES = ("actpass", "active", "passive", "holdconn")  # RFC 4145 §4
_LINE_RE = re.compile(r"([a-z])=(.*)")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but TAB, and DEL
_ICE_CHARS_RE = re.compile(r"[A-Za-z0-9+/]+")  # ice-char, RFC 8839 §5.4
_RTPMAP_RE = re.compile(r"(\d{1,3})\s+([^/\s]+)/(\d{1,7})(?:/(\d{1,2}))?")
_HEX_PAIRS_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
# Static payload types (RFC 3551 §6) that appear without a=rtpmap.
_STATIC_PT = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}


class SdpError(ValueError):
    """The SDP text is malformed or lacks something every WebRTC offer must carry."""


class SdpLimitError(SdpError):
    """The SDP exceeds one of the caps below (the HTTP layer answers 413 naming it)."""

    def __init__(self, message: str, limit: str, maximum: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum


#: Caps on what one offer may carry, checked while parsing so that parsing stops at the cap.
#: Browsers send 2 m= sections (3 with a data channel), simulcast too; the largest sections
#: seen (Chrome's video with every codec) have about 170 lines.
MAX_MEDIA_SECTIONS = 16
MAX_SECTION_LINES = 512
MAX_SESSION_LINES = 128
MAX_SDPFRAG_LINES = 1024


#: one-byte header extension values are at most 16 bytes (RFC 8285 §4.2)
MAX_MID_BYTES = 16


def _q(line: str) -> str:
    """Quote a line for an error message, shortened."""
    return repr(line if len(line) <= 100 else line[:97] + "...")


def _split_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) pairs, accepting CRLF and LF; blank lines skipped.

    A generator, so that a parser that hits a cap stops reading there.
    """
    if not isinstance(text, str):
        raise SdpError("SDP must be text")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SDP_BYTES:
        raise SdpLimitError(
            f"SDP is {size} bytes; the limit is {MAX_SDP_BYTES} bytes", "bytes", MAX_SDP_BYTES
        )
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r").rstrip(" \t")
        if not line:
            continue
        bad = _CONTROL_RE.search(line)
        if bad is not None:
            raise SdpError(
                f"line {number}: contains control character 0x{ord(bad.group()):02x}; "
                f"is this binary data rather than SDP? {_q(line)}"
            )
        yield number, line


def _int(value: str, lo: int, hi: int, what: str, number: int, line: str) -> int:
    if not value.isascii() or not value.isdigit() or not lo <= int(value) <= hi:
        raise SdpError(f"line {number}: {what} must be an integer {lo}-{hi}: {_q(line)}")
    return int(value)


@dataclass
class _Section:
    """Mutable parse state of one m-section; turned into a MediaSection at the end."""

    media: MediaSection
    line: int
    rtpmaps: dict[int, Codec] = field(default_factory=dict)
    fmtps: dict[int, dict[str, str]] = field(default_factory=dict)
    fbs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Session:
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    ice_options: list[str] = field(default_factory=list)
    extmaps: dict[int, str] = field(default_factory=dict)


def _parse_fmtp(params: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in params.split(";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        out[key.strip()] = value.strip() if eq else ""
    return out


def _transport_attr(
    name: str, value: str, number: int, line: str, target: _Session | MediaSection
) -> bool:
    """Handle attributes valid at session and media level; True when handled."""
    if name == "ice-ufrag":
        if not (4 <= len(value) <= 256 and _ICE_CHARS_RE.fullmatch(value)):
            raise SdpError(
                f"line {number}: a=ice-ufrag must be 4-256 characters of A-Z a-z 0-9 + / "
                f"(RFC 8839 §5.4): {_q(line)}"
            )
        target.ice_ufrag = value
    elif name == "ice-pwd":
        if not (22 <= len(value) <= 256 and _ICE_CHARS_RE.fullmatch(value)):
            raise SdpError(
                f"line {number}: a=ice-pwd must be 22-256 characters of A-Z a-z 0-9 + / "
                f"(RFC 8839 §5.4): {_q(line)}"
            )
        target.ice_pwd = value
    elif name == "fingerprint":
        parts = value.split()
        if len(parts) != 2:
            raise SdpError(
                f"line {number}: a=fingerprint must be '<hash> <hex:pairs>' (RFC 8122 §5): "
                f"{_q(line)}"
            )
        algo, digest = parts[0].lower(), parts[1]
        size = FINGERPRINT_SIZES.get(algo)
        if size is not None:
            if not _HEX_PAIRS_RE.fullmatch(digest) or len(digest) != size * 3 - 1:
                raise SdpError(
                    f"line {number}: a=fingerprint:{algo} must be {size} hex bytes separated "
                    f"by ':' (RFC 8122 §5): {_q(line)}"
                )
            target.fingerprints.append((algo, digest.upper()))
    elif name == "setup":
        if value not in _SETUP_VALUES:
            raise SdpError(
                f"line {number}: a=setup must be one of {', '.join(_SETUP_VALUES)} "
                f"(RFC 4145 §4): {_q(line)}"
            )
        target.setup = value
    elif name == "ice-options":
        target.ice_options.extend(value.replace(",", " ").split())  # libdatachannel: commas
    else:
        return False
    return True


def _parse_extmap(value: str, number: int, line: str) -> tuple[int, str]:
    """``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` (RFC 8285 §8)."""
    parts = value.split()
    if len(parts) < 2:
        raise SdpError(f"line {number}: a=extmap needs an id and a URI (RFC 8285 §8): {_q(line)}")
    ext_id = _int(parts[0].partition("/")[0], 1, 255, "extmap id", number, line)
    return ext_id, parts[1]


def _media_attr(
    sec: _Section, name: str, value: str, has_value: bool, number: int, line: str
) -> None:
    m = sec.media
    if _transport_attr(name, value, number, line, m):
        return
    if name == "mid":
        if not value:
            raise SdpError(f"line {number}: a=mid without a value: {_q(line)}")
        if len(value.encode()) > MAX_MID_BYTES:
            raise SdpError(
                f"line {number}: a=mid longer than {MAX_MID_BYTES} bytes cannot travel in the "
                f"RTP sdes:mid header extension (RFC 8843 §15.1, RFC 8285 §4.2): {_q(line)}"
            )
        m.mid = value
    elif name in DIRECTIONS and not has_value:
        m.direction = name
    elif name == "rtpmap":
        match = _RTPMAP_RE.fullmatch(value)
        if match is None:
            first = value.split(maxsplit=1)[0] if value.split() else ""
            if not first.isdigit():
                raise SdpError(f"line {number}: a=rtpmap without payload type: {_q(line)}")
            raise SdpError(
                f"line {number}: a=rtpmap must be '<pt> <name>/<clock rate>[/<channels>]' "
                f"(RFC 8866 §6.6): {_q(line)}"
            )
        pt = _int(match.group(1), 0, 127, "payload type", number, line)
        channels = int(match.group(4)) if match.group(4) else None
        sec.rtpmaps[pt] = Codec(pt, match.group(2), int(match.group(3)), channels)
    elif name == "fmtp":
        pt_text, _, params = value.partition(" ")
        if not pt_text.isdigit():
            raise SdpError(f"line {number}: a=fmtp without payload type: {_q(line)}")
        pt = _int(pt_text, 0, 127, "payload type", number, line)
        sec.fmtps[pt] = _parse_fmtp(params)
    elif name == "rtcp-fb":
        pt_text, _, fb = value.partition(" ")
        fb = " ".join(fb.split())
        if pt_text != "*":
            _int(pt_text, 0, 127, "payload type", number, line)
        if not fb:
            raise SdpError(f"line {number}: a=rtcp-fb without a feedback type: {_q(line)}")
        sec.fbs.setdefault(pt_text, []).append(fb)
    elif name == "extmap":
        ext_id, uri = _parse_extmap(value, number, line)
        m.extmaps[ext_id] = uri
    elif name == "ssrc":
        ssrc_text, _, rest = value.partition(" ")
        ssrc = _int(ssrc_text, 0, 0xFFFFFFFF, "SSRC", number, line)
        attrs = m.ssrcs.setdefault(ssrc, {})
        if rest:
            key, _, attr_value = rest.partition(":")
            attrs[key] = attr_value
    elif name == "ssrc-group":
        parts = value.split()
        if len(parts) < 2:
            raise SdpError(
                f"line {number}: a=ssrc-group needs semantics and SSRCs (RFC 5576 §4.2): {_q(line)}"
            )
        group = [_int(p, 0, 0xFFFFFFFF, "SSRC", number, line) for p in parts[1:]]
        m.ssrc_groups.append((parts[0], group))
    elif name in ("rtcp-mux", "rtcp-mux-only"):
        m.rtcp_mux = True
    elif name == "rtcp-rsize":
        m.rtcp_rsize = True
    elif name == "candidate":
        m.candidates.append(_check_candidate(value, number, line))
    elif name == "end-of-candidates":
        m.end_of_candidates = True
    elif name == "msid":
        m.msid = value
    elif name == "rid":
        parts = value.split(maxsplit=2)
        rid = parts[0] if parts else ""
        if not rid:
            raise SdpError(f"line {number}: a=rid without an id (RFC 8851 §10): {_q(line)}")
        if rid not in m.rid_params:
            m.rids.append(rid)
        direction = parts[1] if len(parts) > 1 else ""
        m.rid_params[rid] = (direction, parts[2] if len(parts) > 2 else "")
    elif name == "simulcast":
        m.simulcast = value
    elif name == "bundle-only":
        m.bundle_only = True
    elif name == "extmap-allow-mixed":
        m.extmap_allow_mixed = True


def _check_candidate(value: str, number: int, line: str) -> str:
    """Light check of an ICE candidate value (RFC 8839 §5.1); returns ``candidate:...``."""
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise SdpError(
            f"line {number}: a=candidate must be '<foundation> <component> <transport> "
            f"<priority> <address> <port> typ <type> ...' (RFC 8839 §5.1): {_q(line)}"
        )
    _int(parts[5], 0, 65535, "candidate port", number, line)
    return "candidate:" + " ".join(parts)


def _finish_section(sec: _Section) -> MediaSection:
    m = sec.media
    codecs: list[Codec] = []
    seen: set[int] = set()
    for fmt in m.formats:
        if not fmt.isdigit() or int(fmt) > 127 or int(fmt) in seen:
            continue
        pt = int(fmt)
        seen.add(pt)
        codec = sec.rtpmaps.get(pt)
        if codec is None:
            static = _STATIC_PT.get(pt)
            if static is None:
                continue
            codec = Codec(pt, static[0], static[1], static[2] if m.kind == "audio" else None)
        codec.fmtp = dict(sec.fmtps.get(pt, {}))
        codec.rtcp_fb = list(sec.fbs.get(str(pt), [])) + [
            fb for fb in sec.fbs.get("*", []) if fb not in sec.fbs.get(str(pt), [])
        ]
        codecs.append(codec)
    m.codecs = codecs
    return m


def parse_sdp(text: str) -> SessionDescription:
    """Parse an SDP offer (RFC 8866 §5) and check what every WebRTC offer must carry: ICE
    credentials (RFC 8839 §5.4) and a SHA-256 DTLS fingerprint (RFC 8122 §5, RFC 5763 §5) for each
    m-section in use. Raises :class:`SdpError`."""
    lines = _split_lines(text)
    first_no, first = next(lines, (0, ""))
    if not first_no:
        raise SdpError("SDP is empty")
    if first != "v=0":
        raise SdpError(
            f"line {first_no}: an SDP description must start with 'v=0', got {_q(first)}"
        )
    session = _Session()
    desc = SessionDescription(media=[])
    sections: list[_Section] = []
    current: _Section | None = None
    count = 1  # lines in the current part: session level, then each m= section
    for number, line in lines:
        count += 1
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise SdpError(f"line {number}: expected '<letter>=<value>', got {_q(line)}")
        kind, value = match.group(1), match.group(2)
        if kind == "v":
            raise SdpError(f"line {number}: a second 'v=' line; send one description: {_q(line)}")
        if kind == "m":
            if len(sections) >= MAX_MEDIA_SECTIONS:
                raise SdpLimitError(
                    f"line {number}: more than {MAX_MEDIA_SECTIONS} m= sections; relaycast "
                    f"accepts at most {MAX_MEDIA_SECTIONS} (browsers send 2 or 3)",
                    "m-sections",
                    MAX_MEDIA_SECTIONS,
                )
            current = _Section(_parse_m_line(value, number, line), number)
            sections.append(current)
            count = 1
            continue
        if current is None:
            if count > MAX_SESSION_LINES:
                raise SdpLimitError(
                    f"line {number}: more than {MAX_SESSION_LINES} lines before the first m= "
                    "line; relaycast accepts at most that many session-level lines",
                    "session-lines",
                    MAX_SESSION_LINES,
                )
        elif count > MAX_SECTION_LINES:
            raise SdpLimitError(
                f"line {number}: the m= section of line {current.line} has more than "
                f"{MAX_SECTION_LINES} lines; relaycast accepts at most that many per section",
                "section-lines",
                MAX_SECTION_LINES,
            )
        if kind == "o" and current is None:
            desc.origin = value
            continue
        if kind != "a":
            continue
        name, colon, attr_value = value.partition(":")
        if current is not None:
            _media_attr(current, name, attr_value.strip(), bool(colon), number, line)
            continue
        if _transport_attr(name, attr_value.strip(), number, line, session):
            continue
        if name == "group":
            parts = attr_value.split()
            if not parts:
                raise SdpError(f"line {number}: a=group without semantics: {_q(line)}")
            desc.groups.append((parts[0], parts[1:]))
            if parts[0] == "BUNDLE" and not desc.bundle:
                desc.bundle = parts[1:]
        elif name == "ice-lite":
            desc.ice_lite = True
        elif name == "extmap-allow-mixed":
            desc.extmap_allow_mixed = True
        elif name == "extmap":
            ext_id, uri = _parse_extmap(attr_value.strip(), number, line)
            session.extmaps[ext_id] = uri
    if not sections:
        raise SdpError("SDP has no m= line; offer at least one audio or video section")
    desc.media = [_finish_section(s) for s in sections]
    mids = [m.mid for m in desc.media if m.mid is not None]
    if len(mids) != len(set(mids)):
        raise SdpError(f"two m= sections share an a=mid value (RFC 8843 §7.2): {mids}")
    _fold_session(desc, session)
    _fold_bundle(desc)
    _validate(desc, sections)
    return desc


def _parse_m_line(value: str, number: int, line: str) -> MediaSection:
    """``m=<media> <port>[/<count>] <proto> <fmt> ...`` (RFC 8866 §5.14)."""
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(
            f"line {number}: m= line must be '<media> <port> <proto> <format>...' "
            f"(RFC 8866 §5.14): {_q(line)}"
        )
    port = _int(parts[1].partition("/")[0], 0, 65535, "m= port", number, line)
    return MediaSection(kind=parts[0], port=port, protocol=parts[2], formats=parts[3:])


def _fold_session(desc: SessionDescription, session: _Session) -> None:
    """Copy session-level transport attributes into sections that lack them (RFC 8866 §5)."""
    for m in desc.media:
        m.ice_ufrag = m.ice_ufrag or session.ice_ufrag
        m.ice_pwd = m.ice_pwd or session.ice_pwd
        if not m.fingerprints:
            m.fingerprints = list(session.fingerprints)
        m.setup = m.setup or session.setup
        if not m.ice_options:
            m.ice_options = list(session.ice_options)
        for ext_id, uri in session.extmaps.items():
            m.extmaps.setdefault(ext_id, uri)
        m.extmap_allow_mixed = m.extmap_allow_mixed or desc.extmap_allow_mixed


def _fold_bundle(desc: SessionDescription) -> None:
    """BUNDLEd sections share the tagged section's transport (RFC 8843 §7.1.3)."""
    by_mid = {m.mid: m for m in desc.media if m.mid is not None}
    for semantics, mids in desc.groups:
        if semantics != "BUNDLE":
            continue
        members = [by_mid[mid] for mid in mids if mid in by_mid]
        tag = next((m for m in members if m.ice_ufrag and m.fingerprints), None)
        if tag is None:
            continue
        for m in members:
            if m.ice_ufrag is None and m.ice_pwd is None:
                m.ice_ufrag, m.ice_pwd = tag.ice_ufrag, tag.ice_pwd
            if not m.fingerprints:
                m.fingerprints = list(tag.fingerprints)
            m.setup = m.setup or tag.setup


def _validate(desc: SessionDescription, sections: list[_Section]) -> None:
    bundled = {mid for sem, mids in desc.groups if sem == "BUNDLE" for mid in mids}
    for index, (m, sec) in enumerate(zip(desc.media, sections, strict=True)):
        if m.port == 0 and (m.mid is None or m.mid not in bundled):
            continue  # rejected by the offerer itself
        where = f"line {sec.line}: {m.describe(index)}"
        if m.ice_ufrag is None:
            raise SdpError(
                f"{where} has no a=ice-ufrag at session or media level; ICE credentials are "
                "required (RFC 8839 §5.4)"
            )
        if m.ice_pwd is None:
            raise SdpError(
                f"{where} has no a=ice-pwd at session or media level; ICE credentials are "
                "required (RFC 8839 §5.4)"
            )
        if not m.fingerprints:
            raise SdpError(
                f"{where} has no a=fingerprint; DTLS-SRTP needs the certificate fingerprint "
                "(RFC 5763 §5, RFC 8122 §5)"
            )
        if not any(algo == "sha-256" for algo, _ in m.fingerprints):
            found = ", ".join(sorted({algo for algo, _ in m.fingerprints}))
            raise SdpError(
                f"{where} has no a=fingerprint:sha-256 (found {found}); the server verifies the "
                "DTLS certificate with SHA-256 (RFC 8122 §5)"
            )


def parse_sdpfrag(text: str) -> tuple[str | None, str | None, list[str]]:
    """Parse an ``application/trickle-ice-sdpfrag`` body (RFC 8840 §9): returns
    ``(ice_ufrag, ice_pwd, candidates)``; candidates in ``"candidate:..."`` form, gathered from
    session level and every pseudo m= section. Raises :class:`SdpError`."""
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[str] = []
    for count, (number, line) in enumerate(_split_lines(text), start=1):
        if count > MAX_SDPFRAG_LINES:
            raise SdpLimitError(
                f"line {number}: an SDP fragment may have at most {MAX_SDPFRAG_LINES} lines",
                "sdpfrag-lines",
                MAX_SDPFRAG_LINES,
            )
        match = _LINE_RE.fullmatch(line)
        if match is None:
            raise SdpError(f"line {number}: expected '<letter>=<value>', got {_q(line)}")
        if match.group(1) != "a":
            continue
        name, _, value = match.group(2).partition(":")
        value = value.strip()
        holder = _Session()
        if name in ("ice-ufrag", "ice-pwd"):
            _transport_attr(name, value, number, line, holder)
            ufrag = holder.ice_ufrag or ufrag
            pwd = holder.ice_pwd or pwd
        elif name == "candidate":
            candidates.append(_check_candidate(value, number, line))
    return ufrag, pwd, candidates
