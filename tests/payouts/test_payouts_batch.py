"""The payout batch job: write before sending, reconcile after any failure, pay once.

Uses the worked PPLNS example of test_payouts_ledger (A 196,000, B 784,000
sat from a 1,000,000-sat block) and a node whose wallet is the devnet's.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payouts.batch import (
    BATCH_EXPORTED,
    PayoutsBusy,
    btc_to_sats,
    dust_threshold,
    run_lock,
    run_payouts,
    sats_to_btc,
)
from payouts.ledger import PayoutPolicy, balances
from pool.bitcoin.script import address_to_script
from pool.devnet.chain import RPCError
from pool.node import NodeUnavailable
from pool.storage.models import LedgerEntry, PayoutBatch
from tests.payouts.ledger_helpers import FakeNode, ShareLog, new_engine, regtest_address

A, B = regtest_address(1), regtest_address(2)
POLICY = PayoutPolicy(scheme="pplns", fee_bps=200, window_factor=Fraction(2), maturity=101, minimum_payout=1000)


def mature_example(tmp_path):
    engine = new_engine(tmp_path)
    log = ShareLog(engine)
    log.shares([(A, 100, 100), (B, 60, 100), (A, 40, 100)])
    block = log.block(1, B, 100, reward=1_000_000)
    node = FakeNode()
    node.confirmations[block] = 101
    return engine, node


def batches(engine):
    with Session(engine) as session:
        return [(b.status, b.txid) for b in session.scalars(select(PayoutBatch).order_by(PayoutBatch.id))]


def test_amounts_are_exact_decimal_strings():
    assert sats_to_btc(0) == "0.00000000"
    assert sats_to_btc(196_000) == "0.00196000"
    assert sats_to_btc(2_100_000_000_000_000) == "21000000.00000000"
    assert btc_to_sats(sats_to_btc(123_456_789)) == 123_456_789
    with pytest.raises(ValueError):
        btc_to_sats("0.000000001")


def test_dust_thresholds_match_bitcoin_core():
    assert dust_threshold(bytes.fromhex("76a914" + "00" * 20 + "88ac")) == 546  # P2PKH
    assert dust_threshold(bytes.fromhex("a914" + "00" * 20 + "87")) == 540  # P2SH
    assert dust_threshold(bytes.fromhex("0014" + "00" * 20)) == 294  # P2WPKH
    assert dust_threshold(bytes.fromhex("0020" + "00" * 32)) == 330  # P2WSH
    assert dust_threshold(bytes.fromhex("5120" + "00" * 32)) == 330  # P2TR


async def test_run_pays_each_miner_and_a_rerun_pays_nothing_more(tmp_path):
    engine, node = mature_example(tmp_path)
    report = await run_payouts(engine, node, POLICY)
    assert [h for h, _ in report.maturity.confirmed] == [1000]
    assert report.paid == {A: 196_000, B: 784_000}
    [outcome] = report.batches
    assert outcome.status == "sent" and outcome.note == "sent"
    assert node.wallet.paid_to() == {A: 196_000, B: 784_000}
    [tx] = node.wallet.txs
    assert tx.comment == outcome.key and outcome.txid == tx.txid and outcome.fee == tx.fee
    assert batches(engine) == [("sent", tx.txid)]
    with Session(engine) as session:
        owed = balances(session)
        assert owed[A].payable == 0 and owed[A].paid == 196_000

    again = await run_payouts(engine, node, POLICY)
    assert again.batches == [] and again.paid == {}
    assert len(node.wallet.txs) == 1 and node.wallet.send_calls == 1


async def test_reply_lost_after_send_is_reconciled_not_resent(tmp_path):
    engine, node = mature_example(tmp_path)
    node.lose_reply = True  # the wallet sends, the answer never arrives
    first = await run_payouts(engine, node, POLICY)
    assert first.unresolved and first.batches[0].status == "draft"
    assert len(node.wallet.txs) == 1
    second = await run_payouts(engine, node, POLICY)
    [outcome] = second.batches
    assert outcome.status == "sent" and outcome.note.startswith("reconciled")
    assert outcome.txid == node.wallet.txs[0].txid
    assert node.wallet.send_calls == 1 and node.wallet.paid_to() == {A: 196_000, B: 784_000}
    assert (await run_payouts(engine, node, POLICY)).paid == {}
    assert len(batches(engine)) == 1


async def test_wallet_down_before_sending_leaves_the_batch_for_the_next_run(tmp_path):
    engine, node = mature_example(tmp_path)
    calls = node.call

    async def flaky(method, *params):
        if method in ("sendmany", "listtransactions"):
            raise NodeUnavailable("wallet down")
        return await calls(method, *params)

    node.call = flaky  # type: ignore[method-assign]
    first = await run_payouts(engine, node, POLICY)
    assert first.unresolved and node.wallet.txs == []
    node.call = calls  # type: ignore[method-assign]
    second = await run_payouts(engine, node, POLICY)
    assert second.batches[0].note == "sent"
    assert node.wallet.paid_to() == {A: 196_000, B: 784_000}
    assert len(batches(engine)) == 1


async def test_refused_batch_gives_the_money_back_and_a_later_batch_pays_it(tmp_path):
    engine, node = mature_example(tmp_path)
    node.wallet.fail_next_send = RPCError(-6, "Insufficient funds")
    first = await run_payouts(engine, node, POLICY)
    [outcome] = first.batches
    assert outcome.status == "failed" and "Insufficient funds" in outcome.note
    with Session(engine) as session:
        assert balances(session)[A].payable == 196_000  # restored by a new entry, not an edit
    second = await run_payouts(engine, node, POLICY)
    assert second.paid == {A: 196_000, B: 784_000}
    assert node.wallet.paid_to() == {A: 196_000, B: 784_000}
    assert [s for s, _ in batches(engine)] == ["failed", "sent"]


async def test_dry_run_writes_and_sends_nothing(tmp_path):
    engine, node = mature_example(tmp_path)
    report = await run_payouts(engine, node, POLICY, dry_run=True)
    assert report.plan is not None
    assert {p.address: p.amount for p in report.plan.payments} == {A: 196_000, B: 784_000}
    assert report.credits[0].miners == {A: 196_000, B: 784_000}
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert session.scalar(select(func.count()).select_from(PayoutBatch)) == 0
    assert node.wallet.send_calls == 0 and "sendmany" not in node.calls


async def test_thresholds_dust_and_invalid_addresses_wait(tmp_path):
    engine, node = mature_example(tmp_path)
    policy = PayoutPolicy(scheme="pplns", fee_bps=200, minimum_payout=200_000)
    report = await run_payouts(engine, node, policy)
    assert report.paid == {B: 784_000}
    assert report.plan is not None and report.plan.below_threshold == [(A, 196_000)]
    # Dust: even with no minimum, a P2WPKH output below 294 sat is never made.
    assert dust_threshold(address_to_script(A, "regtest")) == 294


async def test_max_recipients_defers_the_smallest(tmp_path):
    engine, node = mature_example(tmp_path)
    report = await run_payouts(engine, node, PayoutPolicy(scheme="pplns", fee_bps=200, minimum_payout=1000, max_recipients=1))
    assert report.paid == {B: 784_000} and report.plan is not None and report.plan.deferred == [(A, 196_000)]
    assert (await run_payouts(engine, node, PayoutPolicy(scheme="pplns", fee_bps=200, minimum_payout=1000))).paid == {A: 196_000}


async def test_miners_can_pay_the_transaction_fee(tmp_path):
    engine, node = mature_example(tmp_path)
    report = await run_payouts(engine, node, PayoutPolicy(scheme="pplns", fee_bps=200, minimum_payout=1000, miners_pay_tx_fee=True))
    [tx] = node.wallet.txs
    received = node.wallet.paid_to()
    assert sum(received.values()) + tx.fee == 980_000  # the fee came out of the outputs
    assert report.batches[0].fee == tx.fee


async def test_csv_export_debits_and_writes_a_file(tmp_path):
    engine, node = mature_example(tmp_path)
    report = await run_payouts(engine, node, POLICY, method="csv", export_dir=tmp_path / "out")
    [outcome] = report.batches
    assert outcome.status == BATCH_EXPORTED
    lines = (tmp_path / "out" / f"{outcome.key}.csv").read_text().splitlines()
    assert lines == ["address,satoshis,btc", f"{A},196000,0.00196000", f"{B},784000,0.00784000"]
    assert node.wallet.send_calls == 0
    assert (await run_payouts(engine, node, POLICY, method="csv", export_dir=tmp_path / "out")).batches == []


def test_one_run_at_a_time(tmp_path):
    engine = new_engine(tmp_path)
    with run_lock(engine), pytest.raises(PayoutsBusy), run_lock(engine):
        pass
    with run_lock(engine):  # released
        pass
