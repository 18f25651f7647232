"""Share-row write throughput into SQLite (WAL) and PostgreSQL, batched vs one row per transaction.

Run: ``.venv/bin/python bench/db.py`` (options: ``--rows``, ``--single-rows``,
``--batch``, ``--pg-url``, ``--no-pg``, ``--pipeline-rows``, ``--growth-fill``).
Prints one table, all measured in the same run:

* one row per transaction (``ShareStore.write([row])``, a commit each);
* batched, ``--batch`` rows per transaction, sustained over ``--rows`` rows
  into a growing, indexed table, through ``ShareStore.write`` (the code the
  pool's writer runs), each insert method: SQLite the writer's one-statement
  multi-row ``INSERT ... VALUES`` and a per-row ``executemany``;
  PostgreSQL the writer's ``COPY`` (psycopg 3) and ``executemany``. The
  targets are checked against the writer's own method (marked "pool");
* the writer's method again while another thread keeps the GIL busy, as the
  pool's event loop does under load ("GIL contended"): an insert that
  releases the GIL per row waits for the switch interval at every row;
* the whole pipeline the pool uses (``ShareWriter``: spool append + group
  fsync + queue + batched inserts in a worker thread), from the first call
  until everything is committed: ``record_many()`` of ``--per-call`` shares
  from ``--producers`` concurrent callers (what ``Pool.submit_shares`` does
  with the shares of one read), and ``record()`` one share per call;
* SQLite, table growth ("growth"): the writer's batched insert
  (``--growth-batch`` rows per transaction, ``--growth-rows`` rows) into a
  near-empty table, then into the same table once it holds
  ``--growth-fill`` rows, with the current indexes (revision 0004:
  ``created_at`` and the partial block-hash index) and with those of
  revision 0003 (a unique index on the random 32-byte ``share_hash`` and one
  on ``(worker_id, created_at)``) side by side: with 0003's, each insert
  touches random pages of two indexes and its cost grows with the table.
  The fill itself runs in SQLite (``INSERT ... SELECT`` of generated rows,
  20 000 a transaction, the indexes in place, so they grow as the writer
  grows them) and is not timed.

PostgreSQL is a throwaway cluster with durable settings (fsync and
synchronous_commit on) unless ``--pg-url`` names a server. SQLite is a file
in a temporary directory, WAL mode, ``synchronous=NORMAL`` (the pool's
engine settings). Row generation is not timed; the direct modes start from
``ShareRow`` (the form the writer gets from the spool, which converts each
share once when it spools it), the pipeline from ``ShareRecord``. Shares are
as the pool makes them: a mainnet-like network difficulty (an exact fraction,
27 characters) and a vardiff-like share difficulty, one object each per job
and connection, as in the pool; each share has its own timestamp.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import hashlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from sqlalchemy import Engine

from pool.bitcoin.target import bits_to_target, target_to_difficulty
from pool.storage.db import head_revision, make_engine, upgrade
from pool.storage.records import ShareRecord, ShareRow, ShareRows
from pool.storage.store import InsertMethod, ShareStore
from pool.storage.writer import ShareWriter

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"
TARGETS = {"sqlite": 70_000, "postgresql": 50_000}
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
# Mainnet-like: bits 0x17034219 as the pool's exact fraction (27 characters).
NETWORK_DIFFICULTY = target_to_difficulty(bits_to_target(0x17034219))
# Vardiff settles on float-derived values: Fraction(float) has a 2**k denominator.
SHARE_DIFFICULTIES = [Fraction(65536 * 1.37 ** k) for k in range(50)]


def make_rows(start: int, count: int) -> list[ShareRecord]:
    """Distinct shares from 50 workers (one difficulty object per worker, as a
    connection's current difficulty is), a new job every 1 000 shares."""
    out = []
    for i in range(start, start + count):
        out.append(ShareRecord(
            share_hash=hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
            address=ADDRESS, worker=f"rig{i % 50}", job_id=f"{i // 1000:x}", height=800_000 + i // 100_000,
            difficulty=SHARE_DIFFICULTIES[i % 50], network_difficulty=NETWORK_DIFFICULTY, is_block=False,
            created_at=T0 + dt.timedelta(microseconds=i * 100),
        ))
    return out


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """Rows, wall seconds, and CPU seconds of this process (all threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    rows = fn()
    return rows, time.perf_counter() - started, time.process_time() - cpu


@contextlib.contextmanager
def busy_thread(on: bool) -> Iterator[None]:
    """A thread running Python bytecode nonstop (holding the GIL but for switch intervals)."""
    if not on:
        yield
        return
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def single(store: ShareStore, rows: list[ShareRow]) -> int:
    for r in rows:
        store.write([r])
    return len(rows)


def batched(store: ShareStore, rows: list[ShareRow], batch: int) -> int:
    inserted = 0
    for i in range(0, len(rows), batch):
        inserted += store.write(rows[i : i + batch])
    assert inserted == len(rows), (inserted, len(rows))
    return inserted


async def _pipeline(
    engine: Engine, rows: list[ShareRecord], spool_dir: Path, batch: int, producers: int, per_call: int
) -> None:
    writer = ShareWriter(engine, spool_dir, batch_size=batch, flush_interval=0.01, queue_size=max(len(rows), 1))
    per = len(rows) // producers + 1

    async def produce(part: list[ShareRecord]) -> None:
        if per_call == 1:
            for r in part:
                await writer.record(r)
        else:
            for i in range(0, len(part), per_call):
                await writer.record_many(part[i : i + per_call])

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as inner:
            for k in range(producers):
                inner.start_soon(produce, rows[k * per : (k + 1) * per])
        await writer.drained()
        nursery.cancel_scope.cancel()
    assert writer.rows_written == len(rows), (writer.rows_written, len(rows))


def pipeline(engine: Engine, rows: list[ShareRecord], spool_dir: Path, batch: int, producers: int, per_call: int) -> int:
    trio.run(_pipeline, engine, rows, spool_dir, batch, producers, per_call)
    return len(rows)


def fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


Result = tuple[str, str, int, float, float]

# Rows generated in SQLite for the growth runs: like make_rows' (random hash, 50
# workers, a job per 1 000 shares, 100 us apart), timed before T0.
_FILL = (
    "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) "
    "INSERT INTO shares (share_hash, worker_id, job_id, height, difficulty, network_difficulty, is_block, created_at) "
    "SELECT randomblob(32), 1 + abs(random()) % 50, printf('%x', i / 1000), 800000, ?3, ?4, 0, "
    "printf('%s.%06d', datetime('2024-12-01', '+' || (i / 10000) || ' seconds'), (i % 10000) * 100) FROM n"
)


def fill(engine: Engine, rows: int) -> None:
    """Add ``rows`` generated share rows, 20 000 a transaction (not timed)."""
    difficulty = f"{SHARE_DIFFICULTIES[7].numerator}/{SHARE_DIFFICULTIES[7].denominator}"
    network = f"{NETWORK_DIFFICULTY.numerator}/{NETWORK_DIFFICULTY.denominator}"
    for start in range(0, rows, 20_000):
        with engine.begin() as conn:
            conn.exec_driver_sql(_FILL, (start, min(start + 20_000, rows) - 1, difficulty, network))
    checkpoint(engine)


def checkpoint(engine: Engine) -> None:
    """Write the WAL back now: the measured inserts must not pay for the fill's pages."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def bench_growth(new_url: Callable[[], str], args: argparse.Namespace) -> list[Result]:
    """SQLite: the writer's batched insert into a near-empty table and into one of
    ``--growth-fill`` rows, with the current indexes and with revision 0003's."""
    results: list[Result] = []
    cursor = 10**9  # hashes apart from the other modes' (a fresh database each, anyway)
    for label, revision in ((f"indexes of {head_revision()} (now)", "head"), ("indexes of 0003 (before)", "0003")):
        engine = make_engine(new_url())
        try:
            upgrade(engine, revision)
            store = ShareStore(engine)
            store.write(make_rows(cursor, 100))  # workers exist, caches warm
            cursor += 100
            checkpoint(engine)
            for size in ("empty", f"{args.growth_fill / 1e6:g}M rows"):
                if size != "empty":
                    fill(engine, args.growth_fill)
                convert = ShareRows()
                rows = [convert(r) for r in make_rows(cursor, args.growth_rows)]
                cursor += args.growth_rows
                run = functools.partial(batched, store, rows, args.growth_batch)
                results.append(("sqlite", f"growth x{args.growth_batch}, {label}, into {size}", *timed(run)))
        finally:
            engine.dispose()
    return results


def bench_database(name: str, new_url: Callable[[], str], args: argparse.Namespace, tmp: Path) -> list[Result]:
    results: list[Result] = []
    cursor = 0

    def take(n: int) -> list[ShareRecord]:
        nonlocal cursor
        rows = make_rows(cursor, n)
        cursor += n
        return rows

    def take_rows(n: int) -> list[ShareRow]:
        convert = ShareRows()
        return [convert(r) for r in take(n)]

    # (label, method, GIL contended); the first is the writer's own ("auto").
    if name == "postgresql":
        methods: list[tuple[str, InsertMethod, bool]] = [("pool: COPY", "copy", False), ("executemany", "executemany", False)]
    else:
        methods = [("pool: INSERT..VALUES", "batch", False), ("executemany", "executemany", False)]
    methods.append((f"{methods[0][0]}, GIL contended", methods[0][1], True))
    methods.append((f"{methods[1][0]}, GIL contended", methods[1][1], True))
    engine = fresh_engine(new_url())
    try:
        store = ShareStore(engine)
        store.write(take(100))  # workers exist, caches warm
        rows = take_rows(args.single_rows)
        results.append((name, "one row per transaction", *timed(functools.partial(single, store, rows))))
    finally:
        engine.dispose()
    for label, method, contended in methods:
        engine = fresh_engine(new_url())  # each mode starts from an empty table
        try:
            store = ShareStore(engine, method=method)
            store.write(take(100))
            # Contended: fewer rows (a per-row insert crawls), same batch size.
            count = args.rows if not contended else args.rows // 5 if label.startswith("pool") else args.rows // 30
            rows = take_rows(count)
            run = functools.partial(batched, store, rows, args.batch)
            with busy_thread(contended):
                results.append((name, f"batched x{args.batch}, {label}", *timed(run)))
        finally:
            engine.dispose()
    if args.pipeline_rows:
        modes = [(f"pipeline: record_many x{args.per_call}", args.per_call), ("pipeline: record (one per call)", 1)]
        for label, per_call in modes:
            engine = fresh_engine(new_url())
            try:
                rows = take(args.pipeline_rows)
                spool = tmp / f"spool-{name}-{per_call}"
                run = functools.partial(pipeline, engine, rows, spool, args.batch, args.producers, per_call)
                results.append((name, label, *timed(run)))
            finally:
                engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=300_000, help="rows for each batched mode")
    parser.add_argument("--single-rows", type=int, default=3000, help="rows for one row per transaction")
    parser.add_argument("--batch", type=int, default=20000, help="rows per transaction when batched (the writer's default batch_size)")
    parser.add_argument("--pipeline-rows", type=int, default=100_000, help="rows through ShareWriter (0: skip)")
    parser.add_argument("--producers", type=int, default=500, help="concurrent callers in the pipeline runs")
    parser.add_argument("--per-call", type=int, default=8, help="shares per record_many() call in the pipeline run")
    parser.add_argument("--growth-fill", type=int, default=1_000_000,
                        help="rows already in the table for the SQLite growth runs (0: skip them)")
    parser.add_argument("--growth-rows", type=int, default=50_000, help="rows measured in each growth run")
    parser.add_argument("--growth-batch", type=int, default=1000,
                        help="rows per transaction in the growth runs (the writer's batches at a steady flow)")
    parser.add_argument("--pg-url", default=None, help="an existing PostgreSQL (postgresql+psycopg://...); default: a throwaway cluster")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()

    results: list[Result] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as tmpdir:
        tmp = Path(tmpdir)
        counter = iter(range(10**6))
        sqlite_url = lambda: f"sqlite:///{tmp / f'bench{next(counter)}.sqlite3'}"  # noqa: E731
        results += bench_database("sqlite", sqlite_url, args, tmp)
        if args.growth_fill:
            results += bench_growth(sqlite_url, args)
        if not args.no_pg:
            server = None
            if args.pg_url:
                from tests.pg import ExternalPostgres

                server = ExternalPostgres(args.pg_url)
            else:
                from tests.pg import start_server, unavailable_reason

                reason = unavailable_reason()
                if reason:
                    print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
                else:
                    server = start_server(durable=True)
            if server is not None:
                try:
                    results += bench_database("postgresql", lambda: server.create_database("bench"), args, tmp)
                finally:
                    server.destroy()

    load_after = os.getloadavg()
    width = max(len(mode) for _, mode, *_ in results)
    print(f"{'database':<11} {'mode':<{width}} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'cpu s':>7} {'cpu us/row':>10}")
    pool_rate: dict[str, float] = {}
    single_rate: dict[str, float] = {}
    for db, mode, rows, seconds, cpu in results:
        rate = rows / seconds
        if "pool:" in mode and mode.startswith("batched") and "contended" not in mode:
            pool_rate[db] = rate
        if mode == "one row per transaction":
            single_rate[db] = rate
        print(f"{db:<11} {mode:<{width}} {rows:>8} {seconds:>8.2f} {rate:>9,.0f} {cpu:>7.2f} {cpu / rows * 1e6:>10.1f}")
    print()
    print(f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          "(cpu s: this process only, the busy thread of the contended rows included; "
          "the PostgreSQL server's CPU is not in it)")
    ok = True
    for db, rate in pool_rate.items():
        met = rate >= TARGETS[db]
        ok &= met
        ratio = f" ({rate / single_rate[db]:,.0f}x one row per transaction)" if single_rate.get(db) else ""
        print(f"{db}: writer's batched insert {rate:,.0f} rows/s{ratio}, target {TARGETS[db]:,} -> {'met' if met else 'MISSED'}")
    growth = [(mode, rows, cpu) for _, mode, rows, _, cpu in results if mode.startswith("growth")]
    for empty, full in zip(growth[::2], growth[1::2]):
        label = empty[0].split(", ")[1]
        before, after = empty[2] / empty[1] * 1e6, full[2] / full[1] * 1e6
        print(f"sqlite growth, {label}: {before:.1f} -> {after:.1f} CPU us/row "
              f"from an empty table to {full[0].rsplit('into ', 1)[1]} ({after / before:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
