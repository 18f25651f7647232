"""Typed ORM models: miners, workers, shares, blocks."""

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
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Miner(Base):
    __tablename__ = "miners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())
    workers: Mapped[list["Worker"]] = relationship(back_populates="miner")


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("miner_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    miner_id: Mapped[int] = mapped_column(ForeignKey("miners.id"))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())
    miner: Mapped[Miner] = relationship(back_populates="workers")


class Share(Base):
    __tablename__ = "shares"
    __table_args__ = (Index("ix_shares_created_at", "created_at"), Index("ix_shares_worker", "worker_id", "created_at"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # The share's header hash: unique per share, so a replayed spool never double-counts.
    share_hash: Mapped[str] = mapped_column(String(64), unique=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id"))
    job_id: Mapped[str] = mapped_column(String(32))
    height: Mapped[int] = mapped_column(Integer)
    difficulty: Mapped[Fraction] = mapped_column(ExactFraction())
    network_difficulty: Mapped[Fraction] = mapped_column(ExactFraction())
    is_block: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class Block(Base):
    __tablename__ = "blocks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    height: Mapped[int] = mapped_column(Integer, index=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    prevhash: Mapped[str] = mapped_column(String(64))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id"), nullable=True)
    reward: Mapped[int] = mapped_column(BigInteger)
    # pending (submitted, awaiting maturity), confirmed, orphaned, rejected
    status: Mapped[str] = mapped_column(String(16), default="pending")
    submit_result: Mapped[str | None] = mapped_column(String(128), nullable=True)
    confirmations: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
