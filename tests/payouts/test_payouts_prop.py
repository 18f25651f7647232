"""PROP, worked by hand. Round: alice 1000, bob 3000, alice 2000, carol 4000 (solver).

Difficulty sums: alice 3000, bob 3000, carol 4000 of 10,000.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from payouts.prop import prop
from payouts.records import BlockRecord, ShareRecord
from payouts.rounds import round_shares, shares_until

D = Fraction(1_000_000)
ROUND = [
    ShareRecord("alice", Fraction(1000), D),
    ShareRecord("bob", Fraction(3000), D),
    ShareRecord("alice", Fraction(2000), D),
    ShareRecord("carol", Fraction(4000), D),
]


def _block(value: int, fees: int = 0) -> BlockRecord:
    return BlockRecord(height=10, subsidy=value - fees, fees=fees, finder="carol")


def test_exact_split() -> None:
    # fee 1 % of 1,000,000 = 10,000; pot 990,000 * 0.3 / 0.3 / 0.4.
    allocation = prop(ROUND, _block(1_000_000), fee_bps=100)
    assert allocation.miners == {"alice": 297_000, "bob": 297_000, "carol": 396_000}
    assert allocation.pool_fee == 10_000


def test_one_spare_satoshi() -> None:
    # B = 1,000,001: fee floor(10,000.01) = 10,000; pot 990,001:
    # alice 297,000.3, bob 297,000.3, carol 396,000.4 -> spare satoshi to carol.
    allocation = prop(ROUND, _block(1_000_001), fee_bps=100)
    assert allocation.miners == {"alice": 297_000, "bob": 297_000, "carol": 396_001}


def test_tie_broken_by_miner_name() -> None:
    # B = 1,000,002: fee 10,000; pot 990,002: alice .6, bob .6, carol .8 over the floors
    # (297,000 / 297,000 / 396,000); two spare: carol, then alice over bob (same weight, name).
    allocation = prop(ROUND, _block(1_000_002), fee_bps=100)
    assert allocation.miners == {"alice": 297_001, "bob": 297_000, "carol": 396_001}
    assert prop(list(reversed(ROUND)), _block(1_000_002), fee_bps=100).miners == allocation.miners


def test_tx_fees_kept() -> None:
    # subsidy 1,000,000 + fees 2,000; kept: fee on 1,000,000 = 10,000; pool keeps 12,000 in all.
    allocation = prop(ROUND, _block(1_002_000, fees=2_000), fee_bps=100, share_tx_fees=False)
    assert allocation.miners == {"alice": 297_000, "bob": 297_000, "carol": 396_000}
    assert allocation.pool_fee == 12_000


def test_weight_by_score_differs_after_retarget() -> None:
    # alice 100 @ D 1000 (score 0.1), bob 100 @ D 2000 (0.05); B = 3000, no fee.
    shares = [ShareRecord("alice", Fraction(100), Fraction(1000)), ShareRecord("bob", Fraction(100), Fraction(2000))]
    block = BlockRecord(height=1, subsidy=3000, fees=0, finder="bob")
    assert prop(shares, block, 0, weight="score").miners == {"alice": 2000, "bob": 1000}
    assert prop(shares, block, 0, weight="difficulty").miners == {"alice": 1500, "bob": 1500}
    with pytest.raises(ValueError):
        prop(shares, block, 0, weight="hashes")  # type: ignore[arg-type]


def test_round_runs_from_previous_block_to_this_one() -> None:
    log = [ShareRecord(f"m{i}", Fraction(1), D, share_id=i) for i in range(1, 8)]
    previous = BlockRecord(height=1, subsidy=1, fees=0, finder="m2", share_id=2)
    block = BlockRecord(height=2, subsidy=1, fees=0, finder="m5", share_id=5)
    assert [s.share_id for s in round_shares(log, block, previous)] == [3, 4, 5]
    assert [s.share_id for s in round_shares(log, block)] == [1, 2, 3, 4, 5]
    assert [s.share_id for s in shares_until(log, block)] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        round_shares(log, BlockRecord(height=3, subsidy=1, fees=0, finder="x", share_id=99))


def test_orphaned_block_does_not_end_the_round() -> None:
    # Block at share 4 was orphaned: the caller passes the last real block (share 2) as previous,
    # so shares 3 and 4 roll into the round ended at share 6.
    log = [ShareRecord(f"m{i}", Fraction(1), D, share_id=i) for i in range(1, 8)]
    previous = BlockRecord(height=1, subsidy=1, fees=0, finder="m2", share_id=2)
    block = BlockRecord(height=2, subsidy=4, fees=0, finder="m6", share_id=6)
    round_ = round_shares(log, block, previous)
    assert [s.share_id for s in round_] == [3, 4, 5, 6]
    assert prop(round_, block, 0).miners == {"m3": 1, "m4": 1, "m5": 1, "m6": 1}


def test_empty_round_refused() -> None:
    with pytest.raises(ValueError):
        prop([], _block(1000), 0)
