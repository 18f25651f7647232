"""Splitting whole satoshis by exact weights without creating or losing one.

Largest remainder (Hamilton): floor every exact quota, then hand the
leftover satoshis, one each, to the largest fractional parts. The result sums
exactly to the total, every amount is within one satoshi of its exact quota,
and the tie-break makes it independent of input order.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import TypeVar

from .records import check_sat

K = TypeVar("K")


def largest_remainder(total: int, weights: Mapping[K, Fraction | int]) -> dict[K, int]:
    """Split ``total`` satoshis in proportion to ``weights``.

    Leftover satoshis go to the largest fractional remainders; ties go to the
    larger weight, then to the smaller key (keys must be mutually orderable).
    Zero weights receive nothing. Raises ``ValueError`` for negative weights
    or when a positive total has no positive weight to go to.
    """
    check_sat(total, "total")
    exact = {key: Fraction(weight) for key, weight in weights.items()}
    if any(weight < 0 for weight in exact.values()):
        raise ValueError("weights must not be negative")
    weight_sum = sum(exact.values(), Fraction(0))
    if weight_sum == 0:
        if total:
            raise ValueError(f"cannot split {total} sat: no positive weight")
        return {key: 0 for key in exact}

    amounts: dict[K, int] = {}
    remainders: dict[K, Fraction] = {}
    for key, weight in exact.items():
        quota = total * weight / weight_sum
        amounts[key] = quota.numerator // quota.denominator
        remainders[key] = quota - amounts[key]
    leftover = total - sum(amounts.values())
    order = sorted(exact, key=lambda key: (-remainders[key], -exact[key], key))
    for key in order[:leftover]:
        amounts[key] += 1
    return amounts
