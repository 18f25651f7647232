"""PPS operator risk and luck against the reference's table (§4)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from payouts.records import ShareRecord
from payouts.risk import expected_blocks, luck, required_reserve, round_effort, ruin_exponent, ruin_probability

B = 100_000_000  # reserve ratios R/B do not depend on B


@pytest.mark.parametrize(
    ("fee_bps", "ruin", "exact_ratio", "approx_ratio"),
    [
        (200, "0.01", "113.6", "115.1"),
        (200, "0.001", "170.4", "172.7"),
        (400, "0.001", "84.0", "86.3"),
        (500, "0.001", "66.8", "69.1"),
    ],
)
def test_reserve_matches_reference_table(fee_bps: int, ruin: str, exact_ratio: str, approx_ratio: str) -> None:
    exact = Decimal(required_reserve(B, fee_bps, ruin)) / B
    approx = Decimal(required_reserve(B, fee_bps, ruin, exact=False)) / B
    assert round(exact, 1) == Decimal(exact_ratio)
    assert round(approx, 1) == Decimal(approx_ratio)


def test_reserve_in_btc_at_reference_block_value() -> None:
    # 2 %, 1 % ruin, B = 3.2484 BTC -> about 369 BTC.
    reserve = required_reserve(324_840_000, 200, Fraction(1, 100))
    assert round(Decimal(reserve) / 100_000_000) == 369


def test_ruin_probability_monte_carlo_case() -> None:
    # f = 5 %, R = 20 B: exact formula 0.1262, diffusion exp(-2) = 0.1353.
    assert round(ruin_probability(20 * B, B, 500), 4) == Decimal("0.1262")
    assert round(ruin_probability(20 * B, B, 500, exact=False), 4) == Decimal("0.1353")
    assert ruin_exponent(500, exact=False) == Decimal("0.1")


def test_risk_refuses_meaningless_inputs() -> None:
    with pytest.raises(ValueError):
        ruin_exponent(0)
    with pytest.raises(ValueError):
        required_reserve(B, 200, 1)
    with pytest.raises(ValueError):
        required_reserve(0, 200, "0.01")


def test_luck_and_effort() -> None:
    d = Fraction(1_000_000)
    shares = [ShareRecord("a", d / 2, d), ShareRecord("b", d / 4, d), ShareRecord("c", 2 * d, 2 * d)]
    # 0.5 + 0.25 + 1 = 1.75 blocks expected; 2 found -> 2 / 1.75 = 8/7.
    assert expected_blocks(shares) == Fraction(7, 4)
    assert luck(2, shares) == Fraction(8, 7)
    assert round_effort(shares[:2]) == Fraction(3, 4)
    with pytest.raises(ValueError):
        luck(1, [])
