"""The append-only ledger: found blocks and shares become miners' credits.

Every change to a balance is a new ``LedgerEntry``; nothing is updated or
deleted, so a balance is always the sum of its entries and any amount can be
traced to the block, the share range or the payout batch it came from
(``stope payouts explain``). Entries are exact: whole satoshis plus a
sub-satoshi remainder (PPS credits are fractions of a satoshi).

Kinds of entry:

* ``pplns`` / ``prop`` / ``solo``: a miner's part of a found block (``block_id``).
* ``pool-fee`` / ``undistributed``: the pool's part of the same block, on the
  pool's own account (``POOL_ACCOUNT``), so the entries of a credited block
  always sum to its coinbase value exactly (R-PAY-11). The ``pool-fee``
  entry's memo records the scheme and parameters the block was credited
  with, so an explanation recomputes it the same way after the configuration
  changed.
* ``pps-block``: under PPS/FPPS a found block is the operator's; the whole
  value goes to the pool account (what covers the PPS liability).
* ``pps`` / ``fpps``: per-share credits, one entry per miner per run;
  ``share_id_through`` is the last share covered.
* ``orphan-reversal``: cancels every entry of a block that left the chain.
* ``payout`` / ``payout-reversal``: a payout batch's debit (``batch_id``),
  and its cancellation when the wallet refused the batch.

A block's credits are written once, while it is pending (immature); they
become payable when the block is confirmed (``payouts.maturity``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, exists, func, select, text
from sqlalchemy.orm import Session

from pool.storage.models import (
    BLOCK_CONFIRMED,
    BLOCK_ORPHANED,
    BLOCK_PENDING,
    Block,
    LedgerEntry,
    Miner,
    Share,
    Worker,
)

from .fees import fee_fraction
from .pplns import pplns, window_factor_of
from .prop import prop
from .records import Allocation, BlockRecord, ShareRecord
from .risk import required_reserve
from .solo import solo

if TYPE_CHECKING:
    from pool.config import Settings
    from pool.metrics import PayoutFigures

KIND_PPLNS = "pplns"
KIND_PROP = "prop"
KIND_SOLO = "solo"
KIND_PPS = "pps"
KIND_FPPS = "fpps"
KIND_POOL_FEE = "pool-fee"
KIND_UNDISTRIBUTED = "undistributed"
KIND_PPS_BLOCK = "pps-block"
KIND_ORPHAN_REVERSAL = "orphan-reversal"
KIND_PAYOUT = "payout"
KIND_PAYOUT_REVERSAL = "payout-reversal"

BLOCK_SCHEMES = (KIND_PPLNS, KIND_PROP, KIND_SOLO)
SHARE_SCHEMES = (KIND_PPS, KIND_FPPS)
SCHEMES = BLOCK_SCHEMES + SHARE_SCHEMES

# The pool's own account in the miners table. Not a valid address on any
# network, so no miner can authorize as it and no payout is ever sent to it.
POOL_ACCOUNT = "stope:pool"

# Shares read per query when walking a PPLNS window back from its block.
_PAGE = 5000

Progress = Callable[[str, int, int], None]
"""``progress(label, done, total)``: called as a long step advances."""


def no_progress(label: str, done: int, total: int) -> None:
    """The default: nobody is watching."""


@dataclass(frozen=True)
class PayoutPolicy:
    """What the ``[payouts]`` section decides, as plain values (no pydantic here)."""

    scheme: str = KIND_PPLNS
    fee_bps: int = 200
    share_tx_fees: bool = True
    window_factor: Fraction = Fraction(2)
    unfilled: str = "keep"
    prop_weight: str = "difficulty"
    fpps_expected_fees: int = 0
    maturity: int = 101
    minimum_payout: int = 1_000_000
    max_recipients: int = 500
    network: str = "regtest"
    miners_pay_tx_fee: bool = False
    ruin_probability: Fraction = Fraction(1, 1000)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown payout scheme {self.scheme!r}")
        window_factor_of(self.window_factor)
        fee_fraction(self.fee_bps)


def halving_interval(network: str) -> int:
    """Blocks between subsidy halvings (regtest halves every 150)."""
    return 150 if network == "regtest" else 210_000


def block_subsidy(height: int, network: str) -> int:
    """The subsidy of a block at ``height``: 50 BTC halved every interval."""
    halvings = height // halving_interval(network)
    return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings


# --- accounts and entries ------------------------------------------------------------


def miner_id(session: Session, address: str) -> int:
    """The miners row for ``address``, created if it does not exist yet."""
    found = session.scalar(select(Miner.id).where(Miner.address == address))
    if found is not None:
        return found
    miner = Miner(address=address)
    session.add(miner)
    session.flush()
    return miner.id


def add_entry(
    session: Session,
    miner: int,
    kind: str,
    exact: Fraction | int,
    *,
    block_id: int | None = None,
    batch_id: int | None = None,
    share_id_through: int | None = None,
    memo: str | None = None,
) -> LedgerEntry:
    """Append one exact credit (positive) or debit (negative)."""
    whole, remainder = LedgerEntry.split(Fraction(exact))
    entry = LedgerEntry(
        miner_id=miner,
        kind=kind,
        amount=whole,
        remainder=remainder,
        block_id=block_id,
        batch_id=batch_id,
        share_id_through=share_id_through,
        memo=None if memo is None else memo[:256],
    )
    session.add(entry)
    return entry


# --- balances ------------------------------------------------------------------------------


@dataclass
class Balance:
    """One account's position, exactly.

    ``payable``: entries with no block (PPS credits, payouts) and entries of
    confirmed blocks. ``immature``: entries of blocks still awaiting
    maturity. Entries of orphaned blocks count nowhere (they are reversed).
    ``paid``: satoshis debited by payout batches (net of reversals).
    """

    address: str
    miner_id: int
    payable: Fraction = Fraction(0)
    immature: Fraction = Fraction(0)
    paid: int = 0

    @property
    def total(self) -> Fraction:
        return self.payable + self.immature


def _bucket(status: str | None) -> str | None:
    if status is None or status == BLOCK_CONFIRMED:
        return "payable"
    if status == BLOCK_ORPHANED:
        return None
    return "immature"


def balances(session: Session, *, addresses: Sequence[str] | None = None, include_pool: bool = False) -> dict[str, Balance]:
    """Every account's balance as sums of its entries (never a stored figure).

    Whole satoshis are summed in SQL; only the (few) entries with a
    sub-satoshi remainder are read one by one.
    """
    where = []
    if addresses is not None:
        where.append(Miner.address.in_(list(addresses)))
    if not include_pool:
        where.append(Miner.address != POOL_ACCOUNT)
    base = (
        select(Miner.id, Miner.address, LedgerEntry.kind, Block.status, func.sum(LedgerEntry.amount))
        .join(Miner, LedgerEntry.miner_id == Miner.id)
        .outerjoin(Block, LedgerEntry.block_id == Block.id)
        .where(*where)
        .group_by(Miner.id, Miner.address, LedgerEntry.kind, Block.status)
    )
    out: dict[str, Balance] = {}

    def add(mid: int, address: str, kind: str, status: str | None, value: Fraction) -> None:
        balance = out.setdefault(address, Balance(address, mid))
        bucket = _bucket(status)
        if bucket == "payable":
            balance.payable += value
        elif bucket == "immature":
            balance.immature += value
        if kind in (KIND_PAYOUT, KIND_PAYOUT_REVERSAL):
            balance.paid -= int(value)

    for mid, address, kind, status, total in session.execute(base):
        add(mid, address, kind, status, Fraction(int(total or 0)))
    remainders = (
        select(Miner.id, Miner.address, LedgerEntry.kind, Block.status, LedgerEntry.remainder)
        .join(Miner, LedgerEntry.miner_id == Miner.id)
        .outerjoin(Block, LedgerEntry.block_id == Block.id)
        .where(LedgerEntry.remainder != Fraction(0), *where)
    )
    for mid, address, kind, status, remainder in session.execute(remainders):
        add(mid, address, kind, status, Fraction(remainder))
    return out


def entries_sum(session: Session, *conditions: object) -> Fraction:
    """The exact sum of the entries matching ``conditions``."""
    whole = session.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(*conditions)) or 0
    parts = session.scalars(select(LedgerEntry.remainder).where(LedgerEntry.remainder != Fraction(0), *conditions))
    return Fraction(int(whole)) + sum((Fraction(r) for r in parts), Fraction(0))


# --- where blocks sit in the share log -----------------------------------------------------


def solving_share_id(session: Session, block: Block) -> int | None:
    """The share that found ``block``: the block share with the block's hash, else
    the last share recorded before the block (as storage compaction assumes).

    Filtered on ``Share.is_block`` as written (not ``.is_(True)``), so it uses the
    partial index ``ux_shares_block_hash``, the only index on ``share_hash``."""
    found = session.scalar(select(Share.id).where(Share.share_hash == block.hash, Share.is_block))
    if found is not None:
        return found
    return session.scalar(select(func.max(Share.id)).where(Share.created_at <= block.created_at))


def pps_through(session: Session) -> int | None:
    """The last share already credited per share (PPS/FPPS), or None."""
    return session.scalar(
        select(func.max(LedgerEntry.share_id_through)).where(LedgerEntry.kind.in_(SHARE_SCHEMES))
    )


def credited(session: Session, block_id: int) -> bool:
    return bool(session.scalar(select(exists().where(LedgerEntry.block_id == block_id))))


def _previous_round_end(session: Session, block: Block, before_share: int) -> int:
    """The solving share of the latest credited, not orphaned block before ``before_share``.

    An orphaned block does not end a PROP round: its shares roll into the
    next one (R-PAY-5).
    """
    end = 0
    others = list(session.scalars(
        select(Block).where(
            Block.id != block.id,
            Block.status.in_((BLOCK_PENDING, BLOCK_CONFIRMED)),
            exists().where(LedgerEntry.block_id == Block.id),
        )
    ))
    for other in others:
        share = solving_share_id(session, other)
        if share is not None and end < share < before_share:
            end = share
    return end


def _share_rows(*conditions: object):  # type: ignore[no-untyped-def]
    return (
        select(Share.id, Miner.address, Share.difficulty, Share.network_difficulty, Share.created_at)
        .join(Worker, Share.worker_id == Worker.id)
        .join(Miner, Worker.miner_id == Miner.id)
        .where(*conditions)
    )


def window_shares(session: Session, through: int, after: int, window_factor: Fraction) -> list[ShareRecord]:
    """Shares ``after < id <= through`` walking back until their score reaches ``X``; oldest first."""
    factor = window_factor_of(window_factor)
    collected: list[ShareRecord] = []
    score = Fraction(0)
    below = through + 1
    while score < factor:
        rows = session.execute(
            _share_rows(Share.id < below, Share.id > after).order_by(Share.id.desc()).limit(_PAGE)
        ).all()
        if not rows:
            break
        for share_id, address, difficulty, network_difficulty, created_at in rows:
            record = ShareRecord(address, difficulty, network_difficulty, time=int(created_at.timestamp()), share_id=share_id)
            collected.append(record)
            score += record.score
            if score >= factor:
                break
        below = rows[-1][0]
    collected.reverse()
    return collected


def round_weights(session: Session, through: int, after: int) -> list[ShareRecord]:
    """The PROP round ``after < id <= through`` folded to one record per (miner, d, D).

    A record of difficulty ``d * count`` weighs exactly as ``count`` shares
    of ``d`` under both PROP weightings, so a round of millions of shares is
    a few rows.
    """
    rows = session.execute(
        select(Miner.address, Share.difficulty, Share.network_difficulty, func.count())
        .join(Worker, Share.worker_id == Worker.id)
        .join(Miner, Worker.miner_id == Miner.id)
        .where(Share.id > after, Share.id <= through)
        .group_by(Miner.address, Share.difficulty, Share.network_difficulty)
    ).all()
    return [ShareRecord(address, Fraction(d) * count, Fraction(nd)) for address, d, nd, count in sorted(rows, key=str)]


# --- crediting blocks ---------------------------------------------------------------------


@dataclass(frozen=True)
class BlockCredit:
    """What crediting one block wrote (or, for a dry run, would write)."""

    block_id: int
    height: int
    block_hash: str
    scheme: str
    reward: int
    miners: dict[str, int]
    pool_fee: int
    undistributed: int
    memo: str
    skipped: str | None = None


def block_record(session: Session, block: Block, policy: PayoutPolicy, share_id: int | None) -> BlockRecord:
    """The scheme functions' view of a blocks row."""
    subsidy = min(block_subsidy(block.height, policy.network), block.reward)
    finder = ""
    if block.worker_id is not None:
        finder = session.scalar(
            select(Miner.address).join(Worker, Worker.miner_id == Miner.id).where(Worker.id == block.worker_id)
        ) or ""
    return BlockRecord(height=block.height, subsidy=subsidy, fees=block.reward - subsidy, finder=finder, share_id=share_id)


def memo_of(params: dict[str, str]) -> str:
    """``key=value;...``: the parameters a block was credited with."""
    return ";".join(f"{key}={value}" for key, value in params.items())


def parse_memo(memo: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (memo or "").split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out


def allocate(session: Session, block: Block, policy: PayoutPolicy, params: dict[str, str] | None = None) -> tuple[Allocation | None, dict[str, str], list[ShareRecord]]:
    """Compute ``block``'s allocation from the share log.

    ``params`` (a parsed ``pool-fee`` memo) recomputes a block already
    credited with the parameters it was credited with; without them the
    policy's are used. Returns the allocation (None under PPS/FPPS, where
    the block is the operator's), the parameters, and the shares used.
    """
    if params is None:
        through = solving_share_id(session, block)
        scheme = policy.scheme
        params = {"scheme": scheme, "fee_bps": str(policy.fee_bps), "tx": "shared" if policy.share_tx_fees else "kept"}
        bound = pps_through(session) or 0
        if scheme == KIND_PPLNS:
            params.update(X=str(policy.window_factor), unfilled=policy.unfilled)
            params["after"] = str(bound)
        elif scheme == KIND_PROP:
            params["weight"] = policy.prop_weight
            params["after"] = str(max(bound, _previous_round_end(session, block, through or 0)))
        params["through"] = "" if through is None else str(through)
    scheme = params["scheme"]
    fee_bps = int(params.get("fee_bps", policy.fee_bps))
    share_tx_fees = params.get("tx", "shared") == "shared"
    through = int(params["through"]) if params.get("through") else None
    after = int(params.get("after") or 0)
    record = block_record(session, block, policy, through)
    if scheme in SHARE_SCHEMES:
        return None, params, []
    if scheme == KIND_SOLO:
        if not record.finder:
            raise LookupError("the block has no finder recorded")
        return solo(record, fee_bps, share_tx_fees), params, []
    if through is None:
        raise LookupError("no shares recorded for the block")
    if scheme == KIND_PPLNS:
        factor = Fraction(params["X"])
        shares = window_shares(session, through, after, factor)
        if not shares or shares[-1].share_id != through:
            raise LookupError("the block's solving share is not in the share log")
        unfilled = params.get("unfilled", "keep")
        allocation = pplns(shares, record, fee_bps, factor, unfilled, share_tx_fees)  # type: ignore[arg-type]
        if shares:
            params["first"] = str(shares[0].share_id)
        return allocation, params, shares
    if scheme == KIND_PROP:
        shares = round_weights(session, through, after)
        if not shares:
            raise LookupError("the PROP round has no shares")
        weight = params.get("weight", "difficulty")
        return prop(shares, record, fee_bps, share_tx_fees, weight), params, shares  # type: ignore[arg-type]
    raise ValueError(f"unknown scheme {scheme!r}")


def credit_block(session: Session, block: Block, policy: PayoutPolicy) -> BlockCredit:
    """Write ``block``'s credits (once: a block with entries is left alone).

    Entries of the block sum to its reward exactly: miners' parts, the pool
    fee and any undistributed part on the pool account.
    """
    if credited(session, block.id):
        raise ValueError(f"block {block.hash} is already credited")
    allocation, params, _ = allocate(session, block, policy)
    pool = miner_id(session, POOL_ACCOUNT)
    if allocation is None:
        memo = memo_of(params)
        add_entry(session, pool, KIND_PPS_BLOCK, block.reward, block_id=block.id, memo=memo)
        return BlockCredit(block.id, block.height, block.hash, params["scheme"], block.reward, {}, block.reward, 0, memo)
    params.pop("first", None)
    memo = memo_of(params)
    miners = {address: amount for address, amount in sorted(allocation.miners.items()) if amount}
    ids = {address: miner_id(session, address) for address in miners}
    for address, amount in miners.items():
        add_entry(session, ids[address], allocation.scheme, amount, block_id=block.id)
    add_entry(session, pool, KIND_POOL_FEE, allocation.pool_fee, block_id=block.id, memo=memo)
    if allocation.undistributed:
        add_entry(session, pool, KIND_UNDISTRIBUTED, allocation.undistributed, block_id=block.id)
    return BlockCredit(block.id, block.height, block.hash, allocation.scheme, block.reward, miners,
                       allocation.pool_fee, allocation.undistributed, memo)


def blocks_to_credit(session: Session) -> list[Block]:
    """Found blocks (pending or confirmed) with no ledger entry yet, oldest first."""
    return list(
        session.scalars(
            select(Block)
            .where(Block.status.in_((BLOCK_PENDING, BLOCK_CONFIRMED)), ~exists().where(LedgerEntry.block_id == Block.id))
            .order_by(Block.id)
        )
    )


def credit_blocks(
    engine: Engine, policy: PayoutPolicy, *, progress: Progress = no_progress, session: Session | None = None
) -> list[BlockCredit]:
    """Credit every uncredited found block, one transaction per block.

    Blocks are credited in the order they were found, so each PROP round
    starts after the block before it. With ``session`` given (a dry run)
    nothing is committed: the caller rolls back.
    """
    results: list[BlockCredit] = []
    own = session is None
    work = session if session is not None else Session(engine)
    try:
        blocks = blocks_to_credit(work)
        for done, block in enumerate(blocks, 1):
            try:
                results.append(credit_block(work, block, policy))
            except LookupError as exc:
                results.append(BlockCredit(block.id, block.height, block.hash, policy.scheme, block.reward, {}, 0, 0, "", skipped=str(exc)))
                if own:
                    work.rollback()
            else:
                if own:
                    work.commit()
                else:
                    work.flush()
            progress("crediting blocks", done, len(blocks))
    finally:
        if own:
            work.close()
    return results


def reverse_block(session: Session, block: Block) -> list[LedgerEntry]:
    """Cancel every entry of ``block`` (it left the chain); idempotent."""
    if session.scalar(select(exists().where(LedgerEntry.block_id == block.id, LedgerEntry.kind == KIND_ORPHAN_REVERSAL))):
        return []
    originals = list(
        session.scalars(
            select(LedgerEntry).where(LedgerEntry.block_id == block.id, LedgerEntry.kind != KIND_ORPHAN_REVERSAL).order_by(LedgerEntry.id)
        )
    )
    return [
        add_entry(session, entry.miner_id, KIND_ORPHAN_REVERSAL, -entry.exact_amount, block_id=block.id,
                  memo=f"reverses entry {entry.id} ({entry.kind})")
        for entry in originals
    ]


# --- per-share credits (PPS / FPPS) ----------------------------------------------------------


@dataclass(frozen=True)
class ShareCredits:
    """One PPS/FPPS crediting run."""

    scheme: str
    after: int
    through: int
    shares: int
    miners: dict[str, Fraction] = field(default_factory=dict)

    @property
    def total(self) -> Fraction:
        return sum(self.miners.values(), Fraction(0))


def committed_share_horizon(session: Session) -> int:
    """The highest share id below which no insert can still appear.

    On PostgreSQL ids come from a sequence and transactions commit out of
    order, so a reader can see id 300 before 250 is committed; a brief SHARE
    lock waits for inserting transactions to finish first. SQLite has one
    writer at a time, so what is visible is already a prefix.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE shares IN SHARE MODE"))
    return int(session.scalar(select(func.coalesce(func.max(Share.id), 0))) or 0)


def pps_start(session: Session) -> int:
    """Shares after this id are still to be credited per share.

    After the last PPS credit; on the first PPS run, after the solving share
    of the latest block credited by a block scheme (earlier shares were paid
    by those blocks), else from the first share.
    """
    through = pps_through(session)
    if through is not None:
        return through
    start = 0
    for block in list(session.scalars(
        select(Block).where(
            Block.status.in_((BLOCK_PENDING, BLOCK_CONFIRMED)),
            exists().where(and_(LedgerEntry.block_id == Block.id, LedgerEntry.kind.in_(BLOCK_SCHEMES + (KIND_POOL_FEE,)))),
        )
    )):
        share = solving_share_id(session, block)
        if share is not None:
            start = max(start, share)
    return start


def credit_shares(session: Session, policy: PayoutPolicy, through: int) -> ShareCredits:
    """Credit every share in ``(pps_start, through]`` at the PPS/FPPS price (not committed).

    Shares are folded per (miner, height, d, D): the subsidy depends on the
    height and the credit is linear in the count, so the sum stays exact.
    """
    scheme = policy.scheme
    if scheme not in SHARE_SCHEMES:
        raise ValueError(f"{scheme} does not credit shares")
    after = pps_start(session)
    if through <= after:
        return ShareCredits(scheme, after, after, 0)
    rows = session.execute(
        select(Miner.address, Share.height, Share.difficulty, Share.network_difficulty, func.count())
        .join(Worker, Share.worker_id == Worker.id)
        .join(Miner, Worker.miner_id == Miner.id)
        .where(Share.id > after, Share.id <= through)
        .group_by(Miner.address, Share.height, Share.difficulty, Share.network_difficulty)
    ).all()
    keep = 1 - fee_fraction(policy.fee_bps)
    extra = policy.fpps_expected_fees if scheme == KIND_FPPS else 0
    miners: dict[str, Fraction] = {}
    count = 0
    for address, height, difficulty, network_difficulty, n in rows:
        price = block_subsidy(height, policy.network) + extra
        miners[address] = miners.get(address, Fraction(0)) + keep * price * Fraction(difficulty) * n / Fraction(network_difficulty)
        count += n
    memo = f"shares {after + 1}..{through} fee_bps={policy.fee_bps}" + (f" expected_fees={extra}" if scheme == KIND_FPPS else "")
    for address, amount in sorted(miners.items()):
        add_entry(session, miner_id(session, address), scheme, amount, share_id_through=through, memo=memo)
    if not miners:
        # Nothing to credit, but remember how far the log was read.
        add_entry(session, miner_id(session, POOL_ACCOUNT), scheme, 0, share_id_through=through, memo=memo)
    return ShareCredits(scheme, after, through, count, miners)


# --- figures for metrics ------------------------------------------------------------------


@lru_cache(maxsize=64)
def _reserve(block_value: int, fee_bps: int, ruin: Fraction) -> int:
    """``risk.required_reserve``, remembered: the metrics ask every few seconds."""
    return required_reserve(block_value, fee_bps, ruin)


@dataclass(frozen=True)
class LedgerFigures:
    """Whole satoshis, for gauges."""

    pps_liability_sats: int
    unpaid_balances_sats: int
    immature_balances_sats: int
    pps_reserve_required_sats: int


def ledger_figures(session: Session, policy: PayoutPolicy) -> LedgerFigures:
    """The pool's obligations as the ledger states them.

    PPS liability: per-share credits not covered by confirmed blocks the
    operator kept. The reserve is what a PPS operator needs for the
    configured ruin probability at the current block value (reference §4);
    it is 0 when the scheme is not PPS/FPPS or the fee is 0.
    """
    owed = balances(session)
    unpaid = sum((b.total for b in owed.values()), Fraction(0))
    immature = sum((b.immature for b in owed.values()), Fraction(0))
    credits = entries_sum(session, LedgerEntry.kind.in_(SHARE_SCHEMES))
    covered = entries_sum(
        session,
        LedgerEntry.kind == KIND_PPS_BLOCK,
        LedgerEntry.block_id.in_(select(Block.id).where(Block.status == BLOCK_CONFIRMED)),
    )
    liability = max(Fraction(0), credits - covered)
    reserve = 0
    if policy.scheme in SHARE_SCHEMES and 0 < policy.fee_bps < 10_000:
        height = session.scalar(select(func.max(Block.height))) or session.scalar(select(func.max(Share.height))) or 0
        value = block_subsidy(height, policy.network) + (policy.fpps_expected_fees if policy.scheme == KIND_FPPS else 0)
        if value > 0:
            reserve = _reserve(value, policy.fee_bps, policy.ruin_probability)
    return LedgerFigures(
        pps_liability_sats=int(liability),
        unpaid_balances_sats=int(max(unpaid, Fraction(0))),
        immature_balances_sats=int(max(immature, Fraction(0))),
        pps_reserve_required_sats=reserve,
    )


def read_figures(engine: Engine, policy: PayoutPolicy) -> LedgerFigures:
    with Session(engine) as session:
        return ledger_figures(session, policy)


def policy_from_settings(settings: Settings) -> PayoutPolicy:
    """The ``[payouts]`` section (and the pool's network) as a plain policy."""
    p = settings.payouts
    return PayoutPolicy(
        scheme=p.scheme,
        fee_bps=p.fee_bps,
        share_tx_fees=p.share_tx_fees,
        window_factor=p.window_factor,
        unfilled=p.unfilled,
        prop_weight=p.prop_weight,
        fpps_expected_fees=p.fpps_expected_fees,
        maturity=p.maturity,
        minimum_payout=p.minimum_payout,
        max_recipients=p.max_recipients,
        network=settings.pool.network,
        miners_pay_tx_fee=p.miners_pay_tx_fee,
        ruin_probability=p.ruin_probability,
    )


def payout_figures_provider(
    engine: Engine, policy: PayoutPolicy, *, refresh: float = 60.0
) -> Callable[[], Awaitable[PayoutFigures]]:
    """``SamplerSources.payouts`` for the running pool: the ledger's figures, read in a thread.

    The sums cover the whole ledger, and balances only change when a payout
    run writes, so they are re-read at most every ``refresh`` seconds
    (the sampler asks every few).
    """
    import trio

    from pool.metrics import PayoutFigures

    cached: list[tuple[float, LedgerFigures]] = []

    async def figures() -> PayoutFigures:
        now = trio.current_time()
        if cached and now - cached[0][0] < refresh:
            read = cached[0][1]
        else:
            read = await trio.to_thread.run_sync(read_figures, engine, policy)
            cached[:] = [(now, read)]
        return PayoutFigures(
            pps_liability_sats=read.pps_liability_sats,
            unpaid_balances_sats=read.unpaid_balances_sats,
            immature_balances_sats=read.immature_balances_sats,
            pps_reserve_required_sats=read.pps_reserve_required_sats,
        )

    return figures


def block_entries_total(session: Session, block_id: int) -> Fraction:
    """What a block's credits sum to (its reward while not reversed; 0 after)."""
    return entries_sum(session, LedgerEntry.block_id == block_id)


def miners_of(session: Session, addresses: Iterable[str]) -> dict[str, int]:
    return dict(session.execute(select(Miner.address, Miner.id).where(Miner.address.in_(list(addresses)))).all())
