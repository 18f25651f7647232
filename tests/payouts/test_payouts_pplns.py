"""PPLNS (score form), worked by hand.

Unless stated otherwise the network difficulty is D = 1000 and the shares
are, oldest first (the last one solves the block):

    id 1 alice 800   id 2 bob 600   id 3 alice 500   id 4 carol 400   id 5 bob 300

With X = 2 the window is 2000 diff-1. Walking back from the block:
300 (bob) -> 300, 400 (carol) -> 700, 500 (alice) -> 1200, 600 (bob) -> 1800,
then alice's 800 crosses the boundary and only 200 of it counts.
Scores (units of D): alice 0.2 + 0.5 = 0.7, bob 0.6 + 0.3 = 0.9, carol 0.4;
total 2.0 = X. Each miner is paid pot * score / X.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from payouts.pplns import pplns, pplns_window
from payouts.records import BlockRecord, ShareRecord

D = 1000
SHARES = [
    ShareRecord("alice", Fraction(800), Fraction(D), share_id=1),
    ShareRecord("bob", Fraction(600), Fraction(D), share_id=2),
    ShareRecord("alice", Fraction(500), Fraction(D), share_id=3),
    ShareRecord("carol", Fraction(400), Fraction(D), share_id=4),
    ShareRecord("bob", Fraction(300), Fraction(D), share_id=5),
]
BLOCK = BlockRecord(height=100, subsidy=1_000_000, fees=0, finder="bob", share_id=5)


def test_window_counts_boundary_share_in_part() -> None:
    window = pplns_window(SHARES, 2)
    assert [share.share_id for share, _ in window] == [1, 2, 3, 4, 5]
    assert [counted for _, counted in window] == [
        Fraction(1, 5),  # 200 of alice's 800
        Fraction(3, 5),
        Fraction(1, 2),
        Fraction(2, 5),
        Fraction(3, 10),
    ]


def test_window_stops_at_boundary() -> None:
    # X = 1: 300 + 400 = 700, then alice's 500 counts 300; bob's 600 and alice's 800 are out.
    window = pplns_window(SHARES, 1)
    assert [share.share_id for share, _ in window] == [3, 4, 5]
    assert window[0][1] == Fraction(3, 10)


def test_full_window_no_fee() -> None:
    # 1,000,000 * 0.7/2 = 350,000; * 0.9/2 = 450,000; * 0.4/2 = 200,000.
    allocation = pplns(SHARES, BLOCK, fee_bps=0)
    assert allocation.miners == {"alice": 350_000, "bob": 450_000, "carol": 200_000}
    assert allocation.pool_fee == 0
    assert allocation.undistributed == 0


def test_full_window_with_fee() -> None:
    # fee 2 % = 20,000; pot 980,000: alice 343,000, bob 441,000, carol 196,000.
    allocation = pplns(SHARES, BLOCK, fee_bps=200)
    assert allocation.miners == {"alice": 343_000, "bob": 441_000, "carol": 196_000}
    assert allocation.pool_fee == 20_000
    assert allocation.scores == {"alice": Fraction(7, 10), "bob": Fraction(9, 10), "carol": Fraction(2, 5)}
    assert allocation.score_total == 2


def test_real_block_with_rounding() -> None:
    # B = 324,845,678, fee 200 bp = 6,496,913 (floored), pot 318,348,765.
    # alice 0.35 * pot = 111,422,067.75; bob 0.45 * pot = 143,256,944.25; carol 0.2 * pot = 63,669,753.
    # Floors sum to 318,348,764; the spare satoshi goes to alice (.75).
    block = BlockRecord(height=840_001, subsidy=312_500_000, fees=12_345_678, finder="bob", share_id=5)
    allocation = pplns(SHARES, block, fee_bps=200)
    assert allocation.miners == {"alice": 111_422_068, "bob": 143_256_944, "carol": 63_669_753}
    assert allocation.pool_fee == 6_496_913
    assert allocation.total == 324_845_678


def test_tx_fees_shared_or_kept() -> None:
    block = BlockRecord(height=101, subsidy=1_000_000, fees=50_000, finder="bob", share_id=5)
    # Shared: base 1,050,000, fee 21,000, pot 1,029,000 -> 360,150 / 463,050 / 205,800.
    shared = pplns(SHARES, block, fee_bps=200, share_tx_fees=True)
    assert shared.miners == {"alice": 360_150, "bob": 463_050, "carol": 205_800}
    assert shared.pool_fee == 21_000
    # Kept: base 1,000,000, fee 20,000, pot 980,000; pool also keeps the 50,000 of tx fees.
    kept = pplns(SHARES, block, fee_bps=200, share_tx_fees=False)
    assert kept.miners == {"alice": 343_000, "bob": 441_000, "carol": 196_000}
    assert kept.pool_fee == 70_000
    assert kept.kept_tx_fees == 50_000


def test_unfilled_window_kept_by_pool() -> None:
    # X = 4 needs 4000 diff-1; only 2600 exist (scores alice 1.3, bob 0.9, carol 0.4 = 2.6).
    # pot 980,000: alice 980,000 * 1.3/4 = 318,500; bob * 0.9/4 = 220,500; carol * 0.4/4 = 98,000;
    # undistributed 980,000 * 1.4/4 = 343,000.
    allocation = pplns(SHARES, BLOCK, fee_bps=200, window_factor=4, unfilled="keep")
    assert allocation.miners == {"alice": 318_500, "bob": 220_500, "carol": 98_000}
    assert allocation.undistributed == 343_000
    assert allocation.pool_fee == 20_000
    assert allocation.params["window_filled"] == "13/5"


def test_unfilled_window_normalized() -> None:
    # Same window spread over the 2.6 present: alice 1.3/2.6 = 1/2 -> 490,000;
    # bob 980,000 * 9/26 = 339,230.77; carol 980,000 * 4/26 = 150,769.23.
    # Floors sum to 979,999; the spare satoshi goes to bob (.77).
    allocation = pplns(SHARES, BLOCK, fee_bps=200, window_factor=4, unfilled="normalize")
    assert allocation.miners == {"alice": 490_000, "bob": 339_231, "carol": 150_769}
    assert allocation.undistributed == 0


def test_unfilled_window_rounding_tie_with_pool_slot() -> None:
    # X = 3, fee 0, pot 1,000,000: alice 1.3/3 -> 433,333.33; bob 0.9/3 -> 300,000;
    # carol 0.4/3 -> 133,333.33; undistributed 0.4/3 -> 133,333.33. Floors sum 999,999.
    # Remainders alice = carol = pool = 1/3; larger weight wins: alice (1.3).
    allocation = pplns(SHARES, BLOCK, fee_bps=0, window_factor=3)
    assert allocation.miners == {"alice": 433_334, "bob": 300_000, "carol": 133_333}
    assert allocation.undistributed == 133_333


def test_score_uses_difficulty_at_submission() -> None:
    # alice 1000 @ D 1000 (score 1), bob 1000 @ D 2000 (0.5), carol 500 @ D 2000 (0.25, solver).
    # X = 1: carol 0.25, bob 0.5 -> 0.75, alice counts the last 0.25.
    # B = 400,000, no fee: alice 100,000, bob 200,000, carol 100,000.
    shares = [
        ShareRecord("alice", Fraction(1000), Fraction(1000)),
        ShareRecord("bob", Fraction(1000), Fraction(2000)),
        ShareRecord("carol", Fraction(500), Fraction(2000)),
    ]
    block = BlockRecord(height=5, subsidy=400_000, fees=0, finder="carol")
    allocation = pplns(shares, block, fee_bps=0, window_factor=1)
    assert allocation.miners == {"alice": 100_000, "bob": 200_000, "carol": 100_000}


def test_shares_after_the_block_are_ignored() -> None:
    # Block solved by share 4 (carol). X = 1: carol 0.4, alice 0.5 -> 0.9, bob counts 0.1.
    # pot 1,000,000: alice 500,000, bob 100,000, carol 400,000; share 5 is after the block.
    block = BlockRecord(height=100, subsidy=1_000_000, fees=0, finder="carol", share_id=4)
    allocation = pplns(SHARES, block, fee_bps=0, window_factor=1)
    assert allocation.miners == {"alice": 500_000, "bob": 100_000, "carol": 400_000}


def test_huge_solving_share_fills_window_alone() -> None:
    shares = [*SHARES, ShareRecord("dave", Fraction(5000), Fraction(D))]
    block = BlockRecord(height=100, subsidy=1_000_000, fees=0, finder="dave")
    allocation = pplns(shares, block, fee_bps=0)
    assert allocation.miners == {"dave": 1_000_000}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"window_factor": 0}, ValueError), ({"window_factor": 2.0}, TypeError), ({"unfilled": "spread"}, ValueError)],
)
def test_refuses_bad_parameters(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        pplns(SHARES, BLOCK, fee_bps=0, **kwargs)


def test_refuses_empty_window() -> None:
    with pytest.raises(ValueError):
        pplns([], BlockRecord(height=1, subsidy=1, fees=0, finder="a"), fee_bps=0)
