"""Batched, idempotent share inserts: one transaction per batch, in a worker thread.

The hot insert bypasses the ORM (rows are plain tuples): on SQLite an
``executemany`` of ``INSERT ... ON CONFLICT(share_hash) DO NOTHING``; on
PostgreSQL a ``COPY`` into a temporary stage table followed by
``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Either way a share already
present (a replayed spool) is skipped, so a replay never double-counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal

import psycopg
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Block, Miner, Worker
from .records import BlockRecord, ShareRecord, ShareRow, ShareRows

log = logging.getLogger(__name__)

NAME_MAX = 128  # miners.address and workers.name column width
# The writer's SQLite connections: a page cache that holds the share_hash index
# (random keys touch pages all over it) and fewer, larger WAL checkpoints (each
# one fsyncs). Readers keep SQLite's defaults.
SQLITE_WRITER_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=10000")
WorkerKey = tuple[str, str]
InsertMethod = Literal["auto", "copy", "executemany"]

_SHARE_COLUMNS = "share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at"
_SQLITE_INSERT = f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(share_hash) DO NOTHING"
_PG_INSERT = f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (share_hash) DO NOTHING"
_PG_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS stope_share_stage (ord integer, "
    "share_hash varchar(64), worker_id integer, job_id varchar(32), height integer, "
    "difficulty varchar(120), network_difficulty varchar(120), is_block boolean, created_at timestamptz"
    ") ON COMMIT DELETE ROWS"
)
_PG_COPY = f"COPY stope_share_stage (ord, {_SHARE_COLUMNS}) FROM STDIN"
_PG_COPY_DIRECT = f"COPY shares ({_SHARE_COLUMNS}) FROM STDIN"
# ORDER BY ord: ids are handed out in arrival order (see _insert_shares).
_PG_FROM_STAGE = (
    f"INSERT INTO shares ({_SHARE_COLUMNS}) SELECT {_SHARE_COLUMNS} FROM stope_share_stage "
    "ORDER BY ord ON CONFLICT (share_hash) DO NOTHING"
)


def worker_key(address: str, worker: str) -> WorkerKey:
    """The (address, worker) pair as stored: names longer than the column are cut."""
    return address[:NAME_MAX], worker[:NAME_MAX]


def _dialect_insert(dialect: str):  # type: ignore[no-untyped-def]
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"unsupported database dialect {dialect!r} (SQLite and PostgreSQL are)")


class WorkerDirectory:
    """Resolves (address, worker name) to a worker id, creating rows on first sight.

    Creation is ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT``, so two
    pool processes sharing one database never collide. Ids are cached only
    once the transaction that made them committed (``remember``).
    """

    def __init__(self) -> None:
        self._cache: dict[WorkerKey, int] = {}

    def resolve(self, session: Session, address: str, name: str) -> int:
        """One worker id inside ``session``'s transaction (cached at once: the
        caller forgets the cache if that transaction fails)."""
        key = worker_key(address, name)
        ids = self.resolve_many(session.connection(), [key])
        self.remember(ids)
        return ids[key]

    def resolve_many(self, conn: Connection, keys: Iterable[WorkerKey]) -> dict[WorkerKey, int]:
        out: dict[WorkerKey, int] = {}
        missing: set[WorkerKey] = set()
        for key in keys:
            cached = self._cache.get(key)
            if cached is None:
                missing.add(key)
            else:
                out[key] = cached
        if not missing:
            return out
        insert = _dialect_insert(conn.dialect.name)
        addresses = sorted({a for a, _ in missing})
        conn.execute(insert(Miner).on_conflict_do_nothing(index_elements=["address"]), [{"address": a} for a in addresses])
        miner_ids = {a: i for a, i in conn.execute(select(Miner.address, Miner.id).where(Miner.address.in_(addresses)))}
        wanted = sorted((miner_ids[a], n) for a, n in missing)
        conn.execute(
            insert(Worker).on_conflict_do_nothing(index_elements=["miner_id", "name"]),
            [{"miner_id": m, "name": n} for m, n in wanted],
        )
        rows = conn.execute(
            select(Worker.miner_id, Worker.name, Worker.id).where(
                Worker.miner_id.in_({m for m, _ in wanted}), Worker.name.in_({n for _, n in wanted})
            )
        )
        address_of = {i: a for a, i in miner_ids.items()}
        for miner_id, name, worker_id in rows:
            key = (address_of[miner_id], name)
            if key in missing:
                out[key] = worker_id
        return out

    def remember(self, ids: dict[WorkerKey, int]) -> None:
        self._cache.update(ids)

    def forget(self) -> None:
        self._cache.clear()


def _upsert_block(session: Session, record: BlockRecord, worker_id: int) -> None:
    existing = session.scalar(select(Block).where(Block.hash == record.hash))
    if existing is not None:
        existing.status = record.status
        existing.submit_result = record.submit_result
        return
    session.add(
        Block(
            height=record.height,
            hash=record.hash,
            prevhash=record.prevhash,
            worker_id=worker_id,
            reward=record.reward,
            status=record.status,
            submit_result=record.submit_result,
        )
    )


def write_block(engine: Engine, directory: WorkerDirectory, record: BlockRecord) -> None:
    """Insert or update one block row (its own transaction)."""
    try:
        with Session(engine) as session, session.begin():
            _upsert_block(session, record, directory.resolve(session, record.address, record.worker))
    except BaseException:
        directory.forget()  # ids resolved in the failed transaction may not exist
        raise


class ShareStore:
    """Writes batches of spool entries (shares and blocks), one transaction each."""

    def __init__(self, engine: Engine, directory: WorkerDirectory | None = None, *, method: InsertMethod = "auto") -> None:
        self.engine = engine
        self.directory = directory or WorkerDirectory()
        self.dialect = engine.dialect.name
        _dialect_insert(self.dialect)  # refuse an unsupported database now, not mid-run
        if method == "auto":
            method = "copy" if self.dialect == "postgresql" else "executemany"
        if method == "copy" and self.dialect != "postgresql":
            raise ValueError("COPY is PostgreSQL only")
        self.method = method

    def write(self, entries: Sequence[ShareRow | ShareRecord | BlockRecord], *, replay: bool = False) -> int:
        """Commit ``entries`` in one transaction; return how many share rows were new.

        ``replay``: many of them are probably stored already (a spool replay),
        so skip the PostgreSQL fast path that assumes they are new.
        """
        if any(isinstance(e, ShareRecord) for e in entries):
            rows = ShareRows()
            entries = [rows(e) if isinstance(e, ShareRecord) else e for e in entries]
        keys = {pair: worker_key(*pair) for pair in {(e.address, e.worker) for e in entries}}
        with Session(self.engine) as session, session.begin():
            conn = session.connection()
            ids = self.directory.resolve_many(conn, set(keys.values()))
            worker_ids = {pair: ids[key] for pair, key in keys.items()}
            shares = [e for e in entries if isinstance(e, ShareRow)]
            inserted = self._insert_shares(conn, shares, worker_ids, replay) if shares else 0
            for e in entries:
                if isinstance(e, BlockRecord):
                    _upsert_block(session, e, worker_ids[(e.address, e.worker)])
        self.directory.remember(ids)
        return inserted

    def _insert_shares(
        self, conn: Connection, shares: list[ShareRow], worker_ids: dict[tuple[str, str], int], replay: bool
    ) -> int:
        # Hot path: the spool already put every value in its stored form; only the
        # worker id is filled in. No ORM, no per-value type processing.
        rows = [(h, worker_ids[(a, w)], j, ht, d, n, b, t) for h, a, w, j, ht, d, n, b, t in shares]
        # Rows go in arrival order (not sorted by key): shares.id order is the order
        # shares were accepted, which PPLNS windows and compaction rely on.
        if self.dialect == "sqlite":
            info = conn.connection.info
            if not info.get("stope_writer"):
                for pragma in SQLITE_WRITER_PRAGMAS:
                    conn.exec_driver_sql(pragma)
                info["stope_writer"] = True
            return conn.exec_driver_sql(_SQLITE_INSERT, rows).rowcount
        if self.method == "executemany":
            return conn.exec_driver_sql(_PG_INSERT, [(*row[:7], row[7] + "+00") for row in rows]).rowcount
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            # Fast path: new shares COPY straight into the table. If any is already
            # there (a replay, a retried commit), undo that and take the idempotent path.
            if not replay:
                cur.execute("SAVEPOINT stope_copy")
                try:
                    with cur.copy(_PG_COPY_DIRECT) as copy:
                        copy.write(copy_text(rows, numbered=False))
                except psycopg.errors.UniqueViolation:
                    cur.execute("ROLLBACK TO SAVEPOINT stope_copy")
                else:
                    cur.execute("RELEASE SAVEPOINT stope_copy")
                    return len(rows)
            cur.execute(_PG_STAGE)
            with cur.copy(_PG_COPY) as copy:
                copy.write(copy_text(rows))
            cur.execute(_PG_FROM_STAGE)
            return cur.rowcount


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(rows: list[tuple], *, numbered: bool = True) -> str:
    """Share rows (times as UTC text) in COPY text format, numbered: one string,
    no per-value adaptation (the COPY fast path)."""
    esc = _COPY_ESCAPES
    if not numbered:
        return "".join(
            f"{h.translate(esc)}\t{w}\t{j.translate(esc)}\t{ht}\t{d}\t{n}\t{'t' if b else 'f'}\t{t}+00\n"
            for h, w, j, ht, d, n, b, t in rows
        )
    return "".join(
        f"{i}\t{h.translate(esc)}\t{w}\t{j.translate(esc)}\t{ht}\t{d}\t{n}\t{'t' if b else 'f'}\t{t}+00\n"
        for i, (h, w, j, ht, d, n, b, t) in enumerate(rows)
    )


def write_shares(engine: Engine, directory: WorkerDirectory, records: Sequence[ShareRecord]) -> int:
    """Insert a batch in one transaction; a record already present is skipped."""
    return ShareStore(engine, directory).write(records)
