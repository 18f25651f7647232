"""The ledger: found blocks become credits once, mature, or are reversed.

Hand-worked example used throughout (PPLNS, X = 2, D = 100, fee 200 bp):
shares, oldest first: A 100, B 60, A 40, then B's block-solving share 100.
Walking back from the block: B 1.0, A 0.4, B 0.6 -> score 2.0 = X, so A's
first share is outside the window. Reward 1,000,000 sat: fee 20,000, pot
980,000; A = 980,000 * 0.4 / 2 = 196,000, B = 980,000 * 1.6 / 2 = 784,000.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payouts.ledger import (
    KIND_ORPHAN_REVERSAL,
    POOL_ACCOUNT,
    PayoutPolicy,
    balances,
    block_entries_total,
    block_subsidy,
    credit_blocks,
    credit_shares,
    ledger_figures,
)
from payouts.maturity import classify, update_maturity
from pool.storage.models import Block, LedgerEntry
from tests.payouts.ledger_helpers import FakeNode, ShareLog, new_engine, regtest_address

A, B, C = regtest_address(1), regtest_address(2), regtest_address(3)
POLICY = PayoutPolicy(scheme="pplns", fee_bps=200, window_factor=Fraction(2), maturity=101, minimum_payout=1000)


def worked_example(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.shares([(A, 100, 100), (B, 60, 100), (A, 40, 100)])
    block = log.block(1, B, 100, reward=1_000_000)
    return engine, log, block


def entries(engine):
    with Session(engine) as session:
        return [(e.kind, e.amount, e.remainder) for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id))]


def test_pplns_block_credited_once_with_exact_sum(tmp_path):
    engine, _, _ = worked_example(tmp_path)
    [credit] = credit_blocks(engine, POLICY)
    assert credit.miners == {A: 196_000, B: 784_000}
    assert (credit.pool_fee, credit.undistributed) == (20_000, 0)
    assert credit_blocks(engine, POLICY) == []  # idempotent: a credited block is left alone
    with Session(engine) as session:
        block_id = session.scalar(select(Block.id))
        assert block_entries_total(session, block_id) == 1_000_000  # miners + pool fee = reward, exactly
        owed = balances(session)
        assert owed[A].immature == 196_000 and owed[A].payable == 0
        assert POOL_ACCOUNT not in owed
        assert balances(session, include_pool=True)[POOL_ACCOUNT].immature == 20_000


async def test_maturity_confirms_at_threshold_and_makes_credits_payable(tmp_path):
    engine, _, block_hash = worked_example(tmp_path)
    credit_blocks(engine, POLICY)
    node = FakeNode()
    node.confirmations[block_hash] = 100
    with Session(engine) as session:
        report = await update_maturity(session, node, POLICY.maturity)
        assert report.pending == [(1000, block_hash, 100)] and not report.confirmed
        assert balances(session)[B].payable == 0
    node.confirmations[block_hash] = 101
    with Session(engine) as session:
        report = await update_maturity(session, node, POLICY.maturity)
        assert report.confirmed == [(1000, block_hash)]
        owed = balances(session)
        assert (owed[A].payable, owed[B].payable) == (196_000, 784_000)
        assert owed[A].immature == 0


async def test_orphaned_block_is_reversed_and_never_payable(tmp_path):
    engine, _, block_hash = worked_example(tmp_path)
    credit_blocks(engine, POLICY)
    node = FakeNode()
    node.confirmations[block_hash] = -1
    with Session(engine) as session:
        report = await update_maturity(session, node, POLICY.maturity)
        assert report.orphaned == [(1000, block_hash)]
        block = session.scalar(select(Block))
        assert block.status == "orphaned"
        assert block_entries_total(session, block.id) == 0
        owed = balances(session)
        assert owed[A].total == 0 and owed[B].total == 0
        reversals = session.scalar(select(func.count()).where(LedgerEntry.kind == KIND_ORPHAN_REVERSAL))
    assert reversals == 3  # A, B and the pool fee
    with Session(engine) as session:  # a second pass reverses nothing more
        await update_maturity(session, node, POLICY.maturity)
        assert session.scalar(select(func.count()).where(LedgerEntry.kind == KIND_ORPHAN_REVERSAL)) == 3
    assert credit_blocks(engine, POLICY) == []  # an orphan is never credited again


async def test_unknown_block_is_orphaned_only_once_the_node_is_past_it(tmp_path):
    engine, _, block_hash = worked_example(tmp_path)
    credit_blocks(engine, POLICY)
    node = FakeNode(height=999)  # a lagging node cannot know the block yet
    with Session(engine) as session:
        assert (await update_maturity(session, node, POLICY.maturity)).orphaned == []
    node.ibd = True
    node.height = 5000
    with Session(engine) as session:  # nor can one in initial block download
        report = await update_maturity(session, node, POLICY.maturity)
        assert report.skipped and report.orphaned == []
    node.ibd = False
    with Session(engine) as session:
        assert (await update_maturity(session, node, POLICY.maturity)).orphaned == [(1000, block_hash)]


@pytest.mark.parametrize(
    ("confirmations", "node_height", "expected"),
    [(None, 999, "pending"), (None, 1001, "orphaned"), (-1, 1001, "orphaned"), (0, 1000, "pending"),
     (100, 1100, "pending"), (101, 1101, "confirmed"), (500, 1500, "confirmed")],
)
def test_classify(confirmations, node_height, expected):
    assert classify(confirmations, 101, node_height, 1000) == expected


def test_prop_rounds_end_at_blocks_but_not_at_orphans(tmp_path):
    # Round 1: A 30 + B 10 (B finds block 1 with a difficulty-10 share: B weighs 20).
    # Block 2 is orphaned before block 3 is credited: its round rolls into block 3's.
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    policy = PayoutPolicy(scheme="prop", fee_bps=100, maturity=101)
    log.shares([(A, 30, 1000), (B, 10, 1000)])
    log.block(1, B, 1000, reward=10_000, difficulty=10)
    [first] = credit_blocks(engine, policy)
    # fee 100 (1 %), pot 9,900 split 30:20 -> A 5,940, B 3,960
    assert first.miners == {A: 5_940, B: 3_960}
    log.shares([(C, 5, 1000)])
    log.block(2, A, 1000, reward=10_000, difficulty=5, status="orphaned")
    log.shares([(B, 10, 1000)])
    log.block(3, C, 1000, reward=10_000, difficulty=10)
    [third] = credit_blocks(engine, policy)
    # Round 3 = C 5 + A 5 (orphan's solving share) + B 10 + C 10 = 30: pot 9,900
    # A 1,650, B 3,300, C 4,950.
    assert third.miners == {A: 1_650, B: 3_300, C: 4_950}


def test_solo_credits_the_finder(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.shares([(A, 50, 100)])
    log.block(1, B, 100, reward=312_500_000)
    [credit] = credit_blocks(engine, PayoutPolicy(scheme="solo", fee_bps=100))
    assert credit.miners == {B: 309_375_000} and credit.pool_fee == 3_125_000


def test_unfilled_pplns_window_keeps_the_rest_explicitly(tmp_path):
    # Only score 0.5 + 0.25 exists of X = 2: 'keep' pays 0.75/2 of the pot and states the rest.
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.shares([(A, 50, 100)])
    log.block(1, B, 100, reward=100_000, difficulty=25)
    [credit] = credit_blocks(engine, PayoutPolicy(scheme="pplns", fee_bps=0))
    assert credit.miners == {A: 25_000, B: 12_500}
    assert credit.undistributed == 62_500
    with Session(engine) as session:
        assert block_entries_total(session, session.scalar(select(Block.id))) == 100_000


def test_block_without_shares_is_skipped_not_guessed(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.block(1, B, 100, reward=100_000)
    with Session(engine) as session:  # lose the solving share (e.g. compacted)
        session.execute(LedgerEntry.__table__.delete())
        from pool.storage.models import Share

        session.execute(Share.__table__.delete())
        session.commit()
    [credit] = credit_blocks(engine, POLICY)
    assert credit.skipped and "no shares" in credit.skipped
    assert entries(engine) == []


def test_pps_credits_are_exact_fractions_and_resume_where_they_stopped(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    policy = PayoutPolicy(scheme="pps", fee_bps=200, network="regtest")
    # Height 1000 on regtest: 1000 // 150 = 6 halvings -> 50 BTC >> 6 = 78,125,000 sat.
    assert block_subsidy(1000, "regtest") == 78_125_000
    log.shares([(A, 1, 3), (A, 1, 3), (B, 2, 7)])
    with Session(engine) as session:
        result = credit_shares(session, policy, through=3)
        session.commit()
    # A: 0.98 * 78,125,000 * 2/3 = 51,041,666 2/3; B: 0.98 * 78,125,000 * 2/7 = 21,875,000.
    assert result.miners == {A: Fraction(153_125_000, 3), B: Fraction(21_875_000)}
    with Session(engine) as session:
        owed = balances(session)
        assert owed[A].payable == Fraction(153_125_000, 3)  # the 2/3 sat is kept, not rounded away
        again = credit_shares(session, policy, through=3)
        assert again.shares == 0
    log.shares([(B, 1, 7)])
    with Session(engine) as session:
        more = credit_shares(session, policy, through=4)
        session.commit()
        assert more.after == 3 and more.shares == 1
        assert balances(session)[B].payable == Fraction(21_875_000) + Fraction(10_937_500)


def test_pps_liability_is_credits_not_covered_by_kept_blocks(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    policy = PayoutPolicy(scheme="pps", fee_bps=200, network="regtest")
    log.shares([(A, 1, 2)])  # credited 0.98 * 78,125,000 / 2 = 38,281,250
    with Session(engine) as session:
        credit_shares(session, policy, through=1)
        session.commit()
        figures = ledger_figures(session, policy)
    assert figures.pps_liability_sats == 38_281_250
    assert figures.unpaid_balances_sats == 38_281_250
    # 2 % fee, ruin 0.1 %: R/B = 170.4 (reference §4) at B = 78,125,000.
    assert abs(figures.pps_reserve_required_sats / 78_125_000 - 170.4) < 0.1
    log.block(1, B, 100, reward=78_125_000)
    [credit] = credit_blocks(engine, policy)
    assert credit.miners == {} and credit.scheme == "pps"
    with Session(engine) as session:
        session.scalar(select(Block)).status = "confirmed"
        session.commit()
        assert ledger_figures(session, policy).pps_liability_sats == 0  # the kept block covers it


async def test_metrics_provider_reports_the_ledger(tmp_path):
    from payouts.ledger import payout_figures_provider
    from pool.metrics import PoolMetrics, SamplerSources

    engine, _, _ = worked_example(tmp_path)
    credit_blocks(engine, POLICY)
    metrics = PoolMetrics()
    await metrics.sample(SamplerSources(payouts=payout_figures_provider(engine, POLICY)))
    registry = metrics.registry

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    assert value("stope_payout_ledger_up") == 1.0
    assert value("stope_unpaid_balances_sats") == 980_000  # A + B, the pool's fee is not a miner balance
    assert value("stope_immature_balances_sats") == 980_000
    assert value("stope_pps_liability_sats") == 0 and value("stope_pps_reserve_required_sats") == 0
