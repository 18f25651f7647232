"""Small builders shared by the storage tests."""

from __future__ import annotations

import datetime as dt
import hashlib
from fractions import Fraction

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pool.storage.models import Share
from pool.storage.records import ShareRecord

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def share_hash(i: int) -> str:
    return hashlib.sha256(f"share-{i}".encode()).hexdigest()


def make_share(i: int, *, worker: str = "rig1", address: str = ADDRESS, at: dt.datetime | None = None,
               difficulty: Fraction = Fraction(1, 10000), network: Fraction = Fraction(3, 10000),
               is_block: bool = False) -> ShareRecord:
    return ShareRecord(
        share_hash=share_hash(i), address=address, worker=worker, job_id=f"{i % 7:x}", height=100 + i % 3,
        difficulty=difficulty, network_difficulty=network, is_block=is_block,
        created_at=at or T0 + dt.timedelta(seconds=i),
    )


def share_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Share)) or 0


def hash_counts(engine: Engine) -> dict[str, int]:
    with Session(engine) as session:
        return dict(session.execute(select(Share.share_hash, func.count()).group_by(Share.share_hash)).all())


def write_legacy_shares(engine: Engine, records: list[ShareRecord]) -> None:
    """Insert shares as revisions 0001-0002 stored them (share_hash as hex text),
    the way the writer of those revisions did: for migration tests."""
    from sqlalchemy import text

    from pool.storage.records import ShareRows

    rows = ShareRows().many(records)
    suffix = "+00" if engine.dialect.name == "postgresql" else ""
    with engine.begin() as conn:
        for r in rows:
            conn.execute(text("INSERT INTO miners (address) VALUES (:a) ON CONFLICT (address) DO NOTHING"), {"a": r.address})
            miner_id = conn.execute(text("SELECT id FROM miners WHERE address = :a"), {"a": r.address}).scalar_one()
            conn.execute(
                text("INSERT INTO workers (miner_id, name) VALUES (:m, :n) ON CONFLICT (miner_id, name) DO NOTHING"),
                {"m": miner_id, "n": r.worker},
            )
            worker_id = conn.execute(
                text("SELECT id FROM workers WHERE miner_id = :m AND name = :n"), {"m": miner_id, "n": r.worker}
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO shares (share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, "
                    "created_at) VALUES (:h, :w, :j, :ht, :d, :n, :b, :t)"
                ),
                {"h": r.share_hash, "w": worker_id, "j": r.job_id, "ht": r.height, "d": r.difficulty,
                 "n": r.network_difficulty, "b": r.is_block, "t": r.created_at + suffix},
            )
