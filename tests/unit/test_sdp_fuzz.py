"""Hypothesis: whatever text arrives, the SDP layer raises only SdpError/NegotiationError."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycast.sdp import (
    LocalTransport,
    NegotiationError,
    SdpError,
    build_answer,
    negotiate_play,
    negotiate_publish,
    parse_sdp,
    parse_sdpfrag,
)

SAMPLES = Path(__file__).parent / "sdp_samples"
SAMPLE_LINES = sorted(
    {line for p in SAMPLES.glob("*.sdp") for line in p.read_bytes().decode().splitlines()}
)

lines = st.one_of(
    st.sampled_from(SAMPLE_LINES),
    st.text(max_size=60),
    st.builds(
        lambda letter, body: f"{letter}={body}",
        st.sampled_from("vosmcatb"),
        st.text(max_size=40),
    ),
    st.builds(
        lambda name, body: f"a={name}:{body}",
        st.sampled_from(
            [
                "rtpmap",
                "fmtp",
                "rtcp-fb",
                "extmap",
                "ssrc",
                "ssrc-group",
                "ice-ufrag",
                "ice-pwd",
                "fingerprint",
                "setup",
                "mid",
                "candidate",
                "group",
                "rid",
                "simulcast",
                "msid",
            ]
        ),
        st.text(max_size=40),
    ),
)


LOCAL = LocalTransport("srvU", "serverpasswordserverpw", ":".join(["AB"] * 32), [("127.0.0.1", 1)])


def _exercise(text: str) -> None:
    try:
        desc = parse_sdp(text)
    except SdpError as exc:
        assert str(exc)
        return
    for run in (lambda: negotiate_publish(desc), lambda: negotiate_play(desc, None)):
        try:
            neg = run()
        except NegotiationError as exc:
            assert exc.status == 422 and str(exc)
            continue
        answer = parse_sdp(build_answer(desc, neg, LOCAL))  # our answers always parse
        assert len(answer.media) == len(desc.media)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, max_size=40), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_random_lines(body: list[str], sep: str, with_version: bool) -> None:
    text = sep.join((["v=0"] if with_version else []) + body)
    _exercise(text)
    try:
        ufrag, pwd, cands = parse_sdpfrag(text)
    except SdpError as exc:
        assert str(exc)
    else:
        assert all(c.startswith("candidate:") for c in cands)
        assert ufrag is None or (4 <= len(ufrag) <= 256)
        assert pwd is None or (22 <= len(pwd) <= 256)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    _exercise(text)
    _exercise("v=0\n" + text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_binary_junk(data: bytes) -> None:
    _exercise(data.decode("latin-1"))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_samples(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(SAMPLES.glob("*.sdp"))))
    src = path.read_bytes().decode().split("\r\n" if b"\r\n" in path.read_bytes() else "\n")
    index = data.draw(st.integers(0, len(src) - 1))
    replacement = data.draw(lines)
    src[index] = replacement
    _exercise("\n".join(src))
