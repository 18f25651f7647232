"""NetworkWindow: incremental rolling window with reorgs, against a naive model."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction as F

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.attribution import DEFAULT_WINDOW, UNKNOWN_ENTITY, Attribution, NetworkWindow
from pool.concentration import concentration_report


def test_append_and_count() -> None:
    w = NetworkWindow(size=10)
    assert w.tip is None and len(w) == 0 and w.counts() == {}
    for height, entity in enumerate(["A", "B", "A", "C"], start=100):
        w.add(height, entity)
    assert w.tip == 103 and len(w) == 4
    assert w.counts() == {"A": 2, "B": 1, "C": 1}
    assert w.blocks() == [(100, "A"), (101, "B"), (102, "A"), (103, "C")]


def test_default_window_is_one_week() -> None:
    w = NetworkWindow()
    assert w.size == DEFAULT_WINDOW == 1008
    for height in range(1100):
        w.add(height, "A" if height % 2 else "B")
    assert len(w) == 1008
    assert w.blocks()[0][0] == 1100 - 1008
    assert w.counts() == {"A": 504, "B": 504}


def test_eviction_keeps_last_n() -> None:
    w = NetworkWindow(size=3)
    for height, entity in zip(range(10, 15), "ABCDE", strict=True):
        w.add(height, entity)
    assert w.blocks() == [(12, "C"), (13, "D"), (14, "E")]
    assert w.counts() == {"C": 1, "D": 1, "E": 1}


def test_reorg_replaces_heights_at_and_above() -> None:
    w = NetworkWindow(size=5)
    for height, entity in zip(range(10, 15), "AABBC", strict=True):
        w.add(height, entity)
    w.add(12, "X")  # reorg at 12: 12, 13, 14 go
    assert w.blocks() == [(10, "A"), (11, "A"), (12, "X")]
    assert w.counts() == {"A": 2, "X": 1}
    assert w.tip == 12
    w.add(13, "Y")
    assert w.counts() == {"A": 2, "X": 1, "Y": 1}


def test_reorg_below_window_start_clears_it() -> None:
    w = NetworkWindow(size=3)
    for height in range(10, 16):
        w.add(height, "A")
    w.add(5, "B")
    assert w.blocks() == [(5, "B")]


def test_disconnect_from() -> None:
    w = NetworkWindow(size=5)
    for height, entity in zip(range(5), "ABCDE", strict=True):
        w.add(height, entity)
    assert w.disconnect_from(3) == 2
    assert w.tip == 2 and w.counts() == {"A": 1, "B": 1, "C": 1}
    assert w.disconnect_from(10) == 0
    assert w.disconnect_from(0) == 3
    assert w.tip is None and w.counts() == {}


def test_gap_and_bad_input_rejected() -> None:
    w = NetworkWindow(size=5)
    w.add(10, "A")
    with pytest.raises(ValueError):
        w.add(12, "B")
    with pytest.raises(ValueError):
        w.add(-1, "B")
    with pytest.raises(ValueError):
        w.add(11, "")
    for size in (0, -1, True):
        with pytest.raises(ValueError):
            NetworkWindow(size=size)
    with pytest.raises(ValueError):
        NetworkWindow(unknown_policy="merge")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("policy", "expected", "after_reorg"),
    [
        ("each", {"unknown:aa": 1, "unknown:bb": 1, "Foundry USA": 2}, {"unknown:aa": 1, "Foundry USA": 2}),
        ("one", {UNKNOWN_ENTITY: 2, "Foundry USA": 2}, {UNKNOWN_ENTITY: 1, "Foundry USA": 2}),
        ("exclude", {"Foundry USA": 2}, {"Foundry USA": 2}),
    ],
)
def test_unknown_policies(policy: str, expected: dict[str, int], after_reorg: dict[str, int]) -> None:
    w = NetworkWindow(size=10, unknown_policy=policy)  # type: ignore[arg-type]
    w.add(1, Attribution("unknown:aa", None, "unknown", None))
    w.add(2, "Foundry USA")
    w.add(3, "unknown:bb")
    w.add(4, "Foundry USA")
    assert w.unknown_policy == policy
    assert w.counts() == expected
    assert len(w) == 4  # excluded blocks still occupy the window
    w.add(3, "Foundry USA")  # reorg at 3: unknown:bb and the block at 4 go
    assert w.counts() == after_reorg
    assert len(w) == 3


def test_each_unknown_lowers_concentration() -> None:
    # 2 Foundry + 2 unknown: each-own-entity -> HHI 2500+625+625; one entity -> 2500+2500
    each = NetworkWindow(size=10)
    one = NetworkWindow(size=10, unknown_policy="one")
    for w in (each, one):
        for height, entity in enumerate(["F", "unknown:1", "F", "unknown:2"]):
            w.add(height, entity)
    assert each.report().hhi == 3750
    assert one.report().hhi == 5000
    assert each.report().nakamoto == 2  # F alone is exactly 50 %
    assert each.report().top1 == F(1, 2)


def test_report_is_concentration_of_counts() -> None:
    w = NetworkWindow(size=6)
    for height, entity in enumerate("AAABBC"):
        w.add(height, entity)
    report = w.report(guideline="2023")
    assert report == concentration_report({"A": 3, "B": 2, "C": 1}, guideline="2023")
    assert report.hhi == F(35000, 9)


ops = st.lists(
    st.tuples(
        st.sampled_from(["next", "reorg", "disconnect"]),
        st.integers(0, 12),
        st.sampled_from(["A", "B", "C", "unknown:x", "unknown:y"]),
    ),
    max_size=60,
)


@given(st.integers(1, 8), st.sampled_from(["each", "one", "exclude"]), ops)
def test_matches_naive_model(size: int, policy: str, steps: list[tuple[str, int, str]]) -> None:
    w = NetworkWindow(size=size, unknown_policy=policy)  # type: ignore[arg-type]
    chain: dict[int, str] = {}  # height -> entity, contiguous
    for op, depth, entity in steps:
        tip = max(chain) if chain else None
        if op == "next" or tip is None:
            height = 0 if tip is None else tip + 1
        elif op == "reorg":
            height = max(0, tip - depth)
        else:
            cut = max(0, tip - depth)
            assert w.disconnect_from(cut) == sum(1 for h in chain if h >= cut)
            chain = {h: e for h, e in chain.items() if h < cut}
            continue
        w.add(height, entity)
        chain = {h: e for h, e in chain.items() if h < height}
        chain[height] = entity
        chain = {h: e for h, e in chain.items() if h > height - size}
    expected = sorted(chain.items())
    assert w.blocks() == expected
    model: Counter[str] = Counter()
    for _, entity in expected:
        if entity.startswith("unknown:"):
            if policy == "each":
                model[entity] += 1
            elif policy == "one":
                model[UNKNOWN_ENTITY] += 1
        else:
            model[entity] += 1
    assert w.counts() == dict(model)
