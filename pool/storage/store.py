"""Batched share inserts: one transaction per batch, in a worker thread.

The hot insert bypasses SQLAlchemy (the spool already holds every value in
its stored form; the driver's own cursor gets them): on SQLite a few
multi-row ``INSERT ... VALUES`` statements per batch; on
PostgreSQL a ``COPY`` (text format, one string per chunk of rows) straight
into ``shares``. SQLAlchemy still runs the rest of the transaction (worker
ids, blocks).

``shares.share_hash`` has no unique index (revision 0004: it was the largest
per-share cost, and it grew with the table), so the database does not refuse
a share stored twice. Idempotence is the caller's choice instead:
``write(..., replay=True)``, for rows that may be stored already (a spool
replay, a batch retried after an error whose COMMIT may have gone through),
first reads the hashes stored within the batch's ``created_at`` range (one
range scan of ``ix_shares_created_at``: a spooled row's time is exactly the
text that was stored) and inserts only the others, once each. A new batch
(``replay=False``) goes in directly. Block shares alone are unique in the
schema (``ux_shares_block_hash``), so a block share stored twice by mistake
is refused, and the writer then isolates it as it does any refused row.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, Literal

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Block, Miner, Worker
from .records import BlockRecord, ShareRecord, ShareRow, ShareRows

log = logging.getLogger(__name__)

NAME_MAX = 128  # miners.address and workers.name column width
# The writer's SQLite connections: a larger page cache (the indexes' hot pages,
# the tail of the table) and fewer, larger WAL checkpoints (each one fsyncs).
# Readers keep SQLite's defaults.
SQLITE_WRITER_PRAGMAS = ("PRAGMA cache_size=-65536", "PRAGMA wal_autocheckpoint=10000")
WorkerKey = tuple[str, str]
# auto: "batch" on SQLite (multi-row INSERT ... VALUES), "copy" on PostgreSQL;
# "executemany" (a row at a time through the driver) is kept for comparison.
InsertMethod = Literal["auto", "batch", "copy", "executemany"]
# Rows per COPY chunk: the server parses one chunk while the next is formatted.
COPY_CHUNK = 2000

_SHARE_COLUMNS = "share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at"
_SQLITE_INSERT = f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# SQLite's hot insert: multi-row ``INSERT ... VALUES (...), (...)`` statements of
# up to SQLITE_MAX_ROWS rows, so SQLite runs each in one sqlite3_step with the
# GIL released throughout. An executemany releases and re-takes the GIL for
# every row, and while the event loop is busy each re-take waits for the
# interpreter's switch interval: measured on 2 cores with another thread busy
# (bench/db.py "GIL contended"), a few thousand rows/s that way. Rows per
# statement are a full chunk or a power of two (``chunk_sizes``), so a handful
# of statement texts cover every batch and each is compiled once (the
# driver's statement cache). Against the earlier single
# ``INSERT ... SELECT FROM json_each(?)`` (rows as one JSON text): 2.2-2.4 CPU
# us/row instead of 3.6, counting the Python that builds the parameters
# (raw sqlite3, 400 000 rows in batches of 4 000, 2 cores).
SQLITE_MAX_ROWS = 2048
_PG_INSERT = f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
_PG_COPY = f"COPY shares ({_SHARE_COLUMNS}) FROM STDIN"
# A replay's look-up of the shares already stored in its time range (ix_shares_created_at).
_SQLITE_STORED = "SELECT share_hash FROM shares WHERE created_at BETWEEN ? AND ?"
_PG_STORED = "SELECT share_hash FROM shares WHERE created_at BETWEEN %s AND %s"
_PAIR = itemgetter(1, 2)  # ShareRow -> (address, worker)


class BadShareRecord(ValueError):
    """A share the database would refuse, caught before it is sent (a share
    hash that is not 64 hex digits): the writer quarantines it like a refused row."""


def unhex(share_hash: str) -> bytes:
    """A share hash (display hex) in its stored form, 32 raw bytes (revision 0003)."""
    try:
        raw = bytes.fromhex(share_hash)
    except (ValueError, TypeError) as exc:
        raise BadShareRecord(f"share hash {share_hash!r} is not hex") from exc
    if len(raw) != 32 or len(share_hash) != 64:
        raise BadShareRecord(f"share hash {share_hash!r} is not 64 hex digits")
    return raw


@functools.lru_cache(maxsize=None)
def _values_insert(rows: int) -> str:
    return f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * rows)


def chunk_sizes(count: int, largest: int = SQLITE_MAX_ROWS) -> list[int]:
    """``count`` rows as statements of ``largest`` rows, then of falling powers of
    two: few distinct statement texts, each compiled once (``largest`` a power of two)."""
    sizes = [largest] * (count // largest)
    count %= largest
    size = largest
    while count:
        while size > count:
            size >>= 1
        sizes.append(size)
        count -= size
    return sizes


def sqlite_params(shares: Sequence[ShareRow], worker_ids: dict[tuple[str, str], int]) -> list[object]:
    """Every row's eight values, flat, in column order (the hash as its 32 bytes)."""
    blob = hash_blob(shares)
    params: list[object] = []
    extend = params.extend
    at = 0
    for _, a, w, j, ht, d, n, b, t in shares:
        extend((blob[at : at + 32], worker_ids[a, w], j, ht, d, n, b, t))
        at += 32
    return params


def hash_blob(shares: Sequence[ShareRow]) -> bytes:
    """Every share's hash as 32 bytes, concatenated (SQLite's batch insert)."""
    hashes = [s[0] for s in shares]
    try:
        if set(map(len, hashes)) == {64}:
            blob = bytes.fromhex("".join(hashes))
            if len(blob) == 32 * len(hashes):
                return blob
    except (ValueError, TypeError):
        pass
    for h in hashes:
        unhex(h)  # raises BadShareRecord naming the culprit
    raise BadShareRecord("share hashes do not line up as 32-byte values")  # not reached


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
            method = "copy" if self.dialect == "postgresql" else "batch"
        if method == "copy" and self.dialect != "postgresql":
            raise ValueError("COPY is PostgreSQL only")
        if method == "batch" and self.dialect != "sqlite":
            raise ValueError("the multi-row batch insert is SQLite only")
        self.method = method

    def sync(self) -> None:
        """Make every commit so far survive an OS crash (blocking; call from a thread).

        SQLite runs WAL with ``synchronous=NORMAL``: a commit is not fsynced, so it
        survives a crash of the pool but not of the machine until the next
        checkpoint. The writer calls this before deleting the spool segments that
        are the other copy of those rows: the log (and the database file, for a
        checkpoint in progress) is fsynced. PostgreSQL's commits are durable already.
        """
        if self.dialect != "sqlite":
            return
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        for path in (database + "-wal", database):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def write(self, entries: Sequence[ShareRow | ShareRecord | BlockRecord], *, replay: bool = False) -> int:
        """Commit ``entries`` in one transaction; return how many share rows were new.

        ``replay``: some of them may be stored already (a spool replay, a retry
        after an error that may have followed a COMMIT): shares already stored
        with the same hash within the batch's ``created_at`` range, and repeats
        within the batch, are skipped. Without it every share is inserted: the
        schema does not refuse a repeat (but for block shares), so anything that
        may have reached the database before must go through ``replay=True``.
        """
        blocks: list[BlockRecord] = []
        if set(map(type, entries)) <= {ShareRow}:  # the writer's usual batch: spooled shares only
            shares: Sequence[ShareRow] = entries  # type: ignore[assignment]
        else:
            convert = ShareRows()
            shares = []
            for e in entries:
                if isinstance(e, BlockRecord):
                    blocks.append(e)
                else:
                    shares.append(convert(e) if isinstance(e, ShareRecord) else e)
        pairs = set(map(_PAIR, shares))
        pairs.update((b.address, b.worker) for b in blocks)
        keys = {pair: worker_key(*pair) for pair in pairs}
        with self.engine.begin() as conn:
            ids = self.directory.resolve_many(conn, set(keys.values()))
            worker_ids = {pair: ids[key] for pair, key in keys.items()}
            if replay and shares:
                shares = self._unstored(conn, shares)
            inserted = self._insert_shares(conn, shares, worker_ids) if shares else 0
            if blocks:
                with Session(bind=conn) as session:
                    for b in blocks:
                        _upsert_block(session, b, worker_ids[(b.address, b.worker)])
                    session.flush()
        self.directory.remember(ids)
        return inserted

    def _unstored(self, conn: Connection, shares: Sequence[ShareRow]) -> list[ShareRow]:
        """``shares`` less those already stored and repeats within the batch, in order.

        A share stored before has the very same ``created_at`` (a spooled row's
        time is the text that was inserted), so it lies within the batch's time
        range: one range scan of ``ix_shares_created_at`` finds it, however
        large the table. Raises ``BadShareRecord`` for a hash that is not 64 hex digits.
        """
        times = [row[8] for row in shares]
        low, high = min(times), max(times)
        raw: Any = conn.connection.driver_connection
        if self.dialect == "sqlite":
            cur = raw.cursor()
            try:
                cur.execute(_SQLITE_STORED, (low, high))
                seen = {bytes(h) for (h,) in cur.fetchall()}
            finally:
                cur.close()
        else:
            with raw.cursor() as cur:
                cur.execute(_PG_STORED, (low + "+00", high + "+00"))
                seen = {bytes(h) for (h,) in cur.fetchall()}
        stored = len(seen)
        fresh = []
        for row in shares:
            key = unhex(row[0])
            if key not in seen:
                seen.add(key)
                fresh.append(row)
        if len(fresh) < len(shares):
            log.debug(
                "replayed batch of %d share(s): %d already stored (of %d stored in %s .. %s) or repeated",
                len(shares), len(shares) - len(fresh), stored, low, high,
            )
        return fresh

    def _insert_shares(self, conn: Connection, shares: Sequence[ShareRow], worker_ids: dict[tuple[str, str], int]) -> int:
        # Hot path: the spool already put every value in its stored form; only the
        # worker id is filled in (and, on SQLite, the hash turned into bytes). No
        # SQLAlchemy, no per-value type processing: the driver's own cursor.
        # Rows go in arrival order (not sorted by key): shares.id order is the order
        # shares were accepted, which PPLNS windows and compaction rely on.
        raw: Any = conn.connection.driver_connection
        if self.dialect == "sqlite":
            info = conn.connection.info
            largest = info.get("stope_writer_rows")
            if largest is None:
                for pragma in SQLITE_WRITER_PRAGMAS:
                    raw.execute(pragma)
                # Eight parameters a row, within this build's limit (32 766 since 3.32, 999 before).
                fit = max(1, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 8)
                largest = info["stope_writer_rows"] = min(SQLITE_MAX_ROWS, 1 << (fit.bit_length() - 1))
            cur = raw.cursor()
            try:
                if self.method == "executemany":
                    cur.executemany(_SQLITE_INSERT, [
                        (unhex(h), worker_ids[a, w], j, ht, d, n, b, t) for h, a, w, j, ht, d, n, b, t in shares
                    ])
                else:
                    params = sqlite_params(shares, worker_ids)
                    at = 0
                    for rows in chunk_sizes(len(shares), largest):
                        cur.execute(_values_insert(rows), params[at : at + 8 * rows])
                        at += 8 * rows
            finally:
                cur.close()
            return len(shares)
        with raw.cursor() as cur:
            if self.method == "executemany":
                cur.executemany(_PG_INSERT, [
                    (unhex(h), worker_ids[a, w], j, ht, d, n, b, t + "+00") for h, a, w, j, ht, d, n, b, t in shares
                ])
            else:
                with cur.copy(_PG_COPY) as copy:
                    for i in range(0, len(shares), COPY_CHUNK):
                        copy.write(copy_text(shares[i : i + COPY_CHUNK], worker_ids))
        return len(shares)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(shares: Sequence[ShareRow], worker_ids: dict[tuple[str, str], int]) -> str:
    """Share rows in COPY text format (hash as bytea hex, time as UTC): one
    string, no per-value adaptation."""
    esc = _COPY_ESCAPES
    return "".join(
        f"\\\\x{h.translate(esc)}\t{worker_ids[a, w]}\t{j.translate(esc)}\t{ht}\t{d}\t{n}\t{'t' if b else 'f'}\t{t}+00\n"
        for h, a, w, j, ht, d, n, b, t in shares
    )


def write_shares(engine: Engine, directory: WorkerDirectory, records: Sequence[ShareRecord]) -> int:
    """Insert a batch in one transaction; a record already present is skipped (``replay=True``)."""
    return ShareStore(engine, directory).write(records, replay=True)
