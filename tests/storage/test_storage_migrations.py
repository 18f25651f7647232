"""Alembic migrations on SQLite and PostgreSQL: from empty, from the previous
revision with data in it, from a pre-migration database, and back down."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, inspect, select, text
from sqlalchemy.orm import Session

from pool.cli import main
from pool.storage.db import (
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    upgrade,
)
from pool.storage.models import (
    Base,
    LedgerEntry,
    Miner,
    PayoutBatch,
    PayoutBatchItem,
    Share,
    ShareAggregate,
    Worker,
)
from pool.storage.store import ShareStore
from tests.storage.helpers import T0, hash_counts, make_share, share_count, share_hash, write_legacy_shares

ALL_TABLES = {"miners", "workers", "shares", "blocks", "payout_batches", "payout_batch_items", "ledger_entries", "share_aggregates"}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def schema_diff(engine: Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_three_revisions():
    assert head_revision() == "0003"


def test_upgrade_from_empty_matches_models(engine: Engine):
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == ALL_TABLES
    assert schema_diff(engine) == []
    upgrade(engine)  # idempotent at head


def test_upgrade_from_previous_revision_keeps_data(engine: Engine):
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    assert "share_aggregates" not in tables(engine)
    write_legacy_shares(engine, [make_share(i) for i in range(50)])
    with Session(engine) as session, session.begin():
        miner = session.scalar(select(Miner))
        batch = PayoutBatch(idempotency_key="b-1", status="draft")
        session.add(batch)
        session.flush()
        session.add(PayoutBatchItem(batch_id=batch.id, miner_id=miner.id, amount=1234))
        whole, rest = LedgerEntry.split(Fraction(-7, 3))
        session.add(LedgerEntry(miner_id=miner.id, kind="pps", amount=whole, remainder=rest, share_id_through=10))

    upgrade(engine)
    assert current_revision(engine) == head_revision() and schema_diff(engine) == []
    assert share_count(engine) == 50
    with Session(engine) as session, session.begin():
        entry = session.scalar(select(LedgerEntry))
        assert (entry.amount, entry.remainder, entry.exact_amount) == (-3, Fraction(2, 3), Fraction(-7, 3))
        assert session.scalar(select(PayoutBatchItem.amount)) == 1234
        worker_id = session.scalar(select(Worker.id))
        session.add(ShareAggregate(worker_id=worker_id, bucket_start=T0, bucket_seconds=3600, share_count=1,
                                   difficulty_sum=Fraction(1, 3)))


def stored_hash_column(engine: Engine) -> list:
    """share_hash as the database itself holds it, in id order (no ORM type)."""
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text("SELECT share_hash FROM shares ORDER BY id"))]


def worker_foreign_keys(engine: Engine) -> list:
    return [fk for fk in inspect(engine).get_foreign_keys("shares") if fk["referred_table"] == "workers"]


def test_upgrade_0002_to_0003_converts_hashes_in_place(engine: Engine):
    """Hex text becomes 32 bytes, ids and order stay, the foreign key goes;
    replaying the same shares afterwards still adds nothing."""
    upgrade(engine, "0002")
    shares = [make_share(i, worker=f"rig{i % 3}") for i in range(40)]
    write_legacy_shares(engine, shares)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT id, worker_id, created_at FROM shares ORDER BY id")).all()
    assert stored_hash_column(engine) == [s.share_hash for s in shares]
    assert worker_foreign_keys(engine)

    upgrade(engine)
    assert current_revision(engine) == "0003" and schema_diff(engine) == []
    assert [bytes(h) for h in stored_hash_column(engine)] == [bytes.fromhex(s.share_hash) for s in shares]
    assert not worker_foreign_keys(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, worker_id, created_at FROM shares ORDER BY id")).all() == before
    with Session(engine) as session:  # the ORM still speaks hex
        assert session.scalars(select(Share.share_hash).order_by(Share.id)).all() == [s.share_hash for s in shares]
        assert session.scalar(select(Share.id).where(Share.share_hash == share_hash(7))) == before[7][0]
    store = ShareStore(engine)
    assert store.write(shares) == 0 and store.write(shares, replay=True) == 0  # still idempotent
    assert store.write([make_share(1000)]) == 1
    assert share_count(engine) == 41 and set(hash_counts(engine).values()) == {1}


def test_downgrade_0003_restores_hex_and_foreign_key(engine: Engine):
    upgrade(engine)
    shares = [make_share(i) for i in range(5)]
    ShareStore(engine).write(shares)
    downgrade(engine, "0002")
    assert current_revision(engine) == "0002"
    assert stored_hash_column(engine) == [s.share_hash for s in shares]
    assert worker_foreign_keys(engine)
    upgrade(engine)  # and up again
    assert schema_diff(engine) == [] and share_count(engine) == 5
    assert [bytes(h) for h in stored_hash_column(engine)] == [bytes.fromhex(s.share_hash) for s in shares]


def test_downgrade_to_previous_and_to_base(engine: Engine):
    upgrade(engine)
    ShareStore(engine).write([make_share(1)])
    downgrade(engine, "0001")
    assert current_revision(engine) == "0001" and "share_aggregates" not in tables(engine)
    assert share_count(engine) == 1
    downgrade(engine, "base")
    assert tables(engine) == set() and current_revision(engine) is None


def test_database_from_before_migrations_is_adopted(engine: Engine):
    """A database made by the old ``create_all`` (no alembic_version) upgrades in place."""
    legacy = MetaData()
    for name in ("miners", "workers", "shares", "blocks"):
        Base.metadata.tables[name].to_metadata(legacy)
    legacy.create_all(engine)
    ShareStore(engine).write([make_share(i) for i in range(5)])
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert tables(engine) == ALL_TABLES and schema_diff(engine) == []
    assert share_count(engine) == 5


def test_cli_upgrade_and_current(db_url: str, engine: Engine):
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade", "--url", db_url, "--revision", "0001"])
    assert result.exit_code == 0, result.output
    assert "empty -> 0001" in result.output
    result = runner.invoke(main, ["db", "upgrade", "--url", db_url])
    assert result.exit_code == 0 and "0001 -> 0003" in result.output
    result = runner.invoke(main, ["db", "current", "--url", db_url])
    assert "current: 0003" in result.output and "head: 0003" in result.output
    assert share_count(engine) == 0
    assert Share.__tablename__ in tables(engine)
