"""The shares indexes of revision 0004 are the ones the queries use: the
look-ups of a block's solving share use the partial ``ux_shares_block_hash``
(SQLite only uses a partial index when the query holds its condition as
written), and a replay's check for stored shares uses ``ix_shares_created_at``.
Checked on the query plans of the statements the code actually runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from fractions import Fraction

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from payouts.ledger import solving_share_id
from pool.storage.compact import plan_compaction
from pool.storage.db import make_engine, upgrade
from pool.storage.models import Block, Share
from pool.storage.store import ShareStore
from tests.storage.helpers import make_share, share_hash

BLOCK_INDEX = "ux_shares_block_hash"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    ShareStore(engine).write([make_share(i, worker=f"rig{i % 3}", is_block=i in (40, 90)) for i in range(120)])
    with Session(engine) as session, session.begin():
        session.add(Block(height=101, hash=share_hash(90), prevhash="00" * 32, reward=50, status="pending"))
    yield engine
    engine.dispose()


def plan(engine: Engine, statement: str, params: object = ()) -> str:
    """The database's plan for ``statement`` (PostgreSQL with sequential scans
    discouraged: on a small table it would rather scan, and the question is
    whether the index applies at all)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
            return "\n".join(str(r[-1]) for r in rows)
        conn.exec_driver_sql("SET enable_seqscan = off")
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}", params).all())


def captured_hash_lookups(engine: Engine, run) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    """The statements (and parameters) ``run`` sends that select shares by share_hash."""
    seen: list[tuple[str, object]] = []

    def listen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "FROM shares" in statement and "share_hash =" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    return seen


def test_solving_share_lookups_use_the_partial_index(engine: Engine):
    with Session(engine) as session:
        block = session.scalar(select(Block))
        block_share = session.scalar(select(Share.id).where(Share.share_hash == share_hash(90), Share.is_block))
        found: list[int | None] = []
        ledger = captured_hash_lookups(engine, lambda: found.append(solving_share_id(session, block)))
        compaction = captured_hash_lookups(
            engine, lambda: plan_compaction(session, older_than=dt.timedelta(0), window_factor=Fraction(2),
                                            now=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)),
        )
    assert found == [block_share] and block_share is not None
    assert len(ledger) == 1 and len(compaction) == 1
    for statement, params in ledger + compaction:
        assert BLOCK_INDEX in plan(engine, statement, params), statement


def test_the_index_needs_the_block_condition_as_written(engine: Engine):
    """Controls: without ``is_block`` the partial index cannot serve the look-up,
    and on SQLite ``IS 1`` (``.is_(True)``) is not the index's ``= 1``."""
    digest = bytes.fromhex(share_hash(40))
    marker = "?" if engine.dialect.name == "sqlite" else "%s"
    assert BLOCK_INDEX in plan(engine, f"SELECT id FROM shares WHERE share_hash = {marker} AND "
                               + ("is_block = 1" if engine.dialect.name == "sqlite" else "is_block"), (digest,))
    assert BLOCK_INDEX not in plan(engine, f"SELECT id FROM shares WHERE share_hash = {marker}", (digest,))
    if engine.dialect.name == "sqlite":
        assert BLOCK_INDEX not in plan(engine, "SELECT id FROM shares WHERE share_hash = ? AND is_block IS 1", (digest,))


def test_replay_check_uses_the_created_at_index(engine: Engine):
    from pool.storage import store

    if engine.dialect.name == "sqlite":
        query, params = store._SQLITE_STORED, ("2025-01-01 00:00:00.000000", "2025-01-01 00:01:00.000000")
    else:
        query, params = store._PG_STORED, ("2025-01-01 00:00:00+00", "2025-01-01 00:01:00+00")
    assert "ix_shares_created_at" in plan(engine, query, params)
