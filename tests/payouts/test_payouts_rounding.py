"""Largest-remainder rounding: hand-worked splits (reference §9)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from payouts.rounding import largest_remainder


def test_even_split_leftover_goes_to_smallest_key_on_full_tie() -> None:
    # 10/3 each = 3 + 1/3; one satoshi left; equal remainders and weights -> key "a".
    assert largest_remainder(10, {"c": 1, "b": 1, "a": 1}) == {"a": 4, "b": 3, "c": 3}


def test_leftover_goes_to_largest_remainder() -> None:
    # a: 10/3 = 3.33, b: 20/3 = 6.67; floors 3 + 6 = 9; the leftover goes to b (.67 > .33).
    assert largest_remainder(10, {"a": 1, "b": 2}) == {"a": 3, "b": 7}


def test_equal_remainders_go_to_larger_weight_before_key() -> None:
    # a: 2/4 = 0.5, b: 6/4 = 1.5; floors 0 + 1; remainders tie at 1/2 -> larger weight b.
    assert largest_remainder(2, {"a": 1, "b": 3}) == {"a": 0, "b": 2}


def test_exact_fraction_weights() -> None:
    # weights 1/3, 1/6, 1/2 of 7: quotas 7/3 = 2.33, 7/6 = 1.17, 7/2 = 3.5;
    # floors 2 + 1 + 3 = 6; leftover to z (.5).
    weights = {"x": Fraction(1, 3), "y": Fraction(1, 6), "z": Fraction(1, 2)}
    assert largest_remainder(7, weights) == {"x": 2, "y": 1, "z": 4}


def test_zero_weight_gets_nothing_and_zero_total() -> None:
    assert largest_remainder(5, {"a": 0, "b": 1}) == {"a": 0, "b": 5}
    assert largest_remainder(0, {"a": 0}) == {"a": 0}
    assert largest_remainder(0, {}) == {}


@pytest.mark.parametrize(
    ("total", "weights", "error"),
    [
        (5, {}, ValueError),
        (5, {"a": 0}, ValueError),
        (5, {"a": -1, "b": 2}, ValueError),
        (-1, {"a": 1}, ValueError),
        (1.0, {"a": 1}, TypeError),
    ],
)
def test_refuses_impossible_splits(total: object, weights: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        largest_remainder(total, weights)  # type: ignore[arg-type]
