"""Share-row write throughput into SQLite (WAL) and PostgreSQL, batched vs one row per transaction.

Run: ``.venv/bin/python bench/db.py`` (options: ``--rows``, ``--single-rows``,
``--batch``, ``--pg-url``, ``--no-pg``, ``--pipeline-rows``). Prints one
table, all measured in the same run:

* one row per transaction (``ShareStore.write([row])``, a commit each);
* batched, ``--batch`` rows per transaction, sustained over ``--rows`` rows
  into a growing, indexed table: SQLite ``executemany``; PostgreSQL
  ``executemany`` (psycopg 3) and ``COPY`` into a stage table then
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (the writer's default);
* the whole pipeline the pool uses (``ShareWriter``: spool append + group
  fsync + queue + batched inserts in a worker thread), from the first
  ``record()`` until everything is committed.

PostgreSQL is a throwaway cluster with durable settings (fsync and
synchronous_commit on) unless ``--pg-url`` names a server. SQLite is a file
in a temporary directory, WAL mode, ``synchronous=NORMAL`` (the pool's
engine settings). Row generation is not timed; the direct modes start from
``ShareRow`` (the form the writer gets from the spool, which converts each
share once when it spools it), the pipeline from ``ShareRecord``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from sqlalchemy import Engine

from pool.storage.db import make_engine, upgrade
from pool.storage.records import ShareRecord, ShareRow, ShareRows
from pool.storage.store import InsertMethod, ShareStore
from pool.storage.writer import ShareWriter

ADDRESS = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"
TARGETS = {"sqlite": 70_000, "postgresql": 50_000}
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def make_rows(start: int, count: int) -> list[ShareRecord]:
    """Distinct shares from 50 workers, difficulties as the devnet gives them."""
    out = []
    for i in range(start, start + count):
        out.append(ShareRecord(
            share_hash=hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
            address=ADDRESS, worker=f"rig{i % 50}", job_id=f"{i // 1000:x}", height=800_000 + i // 100_000,
            difficulty=Fraction(1, 10000), network_difficulty=Fraction(3, 10000), is_block=False,
            created_at=T0 + dt.timedelta(microseconds=i * 100),
        ))
    return out


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """Rows, wall seconds, and CPU seconds of this process (all threads)."""
    started, cpu = time.perf_counter(), time.process_time()
    rows = fn()
    return rows, time.perf_counter() - started, time.process_time() - cpu


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


async def _pipeline(engine: Engine, rows: list[ShareRecord], spool_dir: Path, batch: int, producers: int) -> None:
    writer = ShareWriter(engine, spool_dir, batch_size=batch, flush_interval=0.01, queue_size=max(len(rows), 1))
    per = len(rows) // producers + 1

    async def produce(part: list[ShareRecord]) -> None:
        for r in part:
            await writer.record(r)

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        async with trio.open_nursery() as inner:
            for k in range(producers):
                inner.start_soon(produce, rows[k * per : (k + 1) * per])
        await writer.drained()
        nursery.cancel_scope.cancel()
    assert writer.rows_written == len(rows), (writer.rows_written, len(rows))


def pipeline(engine: Engine, rows: list[ShareRecord], spool_dir: Path, batch: int, producers: int) -> int:
    trio.run(_pipeline, engine, rows, spool_dir, batch, producers)
    return len(rows)


def fresh_engine(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


Result = tuple[str, str, int, float, float]


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

    methods: list[tuple[str, InsertMethod]] = [("executemany", "executemany")]
    if name == "postgresql":
        methods.append(("COPY", "copy"))
    engine = fresh_engine(new_url())
    try:
        store = ShareStore(engine)
        store.write(take(100))  # workers exist, caches warm
        rows = take_rows(args.single_rows)
        results.append((name, "one row per transaction", *timed(functools.partial(single, store, rows))))
    finally:
        engine.dispose()
    for label, method in methods:
        engine = fresh_engine(new_url())  # each mode starts from an empty table
        try:
            store = ShareStore(engine, method=method)
            store.write(take(100))
            rows = take_rows(args.rows)
            results.append((name, f"batched {label} x{args.batch}", *timed(functools.partial(batched, store, rows, args.batch))))
        finally:
            engine.dispose()
    if args.pipeline_rows:
        engine = fresh_engine(new_url())
        try:
            rows = take(args.pipeline_rows)
            run = functools.partial(pipeline, engine, rows, tmp / f"spool-{name}", args.batch, args.producers)
            results.append((name, "pipeline: spool fsync + writer", *timed(run)))
        finally:
            engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=300_000, help="rows for each batched mode")
    parser.add_argument("--single-rows", type=int, default=3000, help="rows for one row per transaction")
    parser.add_argument("--batch", type=int, default=20000, help="rows per transaction when batched (the writer's default batch_size)")
    parser.add_argument("--pipeline-rows", type=int, default=100_000, help="rows through ShareWriter (0: skip)")
    parser.add_argument("--producers", type=int, default=500, help="concurrent record() callers in the pipeline run")
    parser.add_argument("--pg-url", default=None, help="an existing PostgreSQL (postgresql+psycopg://...); default: a throwaway cluster")
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = parser.parse_args()

    results: list[Result] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="stope-bench-") as tmpdir:
        tmp = Path(tmpdir)
        counter = iter(range(10**6))
        results += bench_database("sqlite", lambda: f"sqlite:///{tmp / f'bench{next(counter)}.sqlite3'}", args, tmp)
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
    print(f"{'database':<11} {'mode':<34} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'cpu s':>7}")
    best: dict[str, float] = {}
    for db, mode, rows, seconds, cpu in results:
        rate = rows / seconds
        if mode.startswith("batched"):
            best[db] = max(best.get(db, 0.0), rate)
        print(f"{db:<11} {mode:<34} {rows:>8} {seconds:>8.2f} {rate:>9,.0f} {cpu:>7.2f}")
    print()
    print(f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          "(cpu s: this process only; the PostgreSQL server's CPU is not in it)")
    ok = True
    for db, rate in best.items():
        met = rate >= TARGETS[db]
        ok &= met
        print(f"{db}: best batched {rate:,.0f} rows/s, target {TARGETS[db]:,} -> {'met' if met else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
