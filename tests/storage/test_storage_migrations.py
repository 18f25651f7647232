"""Alembic migrations on SQLite and PostgreSQL: from empty, from the previous
revision with data in it, from a pre-migration database, and back down; the
shares indexes of revision 0004 against a ``create_all`` of the models."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from fractions import Fraction

import psycopg
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
    BLOCK_SHARE_WHERE,
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


def test_four_revisions():
    assert head_revision() == "0004"


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

    upgrade(engine, "0003")
    assert current_revision(engine) == "0003"
    assert [bytes(h) for h in stored_hash_column(engine)] == [bytes.fromhex(s.share_hash) for s in shares]
    assert not worker_foreign_keys(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, worker_id, created_at FROM shares ORDER BY id")).all() == before
    with Session(engine) as session:  # the ORM still speaks hex
        assert session.scalars(select(Share.share_hash).order_by(Share.id)).all() == [s.share_hash for s in shares]
        assert session.scalar(select(Share.id).where(Share.share_hash == share_hash(7))) == before[7][0]
    store = ShareStore(engine)
    assert store.write(shares, replay=True) == 0  # a replay still adds nothing
    assert store.write([make_share(1000)]) == 1
    assert share_count(engine) == 41 and set(hash_counts(engine).values()) == {1}
    upgrade(engine)
    assert schema_diff(engine) == [] and share_count(engine) == 41


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
    assert result.exit_code == 0 and "0001 -> 0004" in result.output
    result = runner.invoke(main, ["db", "current", "--url", db_url])
    assert "current: 0004" in result.output and "head: 0004" in result.output
    assert share_count(engine) == 0
    assert Share.__tablename__ in tables(engine)


# --- revision 0004: no unique index on share_hash, no worker index ---------------------------


@pytest.fixture
def other_url(db_url: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """A second, empty database of the same kind as ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'other.sqlite3'}"
    return request.getfixturevalue("pg_server").create_database()


def shares_indexes(engine: Engine) -> dict[str, tuple[bool, tuple[str, ...], str | None]]:
    """shares' secondary indexes and unique constraints: name -> (unique, columns,
    partial-index condition); SQLite's unnamed inline UNIQUE is named "UNIQUE"."""
    insp = inspect(engine)
    out: dict[str, tuple[bool, tuple[str, ...], str | None]] = {}
    for ix in insp.get_indexes("shares"):
        if "duplicates_constraint" in ix:  # PostgreSQL: the index behind a constraint, listed below
            continue
        opts = ix.get("dialect_options") or {}
        where = opts.get("sqlite_where", opts.get("postgresql_where"))
        out[ix["name"]] = (bool(ix["unique"]), tuple(ix["column_names"]), None if where is None else str(where))
    for uc in insp.get_unique_constraints("shares"):
        out[uc["name"] or "UNIQUE"] = (True, tuple(uc["column_names"]), None)
    return out


def indexes_0003(engine: Engine) -> dict:
    unique = "UNIQUE" if engine.dialect.name == "sqlite" else "shares_share_hash_key"
    return {
        "ix_shares_created_at": (False, ("created_at",), None),
        "ix_shares_worker": (False, ("worker_id", "created_at"), None),
        unique: (True, ("share_hash",), None),
    }


def indexes_0004(engine: Engine) -> dict:
    return {
        "ix_shares_created_at": (False, ("created_at",), None),
        "ux_shares_block_hash": (True, ("share_hash",), BLOCK_SHARE_WHERE[engine.dialect.name]),
    }


def shares_ddl(engine: Engine) -> tuple[list, list]:
    """shares' columns and the database's own definition of every index and constraint on it."""
    columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspect(engine).get_columns("shares")]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            table_sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'shares'")).scalar_one()
            defs = conn.execute(text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'shares' ORDER BY name"
            )).all()
            defs.append(("UNIQUE in table", "UNIQUE" in table_sql))
        else:
            defs = conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'shares' ORDER BY indexname"
            )).all() + conn.execute(text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'shares'::regclass ORDER BY conname"
            )).all()
    return columns, [tuple(d) for d in defs]


def share_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            (i, bytes(h), w, t, bool(b))
            for i, h, w, t, b in conn.execute(text("SELECT id, share_hash, worker_id, created_at, is_block FROM shares ORDER BY id"))
        ]


REFUSED = (sqlite3.IntegrityError, psycopg.IntegrityError)


def test_upgrade_0003_to_0004_keeps_rows_and_changes_only_indexes(engine: Engine):
    upgrade(engine, "0003")
    shares = [make_share(i, worker=f"rig{i % 4}", is_block=i in (5, 31)) for i in range(60)]
    store = ShareStore(engine)
    store.write(shares[:30])
    store.write(shares[30:])
    before = share_rows(engine)
    assert len(before) == 60 and shares_indexes(engine) == indexes_0003(engine)
    with pytest.raises(REFUSED):  # 0003: any hash is unique
        store.write([shares[0]])

    upgrade(engine)
    assert current_revision(engine) == "0004" and schema_diff(engine) == []
    assert shares_indexes(engine) == indexes_0004(engine)
    assert share_rows(engine) == before  # ids, order, hashes, workers, times
    assert store.write([shares[0]]) == 1  # an ordinary share's hash is no longer unique in the schema
    with pytest.raises(REFUSED):  # a block share's still is
        store.write([shares[5]])
    assert store.write([make_share(100)]) == 1
    after = share_rows(engine)
    assert after[:60] == before and after[60][0] > before[-1][0] and after[61][0] > after[60][0]
    assert [h for _, h, *_ in after[60:]] == [bytes.fromhex(shares[0].share_hash), bytes.fromhex(share_hash(100))]

    downgrade(engine, "0003")  # the unique comes back; a hash stored twice keeps its first row
    assert current_revision(engine) == "0003" and shares_indexes(engine) == indexes_0003(engine)
    assert share_rows(engine) == before + after[61:]
    upgrade(engine)
    assert shares_indexes(engine) == indexes_0004(engine) and schema_diff(engine) == []
    assert share_rows(engine) == before + after[61:]
    with Session(engine) as session:  # the ORM still reads the rows
        assert session.scalar(select(Share.id).where(Share.share_hash == share_hash(31), Share.is_block)) == before[31][0]


def test_adopted_create_all_schema_is_the_upgraded_one(engine: Engine, other_url: str):
    """A database made by ``create_all`` of the current models, adopted by the
    migrations, ends up with exactly the schema of one upgraded from empty."""
    upgrade(engine)
    adopted = make_engine(other_url)
    try:
        legacy = MetaData()
        for name in ("miners", "workers", "shares", "blocks"):
            Base.metadata.tables[name].to_metadata(legacy)
        legacy.create_all(adopted)
        assert shares_indexes(adopted) == indexes_0004(adopted)
        upgrade(adopted)
        assert current_revision(adopted) == head_revision() and schema_diff(adopted) == []
        assert shares_ddl(adopted) == shares_ddl(engine)
        assert shares_indexes(engine) == indexes_0004(engine)
    finally:
        adopted.dispose()
