"""Hypothesis properties of the concentration metrics, checked against
independent oracles (brute force, the pairwise Gini definition)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction as F

from hypothesis import given, settings
from hypothesis import strategies as st

from pool.concentration import (
    concentration_report,
    effective_entities_entropy,
    effective_entities_hhi,
    gini,
    hhi,
    nakamoto_coefficient,
    shannon_entropy,
    top_k_share,
)

counts = st.lists(st.integers(0, 10**6), min_size=1, max_size=25).filter(lambda xs: sum(xs) > 0)
small_counts = st.lists(st.integers(0, 50), min_size=1, max_size=8).filter(lambda xs: sum(xs) > 0)
fractions = st.lists(st.builds(F, st.integers(0, 1000), st.integers(1, 97)), min_size=1, max_size=15).filter(
    lambda xs: sum(xs) > 0
)
floats = st.lists(
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False), min_size=1, max_size=20
).filter(lambda xs: sum(xs) > 0)
factors = st.fractions(min_value=F(1, 1000), max_value=1000).filter(lambda f: f > 0)


def active(xs: list) -> int:
    return sum(1 for x in xs if x > 0)


@given(counts)
def test_hhi_bounds(xs: list[int]) -> None:
    n = active(xs)
    value = hhi(xs)
    assert F(10000, n) <= value <= 10000
    assert (value == F(10000, n)) == (len({x for x in xs if x > 0}) == 1)


@given(fractions)
def test_hhi_bounds_for_fractions(xs: list[F]) -> None:
    assert F(10000, active(xs)) <= hhi(xs) <= 10000


@given(small_counts)
def test_nakamoto_matches_brute_force(xs: list[int]) -> None:
    total = sum(xs)
    brute = min(
        k for k in range(1, len(xs) + 1) if any(2 * sum(c) > total for c in itertools.combinations(xs, k))
    )
    assert nakamoto_coefficient(xs) == brute
    assert 1 <= nakamoto_coefficient(xs) <= active(xs)


@given(counts)
def test_gini_matches_pairwise_definition(xs: list[int]) -> None:
    n = len(xs)
    pairwise = F(sum(abs(a - b) for a in xs for b in xs), 2 * n * sum(xs))
    assert gini(xs) == pairwise
    assert 0 <= gini(xs) <= 1 - F(1, n) < 1


@given(counts, factors)
def test_invariant_to_scaling(xs: list[int], factor: F) -> None:
    scaled = [x * factor for x in xs]
    assert hhi(scaled) == hhi(xs)
    assert nakamoto_coefficient(scaled) == nakamoto_coefficient(xs)
    assert gini(scaled) == gini(xs)
    assert effective_entities_hhi(scaled) == effective_entities_hhi(xs)
    for k in (1, 2, 5):
        assert top_k_share(scaled, k) == top_k_share(xs, k)
    assert math.isclose(shannon_entropy(scaled), shannon_entropy(xs), rel_tol=1e-12, abs_tol=1e-12)


@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=12)
    .filter(lambda xs: sum(xs) > 0)
    .flatmap(lambda xs: st.tuples(st.just(xs), st.permutations(xs)))
)
def test_invariant_to_order(pair: tuple[list[int], list[int]]) -> None:
    xs, ys = pair
    names = [f"e{i}" for i in range(len(xs))]
    a = concentration_report(dict(zip(names, xs, strict=True)))
    b = concentration_report(dict(zip(names, ys, strict=True)))
    for field in ("hhi", "nakamoto", "gini", "effective_entities_hhi", "top1", "top2", "top4", "top5"):
        assert getattr(a, field) == getattr(b, field)
    assert math.isclose(a.entropy_bits, b.entropy_bits, rel_tol=1e-12, abs_tol=1e-12)


@given(counts)
def test_hill_numbers_ordered(xs: list[int]) -> None:
    n = active(xs)
    n2 = effective_entities_hhi(xs)
    n1 = effective_entities_entropy(xs)
    assert 1 <= n2 <= n
    assert float(n2) <= n1 * (1 + 1e-12)
    assert n1 <= n * (1 + 1e-12)
    assert 0 <= shannon_entropy(xs) <= math.log2(n) + 1e-12


@given(counts)
def test_top_k_monotone_and_at_least_average(xs: list[int]) -> None:
    n = len(xs)
    shares = [top_k_share(xs, k) for k in range(n + 2)]
    assert shares[0] == 0
    assert all(a <= b for a, b in itertools.pairwise(shares))
    assert shares[n] == shares[n + 1] == 1
    for k in range(1, n + 1):
        assert shares[k] >= F(k, n)  # the k largest hold at least their average share


@given(counts, st.integers(1, 5))
def test_zero_entities_change_only_gini(xs: list[int], zeros: int) -> None:
    padded = xs + [0] * zeros
    assert hhi(padded) == hhi(xs)
    assert nakamoto_coefficient(padded) == nakamoto_coefficient(xs)
    assert top_k_share(padded, 3) == top_k_share(xs, 3)
    assert shannon_entropy(padded) == shannon_entropy(xs)
    assert gini(padded) >= gini(xs)


@settings(max_examples=60)
@given(floats)
def test_float_inputs_give_floats_within_bounds(xs: list[float]) -> None:
    n = active(xs)
    value = hhi(xs)
    assert isinstance(value, float)
    assert 10000 / n * (1 - 1e-12) <= value <= 10000 * (1 + 1e-12)
    assert 1 <= nakamoto_coefficient(xs) <= n
    g = gini(xs)
    assert isinstance(g, float) and 0 <= g < 1
