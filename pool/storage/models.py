"""Typed ORM models: miners, workers, shares, blocks, payouts and the ledger.

The schema itself is owned by the Alembic migrations in ``pool/migrations``;
these classes must stay in step with the head revision (a test compares them).
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Block lifecycle: submitted and awaiting maturity, matured on the best chain,
# fell off the best chain, or refused by the node at submission.
BLOCK_PENDING = "pending"
BLOCK_CONFIRMED = "confirmed"
BLOCK_ORPHANED = "orphaned"
BLOCK_REJECTED = "rejected"
BLOCK_STATUSES = (BLOCK_PENDING, BLOCK_CONFIRMED, BLOCK_ORPHANED, BLOCK_REJECTED)

# Payout batch lifecycle (the payout engine moves batches along it).
BATCH_DRAFT = "draft"
BATCH_SENT = "sent"
BATCH_CONFIRMED = "confirmed"
BATCH_FAILED = "failed"
# Written to a CSV for an operator to sign and send (the money is debited).
BATCH_EXPORTED = "exported"
BATCH_STATUSES = (BATCH_DRAFT, BATCH_SENT, BATCH_CONFIRMED, BATCH_FAILED, BATCH_EXPORTED)

# A BigInteger primary key that is still SQLite's rowid alias (INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer, "sqlite")


class ExactFraction(TypeDecorator[Fraction]):
    """A ``Fraction`` stored exactly as "numerator/denominator" text.

    Share difficulties below 1 and network difficulties are money inputs;
    neither SQLite REAL nor a scaled BIGINT holds both ends exactly.
    """

    impl = String(120)
    cache_ok = True

    def process_bind_param(self, value: Fraction | None, dialect) -> str | None:  # type: ignore[override]
        if value is None:
            return None
        f = Fraction(value)
        return f"{f.numerator}/{f.denominator}"

    def process_result_value(self, value: str | None, dialect) -> Fraction | None:  # type: ignore[override]
        return None if value is None else Fraction(value)


class HexHash(TypeDecorator[str]):
    """A 256-bit hash, given and read as display hex, stored as its 32 raw bytes
    (BLOB / bytea): half the bytes of the hex text in the table and in any
    index on it (revision 0003)."""

    impl = LargeBinary()
    cache_ok = True

    def process_bind_param(self, value: str | bytes | None, dialect) -> bytes | None:  # type: ignore[override]
        if value is None or isinstance(value, bytes):
            return value
        return bytes.fromhex(value)

    def process_result_value(self, value: bytes | None, dialect) -> str | None:  # type: ignore[override]
        return None if value is None else bytes(value).hex()


class LongExactFraction(ExactFraction):
    """An exact fraction with no length limit: sums of many shares' difficulties
    and sub-satoshi credits can have long denominators."""

    impl = Text()
    cache_ok = True


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Miner(Base):
    """A payout address; the unit payouts and the ledger are kept per."""

    __tablename__ = "miners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())
    workers: Mapped[list[Worker]] = relationship(back_populates="miner")


class Worker(Base):
    """One named rig of a miner (``ADDRESS.worker``); shares are recorded per worker."""

    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("miner_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    miner_id: Mapped[int] = mapped_column(ForeignKey("miners.id"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())
    miner: Mapped[Miner] = relationship(back_populates="workers")


# The partial index's condition as each database is given it. SQLite uses a
# partial index only when the query's WHERE holds this term as written, and
# SQLAlchemy renders ``where(Share.is_block)`` as ``shares.is_block = 1`` there
# (PostgreSQL: ``shares.is_block``, which its planner matches either way). So a
# look-up by block hash filters on ``Share.is_block`` itself, never ``.is_(True)``
# (``IS 1``), to use ``ux_shares_block_hash``.
BLOCK_SHARE_WHERE = {"sqlite": "is_block = 1", "postgresql": "is_block"}


class Share(Base):
    """One accepted share. Old rows may be compacted into ``ShareAggregate``.

    Indexes (revision 0004), kept few because every accepted share inserts into
    each of them: ``ix_shares_created_at`` (append-only; stats, compaction and
    the replay's check for rows already stored) and ``ux_shares_block_hash``
    (unique, block shares only: the look-up of the share that found a block).
    ``share_hash`` has no index over all rows: a unique one over random 32-byte
    keys made every insert touch a random page, a cost that grew with the table.
    """

    __tablename__ = "shares"
    __table_args__ = (
        Index("ix_shares_created_at", "created_at"),
        Index(
            "ux_shares_block_hash", "share_hash", unique=True,
            sqlite_where=text(BLOCK_SHARE_WHERE["sqlite"]), postgresql_where=text(BLOCK_SHARE_WHERE["postgresql"]),
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The share's header hash (display hex in Python, 32 bytes stored). Not unique
    # in the schema: the writer keeps a replayed spool from double-counting
    # (``ShareStore.write(replay=True)`` skips shares already stored).
    share_hash: Mapped[str] = mapped_column(HexHash())
    # A workers.id, with no FOREIGN KEY since revision 0003 (a per-row check on
    # the hottest insert); the writer only stores ids it resolved in the same
    # transaction, and workers are never deleted. Join explicitly on Worker.id.
    worker_id: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str] = mapped_column(String(32))
    height: Mapped[int] = mapped_column(Integer)
    difficulty: Mapped[Fraction] = mapped_column(ExactFraction())
    network_difficulty: Mapped[Fraction] = mapped_column(ExactFraction())
    is_block: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Block(Base):
    """A block the pool found: pending until mature, then confirmed or orphaned."""

    __tablename__ = "blocks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    prevhash: Mapped[str] = mapped_column(String(64))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    # Coinbase value in satoshis (subsidy + fees).
    reward: Mapped[int] = mapped_column(BigInteger)
    # One of BLOCK_STATUSES.
    status: Mapped[str] = mapped_column(String(16), default=BLOCK_PENDING)
    submit_result: Mapped[str | None] = mapped_column(String(128), nullable=True)
    confirmations: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class PayoutBatch(Base):
    """One payout transaction (or attempt). ``idempotency_key`` is chosen by the
    payout engine (e.g. derived from the blocks/ledger range it settles) so a
    retried run never creates a second batch for the same money."""

    __tablename__ = "payout_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    # One of BATCH_STATUSES.
    status: Mapped[str] = mapped_column(String(16), default=BATCH_DRAFT)
    txid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Transaction fee paid by the pool, satoshis.
    fee: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    items: Mapped[list[PayoutBatchItem]] = relationship(back_populates="batch")


class PayoutBatchItem(Base):
    """What one miner is paid in one batch (whole satoshis)."""

    __tablename__ = "payout_batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "miner_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("payout_batches.id"))
    miner_id: Mapped[int] = mapped_column(ForeignKey("miners.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    batch: Mapped[PayoutBatch] = relationship(back_populates="items")


class LedgerEntry(Base):
    """Append-only credit (positive) or debit (negative) of a miner's balance.

    The exact amount is ``amount + remainder``: ``amount`` is whole satoshis
    (floored) and ``remainder`` the exact sub-satoshi part in [0, 1), so PPS
    credits of fractions of a satoshi add up without loss. A balance is the
    sum over a miner's entries. ``kind`` names the source (e.g. "pplns",
    "pps", "payout", "adjustment"); ``block_id``/``batch_id`` say which block
    or payout batch it comes from. ``share_id_through`` is for per-share
    credits (PPS/FPPS): the highest ``shares.id`` the credit covers, so
    compaction knows which shares are already paid for.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_miner", "miner_id", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    miner_id: Mapped[int] = mapped_column(ForeignKey("miners.id"))
    kind: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(BigInteger)
    remainder: Mapped[Fraction] = mapped_column(LongExactFraction(), default=Fraction(0))
    block_id: Mapped[int | None] = mapped_column(ForeignKey("blocks.id"), nullable=True, index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("payout_batches.id"), nullable=True, index=True)
    share_id_through: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memo: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @staticmethod
    def split(exact: Fraction) -> tuple[int, Fraction]:
        """An exact amount as (whole satoshis floored, remainder in [0, 1))."""
        whole = exact.numerator // exact.denominator
        return whole, exact - whole

    @property
    def exact_amount(self) -> Fraction:
        return self.amount + Fraction(self.remainder or 0)


class ShareAggregate(Base):
    """Compacted shares: per worker and time bucket, how many and how much
    difficulty, so hashrate history outlives the share rows (revision 0002)."""

    __tablename__ = "share_aggregates"
    __table_args__ = (UniqueConstraint("worker_id", "bucket_start", "bucket_seconds"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    bucket_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    bucket_seconds: Mapped[int] = mapped_column(Integer)
    share_count: Mapped[int] = mapped_column(BigInteger)
    difficulty_sum: Mapped[Fraction] = mapped_column(LongExactFraction())
