"""Simulcast in SDP: ``a=simulcast`` (RFC 8853 §5.1) and ``a=rid`` (RFC 8851 §10).

A publisher that sends several encodings of one video source lists them as RTP stream ids::

    a=rid:f send
    a=rid:h send
    a=rid:q send
    a=simulcast:send f;h;q

Chromium writes exactly that (in the order of ``sendEncodings``); Firefox the same, with
directional ``a=extmap:N/sendonly`` lines for the RID extensions, and older Firefox releases the
draft syntax ``a=simulcast: send rid=f;h;q``; OBS 32+ (libdatachannel) numbers its layers
(``a=rid:0 send``...) and declares one ``a=ssrc`` per layer. All are accepted here. The answer
mirrors the accepted streams: ``a=rid:<id> recv`` and ``a=simulcast:recv f;h;q`` (§5.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from relaycast.sdp.model import MediaSection

URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

#: most layers accepted from one publisher (browsers send 3, OBS at most 4)
MAX_LAYERS = 4
#: an RTP stream id is 1-16 alphanumeric characters, '-' or '_' (RFC 8851 §10, and it must
#: fit the one-byte header extension, RFC 8285 §4.2)
MAX_RID_LENGTH = 16


@dataclass(frozen=True)
class SimulcastStream:
    """One stream of a simulcast description: its first alternative's rid and whether the
    offerer starts it paused (``~``, RFC 8853 §5.1)."""

    rid: str
    paused: bool = False


def parse_simulcast(value: str) -> dict[str, list[SimulcastStream]]:
    """``a=simulcast`` value -> direction (``"send"``/``"recv"``) -> streams in order.

    Accepts RFC 8853 (``send f;h;q``, alternatives ``1,2``, paused ``~h``) and the draft-03
    form Firefox wrote until 2019 (``send rid=f;h;q``). Where a stream lists alternatives the
    first is taken (RFC 8853 §5.3.2 lets the answerer pick). Malformed parts are skipped: the
    result lists what can be used."""
    out: dict[str, list[SimulcastStream]] = {}
    words = value.split()
    index = 0
    while index < len(words):
        direction = words[index].lower()
        if direction not in ("send", "recv") or index + 1 >= len(words):
            index += 1
            continue
        streams_text = words[index + 1]
        index += 2
        if streams_text.startswith("rid=") or streams_text.startswith("pt="):
            if streams_text.startswith("pt="):
                continue  # draft syntax by payload type: nothing we can map
            streams_text = streams_text[4:]
        streams = out.setdefault(direction, [])
        for stream in streams_text.split(";"):
            first = stream.split(",")[0].strip()
            paused = first.startswith("~")
            rid = first.lstrip("~")
            if valid_rid(rid) and all(s.rid != rid for s in streams):
                streams.append(SimulcastStream(rid, paused))
    return out


def valid_rid(rid: str) -> bool:
    return 0 < len(rid) <= MAX_RID_LENGTH and all(c.isalnum() or c in "-_" for c in rid)


def _rid_payload_types(params: str) -> set[int] | None:
    """The ``pt=`` restriction of an ``a=rid`` line (RFC 8851 §4), None when there is none."""
    for part in params.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "pt":
            return {int(p) for p in value.split(",") if p.strip().isdigit()}
    return None


def send_layers(m: MediaSection, payload_type: int) -> list[str]:
    """The rids of the encodings ``m`` offers to send that we accept, in the offerer's order
    of preference (the ``a=simulcast`` list, RFC 8853 §5.2; rids it does not name follow in
    ``a=rid`` order). A rid restricted to payload types without ``payload_type`` is left out,
    and so is every layer past :data:`MAX_LAYERS`. Empty when ``m`` is not simulcast."""
    declared = [
        rid
        for rid in m.rids
        if valid_rid(rid) and m.rid_params.get(rid, ("send", ""))[0] in ("send", "")
    ]
    if m.simulcast is None:
        ordered = declared
    else:
        listed = [s.rid for s in parse_simulcast(m.simulcast).get("send", [])]
        if not m.rids:  # a=simulcast without a=rid lines (draft-era clients): trust the list
            declared = listed
        ordered = [r for r in listed if r in declared] + [r for r in declared if r not in listed]
    layers: list[str] = []
    for rid in ordered:
        allowed = _rid_payload_types(m.rid_params.get(rid, ("", ""))[1])
        if allowed is not None and payload_type not in allowed:
            continue
        layers.append(rid)
    if len(layers) < 2:
        return []  # one encoding: answered without simulcast, the offerer sends it alone
    return layers[:MAX_LAYERS]


def answer_lines(rids: list[str]) -> list[str]:
    """``a=rid:<id> recv`` for each accepted layer and the ``a=simulcast:recv`` line."""
    if not rids:
        return []
    return [f"a=rid:{rid} recv" for rid in rids] + ["a=simulcast:recv " + ";".join(rids)]
