"""Property tests of the ledger and the batch job over random histories.

A history is a sequence of steps: shares, found blocks, the node's view of
them (confirmations, orphans), and payout runs that may fail in any of the
ways a wallet can (reply lost after sending, refusal, unreachable). After
every step:

* ledger sums are exact: a credited block's entries add up to its reward
  (0 once orphaned), PPS/FPPS credits are exactly (1 - f) * price * d / D per
  share, and the money is conserved: confirmed rewards + per-share credits =
  pool account + miners' payable + paid, exactly;
* no balance is negative and no payout amount is negative or zero;
* the wallet paid each miner exactly what the ledger debited for sent
  batches;
* a rerun pays nothing more once everything is settled;
* `explain` recomputes every miner's credit for every block to the ledger's satoshi.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from payouts.batch import run_payouts
from payouts.explain import explain_block
from payouts.ledger import (
    KIND_PAYOUT,
    KIND_PAYOUT_REVERSAL,
    POOL_ACCOUNT,
    SHARE_SCHEMES,
    PayoutPolicy,
    balances,
    block_entries_total,
    block_subsidy,
    entries_sum,
)
from pool.devnet.chain import RPCError
from pool.storage.models import (
    Block,
    LedgerEntry,
    Miner,
    PayoutBatch,
    PayoutBatchItem,
    Share,
)
from tests.payouts.ledger_helpers import FakeNode, ShareLog, new_engine, regtest_address

MINERS = [regtest_address(i) for i in range(4)]

share_st = st.tuples(st.integers(0, 3), st.integers(1, 40), st.sampled_from([50, 100, 170]))
block_st = st.tuples(st.just("block"), st.integers(0, 3), st.integers(1_000_000, 50_000_000), st.sampled_from([101, 150, -1, 0]))
run_st = st.tuples(st.just("run"), st.sampled_from(["ok", "lose-reply", "refuse", "down", "ok"]))
step_st = st.one_of(
    block_st,
    run_st,
    st.tuples(st.just("shares"), st.lists(share_st, min_size=1, max_size=6)),
    block_st,
    run_st,
    st.tuples(st.just("node"), st.integers(0, 5), st.sampled_from([101, -1, 0, 50, 200])),
)
policy_st = st.builds(
    PayoutPolicy,
    scheme=st.sampled_from(["pplns", "prop", "solo", "pps", "fpps"]),
    fpps_expected_fees=st.sampled_from([0, 12_345]),
    fee_bps=st.sampled_from([100, 0, 250, 10_000]),
    window_factor=st.sampled_from([Fraction(1, 2), Fraction(2), Fraction(5)]),
    unfilled=st.sampled_from(["keep", "normalize"]),
    minimum_payout=st.sampled_from([1000, 0, 400_000]),
    max_recipients=st.sampled_from([4, 1, 2]),
)


def check_invariants(engine, node: FakeNode, policy: PayoutPolicy, settled: bool = False) -> None:
    with Session(engine) as session:
        confirmed_rewards = 0
        for block in session.scalars(select(Block)):
            total = block_entries_total(session, block.id)
            credited = session.scalar(select(LedgerEntry.id).where(LedgerEntry.block_id == block.id).limit(1)) is not None
            if block.status == "orphaned" or not credited:
                assert total == 0
            else:
                assert total == block.reward
            if block.status == "confirmed" and credited:
                confirmed_rewards += block.reward
        owed = balances(session, include_pool=True)
        for balance in owed.values():
            assert balance.payable >= 0 and balance.immature >= 0
        # Conservation: every satoshi of a confirmed block, and every per-share credit,
        # is someone's payable balance or was paid.
        paid_total = -entries_sum(session, LedgerEntry.kind.in_((KIND_PAYOUT, KIND_PAYOUT_REVERSAL)))
        payable = sum((b.payable for b in owed.values()), Fraction(0))
        share_credits = entries_sum(session, LedgerEntry.kind.in_(SHARE_SCHEMES))
        assert payable + paid_total == confirmed_rewards + share_credits
        if policy.scheme in SHARE_SCHEMES:
            # Per-share credits are exactly (1 - f) * price * d / D for every share credited so far.
            through = session.scalar(select(func.max(LedgerEntry.share_id_through))) or 0
            keep = 1 - Fraction(policy.fee_bps, 10_000)
            extra = policy.fpps_expected_fees if policy.scheme == "fpps" else 0
            expected = sum(
                (keep * (block_subsidy(h, "regtest") + extra) * Fraction(d) / Fraction(nd)
                 for h, d, nd in session.execute(
                     select(Share.height, Share.difficulty, Share.network_difficulty).where(Share.id <= through))),
                Fraction(0),
            )
            assert share_credits == expected
        assert POOL_ACCOUNT not in {a for a, _ in node.wallet.paid_to().items()}
        # The wallet paid exactly what sent batches debited; a draft batch (reply lost)
        # may or may not be in the wallet until the next run settles it.
        sent: dict[str, int] = {}
        drafts: dict[str, int] = {}
        rows = session.execute(
            select(Miner.address, PayoutBatchItem.amount, PayoutBatch.status)
            .join(PayoutBatchItem, PayoutBatchItem.miner_id == Miner.id)
            .join(PayoutBatch, PayoutBatch.id == PayoutBatchItem.batch_id)
        )
        for address, amount, status in rows:
            assert amount > 0
            if status in ("sent", "confirmed"):
                sent[address] = sent.get(address, 0) + amount
            elif status == "draft":
                drafts[address] = drafts.get(address, 0) + amount
        wallet = node.wallet.paid_to()
        if settled:
            assert not drafts and sent == wallet
        else:
            for address in set(sent) | set(wallet):
                assert sent.get(address, 0) <= wallet.get(address, 0) <= sent.get(address, 0) + drafts.get(address, 0)

async def play(engine, policy: PayoutPolicy, steps) -> None:
    log = ShareLog(engine)
    node = FakeNode(height=10_000)
    blocks: list[str] = []
    for step in steps:
        kind = step[0]
        if kind == "shares":
            log.shares([(MINERS[m], d, nd) for m, d, nd in step[1]])
        elif kind == "block":
            blocks.append(log.block(len(blocks), MINERS[step[1]], 100, reward=step[2], height=1000 + len(blocks)))
            node.confirmations[blocks[-1]] = step[3]
        elif kind == "node" and blocks:
            node.confirmations[blocks[step[1] % len(blocks)]] = step[2]
        elif kind == "run":
            if step[1] == "lose-reply":
                node.lose_reply = True
            elif step[1] == "refuse":
                node.wallet.fail_next_send = RPCError(-6, "Insufficient funds")
            elif step[1] == "down":
                node.down = True
            try:
                await run_payouts(engine, node, policy)
            except Exception as exc:  # noqa: BLE001 - only an unreachable node may stop a run
                assert step[1] == "down", exc
            node.down = False
            node.lose_reply = False
            node.wallet.fail_next_send = None
        check_invariants(engine, node, policy)
    # Settle whatever is loose (miners deferred by max_recipients are paid by later
    # runs); then a rerun must pay nothing more.
    for _ in range(len(MINERS) + 2):
        sends = node.wallet.send_calls
        report = await run_payouts(engine, node, policy)
        check_invariants(engine, node, policy)
        if not report.paid and not report.unresolved:
            break
    else:
        raise AssertionError("payout runs never settled")
    assert node.wallet.send_calls == sends
    again = await run_payouts(engine, node, policy)
    assert again.paid == {} and again.batches == [] and node.wallet.send_calls == sends
    check_invariants(engine, node, policy, settled=True)
    # Every miner can check every credit: the explanation recomputes the ledger's amount.
    with Session(engine) as session:
        for block in session.scalars(select(Block)):
            credited = session.execute(
                select(Miner.address).join(LedgerEntry, LedgerEntry.miner_id == Miner.id)
                .where(LedgerEntry.block_id == block.id, Miner.address != POOL_ACCOUNT).distinct()
            ).scalars().all()
            for address in credited:
                explained = explain_block(session, block, address, policy)
                assert explained["matches"] is True, explained
    event(f"wallet transactions: {min(len(node.wallet.txs), 2)}{'+' if len(node.wallet.txs) > 2 else ''}")


# Every history starts with a block that matures, so most examples have money to pay.
first_st = st.tuples(st.just("block"), st.integers(0, 3), st.integers(1_000_000, 50_000_000), st.just(101))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policy_st, first=first_st, steps=st.lists(step_st, max_size=10))
def test_random_histories_keep_the_ledger_exact_and_pay_once(policy, first, steps):
    steps = [first, *steps]
    with tempfile.TemporaryDirectory() as tmp:
        engine = new_engine(Path(tmp))
        try:
            trio.run(play, engine, policy, steps)
        finally:
            engine.dispose()
