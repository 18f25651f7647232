"""``stope payouts explain``: how a miner's amounts were computed, checkably.

For every block a miner was credited for, the block is recomputed from the
share log with the parameters recorded when it was credited (the
``pool-fee`` entry's memo, so a later configuration change does not alter
the explanation): the scheme, the window or round, each of the miner's
shares with its difficulty, the network difficulty at submission and the
score it counted for, the exact entitlement ``pot * score / total`` and
the whole satoshis it was rounded to. The recomputed satoshis are compared
with the ledger; a difference is shown, never hidden. Per-share (PPS/FPPS)
credits and payouts are listed too.

Everything is returned as JSON-ready data (fractions as exact strings);
the CLI renders it.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pool.storage.models import Block, LedgerEntry, Miner, PayoutBatch, Share, Worker

from .ledger import (
    BLOCK_SCHEMES,
    KIND_ORPHAN_REVERSAL,
    KIND_PAYOUT,
    KIND_PAYOUT_REVERSAL,
    KIND_POOL_FEE,
    SHARE_SCHEMES,
    PayoutPolicy,
    allocate,
    balances,
    parse_memo,
)
from .pplns import pplns_window


def approx(value: Fraction, digits: int = 12) -> str:
    """A fraction as a short decimal for tables (the JSON keeps it exact)."""
    with localcontext() as ctx:
        ctx.prec = digits
        return str(+(Decimal(value.numerator) / Decimal(value.denominator)))


def _pool_memo(session: Session, block_id: int) -> dict[str, str]:
    memo = session.scalar(
        select(LedgerEntry.memo).where(LedgerEntry.block_id == block_id, LedgerEntry.kind.in_((KIND_POOL_FEE, "pps-block"))).order_by(LedgerEntry.id)
    )
    return parse_memo(memo)


def _miner_shares(session: Session, address: str, after: int, through: int, limit: int) -> list[tuple[int, Any, Fraction, Fraction]]:
    rows = session.execute(
        select(Share.id, Share.created_at, Share.difficulty, Share.network_difficulty)
        .join(Worker, Share.worker_id == Worker.id)
        .join(Miner, Worker.miner_id == Miner.id)
        .where(Miner.address == address, Share.id > after, Share.id <= through)
        .order_by(Share.id)
        .limit(limit)
    ).all()
    return [(sid, created, Fraction(d), Fraction(nd)) for sid, created, d, nd in rows]


def explain_block(session: Session, block: Block, address: str, policy: PayoutPolicy, *, max_shares: int = 10_000) -> dict[str, Any]:
    """One block from ``address``'s point of view, recomputed and checked against the ledger."""
    entries = list(
        session.scalars(
            select(LedgerEntry)
            .join(Miner, LedgerEntry.miner_id == Miner.id)
            .where(LedgerEntry.block_id == block.id, Miner.address == address)
            .order_by(LedgerEntry.id)
        )
    )
    credited = sum((e.exact_amount for e in entries if e.kind != KIND_ORPHAN_REVERSAL), Fraction(0))
    reversed_ = sum((e.exact_amount for e in entries if e.kind == KIND_ORPHAN_REVERSAL), Fraction(0))
    out: dict[str, Any] = {
        "height": block.height,
        "hash": block.hash,
        "status": block.status,
        "confirmations": block.confirmations,
        "reward": block.reward,
        "ledger_sats": int(credited),
        "reversed_sats": int(-reversed_),
        "shares": [],
    }
    params = _pool_memo(session, block.id)
    if not params:
        out["note"] = "block not credited yet"
        return out
    out["scheme"] = params.get("scheme")
    out["params"] = params
    if params.get("scheme") in SHARE_SCHEMES:
        out["note"] = "PPS/FPPS: the pool keeps the block; shares are credited one by one (see share credits)"
        return out
    try:
        allocation, params, window = allocate(session, block, policy, dict(params))
    except (LookupError, ValueError) as exc:
        out["note"] = f"cannot recompute ({exc}); the shares may have been compacted. Ledger amount shown."
        return out
    assert allocation is not None
    score = allocation.scores.get(address, Fraction(0))
    entitlement = allocation.pot * score / allocation.score_total
    out.update(
        block_value=allocation.block_value,
        fee_base=allocation.fee_base,
        pool_fee=allocation.pool_fee,
        pot=allocation.pot,
        undistributed=allocation.undistributed,
        score_total=str(allocation.score_total),
        miner_score=str(score),
        entitlement=str(entitlement),
        computed_sats=allocation.miners.get(address, 0),
        matches=allocation.miners.get(address, 0) == int(credited),
        miners_in_window=len(allocation.scores),
    )
    through = int(params["through"])
    scheme = params["scheme"]
    if scheme == "pplns":
        counted = {share.share_id: part for share, part in pplns_window(window, Fraction(params["X"]))}
        first = window[0].share_id if window else through
        assert first is not None
        out["window"] = {"first_share": first, "through_share": through, "factor": params["X"], "filled": allocation.params.get("window_filled")}
        rows = _miner_shares(session, address, first - 1, through, max_shares)
    elif scheme == "prop":
        after = int(params.get("after") or 0)
        out["window"] = {"first_share": after + 1, "through_share": through, "weight": params.get("weight", "difficulty")}
        counted = {}
        rows = _miner_shares(session, address, after, through, max_shares)
    else:
        out["window"] = {"finder": next(iter(allocation.scores), None)}
        rows = []
    weight = params.get("weight", "difficulty")
    for sid, created, difficulty, network_difficulty in rows:
        share_score = difficulty / network_difficulty
        if scheme == "pplns":
            part = counted.get(sid, share_score)
        else:
            part = difficulty if weight == "difficulty" else share_score
        out["shares"].append({
            "id": sid,
            "time": created.isoformat() if created is not None else None,
            "difficulty": str(difficulty),
            "network_difficulty": str(network_difficulty),
            "score": str(share_score),
            "counted": str(part),
        })
    return out


def explain(
    session: Session,
    address: str,
    policy: PayoutPolicy,
    *,
    height: int | None = None,
    limit: int = 10,
    max_shares: int = 10_000,
) -> dict[str, Any]:
    """Everything ``address`` was credited and paid, with each block recomputed."""
    miner = session.scalar(select(Miner).where(Miner.address == address))
    if miner is None:
        raise LookupError(f"no miner {address!r} in the database")
    owed = balances(session, addresses=[address]).get(address)
    result: dict[str, Any] = {
        "address": address,
        "payable": str(owed.payable) if owed else "0",
        "payable_sats": int(owed.payable) if owed else 0,
        "immature": str(owed.immature) if owed else "0",
        "immature_sats": int(owed.immature) if owed else 0,
        "paid_sats": owed.paid if owed else 0,
    }
    if height is not None:
        blocks = list(session.scalars(select(Block).where(Block.height == height).order_by(Block.id)))
        if not blocks:
            raise LookupError(f"no block found by the pool at height {height}")
    else:
        ids = select(LedgerEntry.block_id).where(
            LedgerEntry.miner_id == miner.id, LedgerEntry.kind.in_(BLOCK_SCHEMES), LedgerEntry.block_id.is_not(None)
        )
        blocks = list(session.scalars(select(Block).where(Block.id.in_(ids)).order_by(Block.id.desc()).limit(limit)))
    result["blocks"] = [explain_block(session, block, address, policy, max_shares=max_shares) for block in blocks]

    share_credits = list(
        session.scalars(
            select(LedgerEntry).where(LedgerEntry.miner_id == miner.id, LedgerEntry.kind.in_(SHARE_SCHEMES)).order_by(LedgerEntry.id)
        )
    )
    result["share_credits"] = [
        {"kind": e.kind, "through_share": e.share_id_through, "amount": str(e.exact_amount), "memo": e.memo,
         "at": e.created_at.isoformat() if e.created_at else None}
        for e in share_credits
    ]
    result["share_credits_total"] = str(sum((e.exact_amount for e in share_credits), Fraction(0)))

    payouts = session.execute(
        select(PayoutBatch.idempotency_key, PayoutBatch.status, PayoutBatch.txid, PayoutBatch.sent_at, LedgerEntry.kind, LedgerEntry.amount)
        .join(PayoutBatch, LedgerEntry.batch_id == PayoutBatch.id)
        .where(LedgerEntry.miner_id == miner.id, LedgerEntry.kind.in_((KIND_PAYOUT, KIND_PAYOUT_REVERSAL)))
        .order_by(LedgerEntry.id)
    ).all()
    result["payouts"] = [
        {"batch": key, "status": status, "txid": txid, "sent_at": sent.isoformat() if sent else None,
         "kind": kind, "amount_sats": -amount}
        for key, status, txid, sent, kind, amount in payouts
    ]
    return result
