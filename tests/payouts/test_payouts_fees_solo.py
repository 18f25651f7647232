"""Pool fee, transaction-fee policy and SOLO, worked by hand.

Block used throughout: subsidy S = 312,500,000 sat (post-840,000 halving),
fees F = 12,345,678 sat, B = S + F = 324,845,678 sat, pool fee 200 bp.
"""

from __future__ import annotations

import pytest

from payouts.fees import check_fee_bps, pool_fee, split_block
from payouts.records import BlockRecord
from payouts.solo import solo, solo_coinbase_outputs

BLOCK = BlockRecord(height=840_000, subsidy=312_500_000, fees=12_345_678, finder="alice", share_id=7)
MINER = bytes.fromhex("0014") + bytes(20)
POOL = bytes.fromhex("0014") + b"\x11" * 20


def test_fee_is_floored() -> None:
    # 324,845,678 * 200 / 10,000 = 6,496,913.56 -> 6,496,913.
    assert pool_fee(324_845_678, 200) == 6_496_913
    # 49 * 100 / 10,000 = 0.49 -> 0.
    assert pool_fee(49, 100) == 0
    assert pool_fee(1_000, 10_000) == 1_000


@pytest.mark.parametrize("bps", [-1, 10_001, 1.5, True])
def test_fee_bps_is_an_int_in_range(bps: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        check_fee_bps(bps)


def test_split_block_shared_and_kept_tx_fees() -> None:
    shared = split_block(BLOCK, 200, share_tx_fees=True)
    assert (shared.fee_base, shared.fee, shared.kept_tx_fees, shared.pot) == (
        324_845_678,
        6_496_913,
        0,
        318_348_765,
    )
    # Fees kept: base is S; 312,500,000 * 2 % = 6,250,000; pot = 306,250,000.
    kept = split_block(BLOCK, 200, share_tx_fees=False)
    assert (kept.fee_base, kept.fee, kept.kept_tx_fees, kept.pot) == (
        312_500_000,
        6_250_000,
        12_345_678,
        306_250_000,
    )


def test_solo_custodial_fees_shared() -> None:
    allocation = solo(BLOCK, 200)
    assert allocation.miners == {"alice": 318_348_765}
    assert allocation.pool_fee == 6_496_913
    assert allocation.undistributed == 0


def test_solo_custodial_fees_kept_by_pool() -> None:
    allocation = solo(BLOCK, 200, share_tx_fees=False)
    assert allocation.miners == {"alice": 306_250_000}
    # 6,250,000 fee + 12,345,678 tx fees kept = 18,595,678.
    assert allocation.pool_fee == 18_595_678
    assert allocation.kept_tx_fees == 12_345_678
    assert allocation.total == 324_845_678


def test_solo_without_fee() -> None:
    assert solo(BLOCK, 0).miners == {"alice": 324_845_678}
    assert solo(BLOCK, 0).pool_fee == 0


def test_solo_coinbase_outputs() -> None:
    assert solo_coinbase_outputs(324_845_678, MINER, POOL, 200) == [(318_348_765, MINER), (6_496_913, POOL)]
    # No fee: only the miner's output.
    assert solo_coinbase_outputs(324_845_678, MINER, POOL, 0) == [(324_845_678, MINER)]
    # A fee that floors to zero is omitted too: floor(49 * 1 %) = 0.
    assert solo_coinbase_outputs(49, MINER, POOL, 100) == [(49, MINER)]
