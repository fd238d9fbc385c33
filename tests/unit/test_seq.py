"""Wrap-around arithmetic (RFC 3550 Appendix A.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relaycast.rtp.seq import SeqUnwrapper, seq_diff, seq_newer, ts_diff, ts_newer


def test_seq_diff_basic_and_wrap() -> None:
    assert seq_diff(10, 5) == 5
    assert seq_diff(5, 10) == -5
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(2, 65534) == 4
    assert seq_diff(32768, 0) == -32768
    assert seq_diff(32767, 0) == 32767


def test_seq_newer() -> None:
    assert seq_newer(1, 0)
    assert seq_newer(0, 65535)
    assert not seq_newer(65535, 0)
    assert not seq_newer(7, 7)


def test_ts_diff_and_newer() -> None:
    assert ts_diff(0, 0xFFFFFFFF) == 1
    assert ts_diff(0xFFFFFFFF, 0) == -1
    assert ts_diff(90000, 0) == 90000
    assert ts_diff(0x80000000, 0) == -0x80000000
    assert ts_newer(3000, 0xFFFFF000)
    assert not ts_newer(0xFFFFF000, 3000)


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_diff_inverts_addition(b: int, d: int) -> None:
    assert seq_diff((b + d) & 0xFFFF, b) == d


@given(st.integers(0, 0xFFFFFFFF), st.integers(-(2**31), 2**31 - 1))
def test_ts_diff_inverts_addition(b: int, d: int) -> None:
    assert ts_diff((b + d) & 0xFFFFFFFF, b) == d


def test_unwrapper_wraps_forward() -> None:
    u = SeqUnwrapper()
    assert u.highest is None
    out = [u.unwrap(s) for s in (65533, 65534, 65535, 0, 1, 2)]
    assert out == [65533, 65534, 65535, 65536, 65537, 65538]
    assert u.highest == 65538


def test_unwrapper_reorder_across_wrap() -> None:
    u = SeqUnwrapper()
    assert u.unwrap(65534) == 65534
    assert u.unwrap(1) == 65537
    assert u.unwrap(65535) == 65535  # late packet from before the wrap
    assert u.unwrap(0) == 65536
    assert u.unwrap(2) == 65538
    assert u.highest == 65538


def test_unwrapper_many_cycles_and_reset() -> None:
    u = SeqUnwrapper()
    value = 0
    for i in range(5 * 65536 // 1000):
        value = i * 1000
        assert u.unwrap(value & 0xFFFF) == value
    u.reset()
    assert u.unwrap(5) == 5


@given(st.integers(0, 0xFFFF), st.lists(st.integers(-300, 1000), min_size=1, max_size=200))
def test_unwrapper_matches_true_extended_sequence(start: int, steps: list[int]) -> None:
    """Feeding seq16 of a true sequence that never jumps by 2**15 recovers it exactly."""
    u = SeqUnwrapper()
    true = start
    assert u.unwrap(true & 0xFFFF) == true
    highest = true
    for step in steps:
        # reordering: a packet up to 300 behind the highest one, otherwise moving forward
        true = highest + step
        assert u.unwrap(true & 0xFFFF) == true
        highest = max(highest, true)
