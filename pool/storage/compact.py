"""Retention: fold share rows payouts no longer need into per-worker aggregates.

A share row is compactable when it is older than the retention cut-off, is
not a block-solving share, and lies before every share a payout may still
read:

* PPLNS: the window (total score ``sum(d/D) = X``) ending at the newest
  share, and the window ending at each block not yet paid (status pending,
  or confirmed with no ledger entry referencing it);
* PPS/FPPS (``pps=True``): every share after the highest
  ``ledger_entries.share_id_through`` (all of them if nothing was credited).

Compacted shares become ``ShareAggregate`` rows (count and exact difficulty
sum per worker and time bucket), so hashrate history survives them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import Engine, delete, exists, func, select
from sqlalchemy.orm import Session

from .models import (
    BLOCK_CONFIRMED,
    BLOCK_PENDING,
    Block,
    LedgerEntry,
    Share,
    ShareAggregate,
    as_utc,
)

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_SCAN = 10_000


@dataclass(frozen=True)
class CompactionPlan:
    """Shares created before ``cutoff`` and with id below ``keep_from_id`` (None: no
    id limit) may be compacted; ``reasons`` says what protected the rest."""

    cutoff: dt.datetime
    keep_from_id: int | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class CompactionResult:
    shares: int
    buckets: int
    difficulty: Fraction


def bucket_of(created_at: dt.datetime, seconds: int) -> dt.datetime:
    """Start of the ``seconds``-long UTC bucket holding ``created_at``."""
    since = int((as_utc(created_at) - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=since - since % seconds)


def window_start_id(session: Session, end_id: int, window_factor: Fraction) -> int | None:
    """Oldest share id in the PPLNS window ending at ``end_id``; None if the
    window reaches past the oldest share still stored (keep them all)."""
    total = Fraction(0)
    below = end_id + 1
    while True:
        rows = session.execute(
            select(Share.id, Share.difficulty, Share.network_difficulty)
            .where(Share.id < below)
            .order_by(Share.id.desc())
            .limit(_SCAN)
        ).all()
        if not rows:
            return None
        for share_id, difficulty, network_difficulty in rows:
            total += difficulty / network_difficulty
            if total >= window_factor:
                return share_id
        below = rows[-1][0]


def _unpaid_block_share_ids(session: Session) -> list[int]:
    """The share that found each block a PPLNS payout may still be computed for."""
    paid = exists().where(LedgerEntry.block_id == Block.id)
    blocks = session.execute(
        select(Block.hash, Block.created_at).where(
            (Block.status == BLOCK_PENDING) | ((Block.status == BLOCK_CONFIRMED) & ~paid)
        )
    ).all()
    ids = []
    for block_hash, created_at in blocks:
        # "AND is_block", as written (not .is_(True)): the look-up then uses the
        # partial index ux_shares_block_hash, the only index on share_hash.
        share_id = session.scalar(select(Share.id).where(Share.share_hash == block_hash, Share.is_block))
        if share_id is None:  # no block share recorded: the last share before the block
            share_id = session.scalar(select(func.max(Share.id)).where(Share.created_at <= created_at))
        if share_id is not None:
            ids.append(share_id)
    return ids


def plan_compaction(
    session: Session,
    *,
    older_than: dt.timedelta,
    window_factor: Fraction | None = Fraction(2),
    pps: bool = False,
    now: dt.datetime | None = None,
) -> CompactionPlan:
    """Decide what may go (read-only)."""
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - older_than
    limits: list[int] = []
    reasons: list[str] = [f"older than {cutoff.isoformat()}"]
    if window_factor is not None:
        newest = session.scalar(select(func.max(Share.id)))
        ends = ([newest] if newest is not None else []) + _unpaid_block_share_ids(session)
        for end in ends:
            start = window_start_id(session, end, window_factor)
            limits.append(0 if start is None else start)
        if ends:
            reasons.append(f"PPLNS windows (X={window_factor}) of the newest share and {len(ends) - 1} unpaid block(s)")
    if pps:
        through = session.scalar(select(func.max(LedgerEntry.share_id_through)))
        limits.append(0 if through is None else through + 1)
        reasons.append(f"PPS credits through share id {through}")
    return CompactionPlan(cutoff, min(limits) if limits else None, tuple(reasons))


def compact(engine: Engine, plan: CompactionPlan, *, bucket_seconds: int = 3600, chunk: int = 20_000) -> CompactionResult:
    """Fold compactable shares into aggregates, ``chunk`` rows per transaction.

    Each transaction adds to the aggregates and deletes the same share rows,
    so an interrupted run loses nothing and can simply be run again.
    """
    total_shares = 0
    total_difficulty = Fraction(0)
    touched: set[tuple[int, dt.datetime]] = set()
    while True:
        with Session(engine) as session, session.begin():
            query = select(Share.id, Share.worker_id, Share.difficulty, Share.created_at).where(
                Share.created_at < plan.cutoff, Share.is_block.is_(False)
            )
            if plan.keep_from_id is not None:
                query = query.where(Share.id < plan.keep_from_id)
            rows = session.execute(query.order_by(Share.id).limit(chunk)).all()
            if not rows:
                break
            buckets: dict[tuple[int, dt.datetime], list] = {}
            for _id, worker_id, difficulty, created_at in rows:
                acc = buckets.setdefault((worker_id, bucket_of(created_at, bucket_seconds)), [0, Fraction(0)])
                acc[0] += 1
                acc[1] += difficulty
            for (worker_id, start), (count, difficulty) in buckets.items():
                existing = session.scalar(
                    select(ShareAggregate).where(
                        ShareAggregate.worker_id == worker_id,
                        ShareAggregate.bucket_start == start,
                        ShareAggregate.bucket_seconds == bucket_seconds,
                    )
                )
                if existing is None:
                    session.add(ShareAggregate(worker_id=worker_id, bucket_start=start, bucket_seconds=bucket_seconds,
                                               share_count=count, difficulty_sum=difficulty))
                else:
                    existing.share_count += count
                    existing.difficulty_sum = existing.difficulty_sum + difficulty
                touched.add((worker_id, start))
                total_difficulty += difficulty
            session.execute(delete(Share).where(Share.id.in_([r[0] for r in rows])))
            total_shares += len(rows)
            log.info("compacted %d share(s) so far", total_shares)
    return CompactionResult(total_shares, len(touched), total_difficulty)


def difficulty_history(
    session: Session, *, bucket_seconds: int = 3600, since: dt.datetime | None = None
) -> dict[tuple[int, dt.datetime], tuple[int, Fraction]]:
    """Per (worker id, bucket start): share count and difficulty sum, from the
    aggregates and the share rows together (hashrate = sum * 2**32 / seconds)."""
    out: dict[tuple[int, dt.datetime], tuple[int, Fraction]] = {}

    def add(items: Iterable[tuple[int, dt.datetime, int, Fraction]]) -> None:
        for worker_id, start, count, difficulty in items:
            key = (worker_id, bucket_of(start, bucket_seconds))
            c, d = out.get(key, (0, Fraction(0)))
            out[key] = (c + count, d + difficulty)

    agg = select(ShareAggregate.worker_id, ShareAggregate.bucket_start, ShareAggregate.share_count,
                 ShareAggregate.difficulty_sum).where(ShareAggregate.bucket_seconds == bucket_seconds)
    raw = select(Share.worker_id, Share.created_at, Share.difficulty)
    if since is not None:
        agg = agg.where(ShareAggregate.bucket_start >= since)
        raw = raw.where(Share.created_at >= since)
    add((w, s, c, d) for w, s, c, d in session.execute(agg))
    add((w, t, 1, d) for w, t, d in session.execute(raw))
    return out
