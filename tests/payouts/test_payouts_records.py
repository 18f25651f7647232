"""Records: exact inputs only, and the allocation invariant enforced."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from payouts.records import Allocation, BlockRecord, ShareRecord, to_fraction


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, Fraction(3)),
        ("1.5", Fraction(3, 2)),
        ("3/2", Fraction(3, 2)),
        (" 1e3 ", Fraction(1000)),
        (Decimal("0.1"), Fraction(1, 10)),
        (Fraction(7, 3), Fraction(7, 3)),
    ],
)
def test_to_fraction_reads_exact_inputs(value: object, expected: Fraction) -> None:
    assert to_fraction(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0.1, True, None, Decimal("NaN")])
def test_to_fraction_refuses_inexact_or_odd_inputs(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_fraction(value)  # type: ignore[arg-type]


def test_share_record_converts_and_scores() -> None:
    share = ShareRecord("alice", "512", 1024)  # type: ignore[arg-type]
    assert share.difficulty == Fraction(512)
    assert share.network_difficulty == Fraction(1024)
    assert share.score == Fraction(1, 2)


@pytest.mark.parametrize(("d", "nd"), [(0, 1), (-1, 1), (1, 0), (0.5, 1)])
def test_share_record_refuses_bad_difficulty(d: object, nd: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        ShareRecord("alice", d, nd)  # type: ignore[arg-type]


def test_block_value_is_subsidy_plus_fees() -> None:
    block = BlockRecord(height=840_000, subsidy=312_500_000, fees=12_345_678, finder="alice")
    assert block.value == 324_845_678
    with pytest.raises(ValueError):
        BlockRecord(height=1, subsidy=-1, fees=0, finder="alice")
    with pytest.raises(TypeError):
        BlockRecord(height=1, subsidy=1.5, fees=0, finder="alice")  # type: ignore[arg-type]


def _allocation(**overrides: object) -> Allocation:
    fields: dict[str, object] = dict(
        scheme="prop",
        height=1,
        block_value=100,
        fee_base=100,
        pool_fee=2,
        kept_tx_fees=0,
        pot=98,
        miners={"a": 49, "b": 49},
        undistributed=0,
        scores={"a": Fraction(1), "b": Fraction(1)},
        score_total=Fraction(2),
    )
    fields.update(overrides)
    return Allocation(**fields)  # type: ignore[arg-type]


def test_allocation_must_sum_to_block_value() -> None:
    assert _allocation().total == 100
    with pytest.raises(ValueError):
        _allocation(miners={"a": 49, "b": 50})
    with pytest.raises(ValueError):
        _allocation(miners={"a": 99, "b": -1})


def test_allocation_json_and_entitlement() -> None:
    allocation = _allocation()
    assert allocation.entitlement("a") == 49
    assert allocation.to_json()["miners"] == {"a": 49, "b": 49}
    assert allocation.to_json()["scores"] == {"a": "1", "b": "1"}
