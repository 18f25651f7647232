"""The share writer on SQLite and PostgreSQL: batches, idempotent replay
(of segments, of retried batches, of a segment partly still queued),
spilling to disk, outages, blocks, poison rows."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pool.storage.db import make_engine, upgrade
from pool.storage.models import Block, Miner, Share, Worker, as_utc
from pool.storage.records import BlockRecord
from pool.storage.records import ShareRows
from pool.storage.spool import SpoolFull, encode_entry, encode_frames, frame, segment_name
from pool.storage.store import ShareStore, chunk_sizes
from pool.storage.writer import QUARANTINE_FILE, ShareWriter
from tests.storage.helpers import (
    ADDRESS,
    hash_counts,
    make_share,
    share_count,
    share_hash,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


async def run_writer(writer: ShareWriter, body) -> None:  # type: ignore[no-untyped-def]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(60):
            await body()
            await writer.drained()
        nursery.cancel_scope.cancel()


async def test_batched_writing(engine: Engine, tmp_path: Path):
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=200, flush_interval=0.02, segment_age=0.1)
    workers = ["rig1", "rig2", "a" * 300]  # an over-long worker name is cut to the column width

    async def body() -> None:
        async with trio.open_nursery() as n:
            for i in range(2000):
                n.start_soon(writer.record, make_share(i, worker=workers[i % 3]))
        with trio.fail_after(5):  # sealed segments go once committed
            while writer.spool.segments or list((tmp_path / "spool").glob("seg-*")):
                await trio.sleep(0.02)

    await run_writer(writer, body)
    assert share_count(engine) == 2000 == writer.rows_written
    assert writer.batches <= 40, writer.batches  # batched, not a transaction per row
    assert writer.spool.fsyncs < 200, writer.spool.fsyncs  # group commit
    assert writer.db_up and writer.pending == 0 and writer.stats().spool_bytes == 0
    with Session(engine) as session:
        assert session.scalars(select(Miner.address)).all() == [ADDRESS]
        assert sorted(session.scalars(select(Worker.name))) == sorted(["rig1", "rig2", "a" * 128])
        row = session.scalar(select(Share).where(Share.share_hash == share_hash(7)))
        expected = make_share(7, worker="rig2")
        assert row.difficulty == Fraction(1, 10000) and row.network_difficulty == Fraction(3, 10000)
        assert (row.job_id, row.height, row.is_block) == (expected.job_id, expected.height, False)
        assert as_utc(row.created_at) == expected.created_at


async def test_record_many_batches_end_to_end(engine: Engine, tmp_path: Path):
    """record_many: one wait per call, a frame per call; every share lands once, in call order."""
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=300, flush_interval=0.01, segment_age=0.1)
    calls = [[make_share(k * 25 + i, worker=f"rig{k % 4}") for i in range(25)] for k in range(80)]

    async def body() -> None:
        async with trio.open_nursery() as n:
            for call in calls:
                n.start_soon(writer.record_many, call)
        await writer.record(make_share(10_000))  # record() is record_many([one])

    await run_writer(writer, body)
    assert share_count(engine) == 2001 == writer.rows_written and set(hash_counts(engine).values()) == {1}
    assert writer.spool.fsyncs < 80 and writer.batches <= 20
    with Session(engine) as session:
        stored = session.scalars(select(Share.share_hash).order_by(Share.id)).all()
    for call in calls:  # each call's shares committed together and in order
        at = stored.index(call[0].share_hash)
        assert stored[at : at + 25] == [s.share_hash for s in call]


class Outage:
    """The writer's database, down (every write raises as a refused connection would) until ``down`` is cleared."""

    def __init__(self, writer: ShareWriter, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.down = True
        real_write = writer.store.write

        def write(entries, **kwargs):  # type: ignore[no-untyped-def]
            if self.down:
                raise OperationalError("INSERT", {}, Exception("connection refused"))
            return real_write(entries, **kwargs)

        monkeypatch.setattr(writer.store, "write", write)


async def test_record_many_is_refused_whole_when_the_spool_is_full(engine: Engine, tmp_path: Path, monkeypatch):
    writer = ShareWriter(engine, tmp_path / "spool", spool_max_bytes=6000, fsync_interval=0, retry_min=0.01, retry_max=0.01)
    db = Outage(writer, monkeypatch)

    async def body() -> None:
        await writer.record_many([make_share(i) for i in range(5)])
        while writer.db_up:  # the writer tried and found the database down
            await trio.sleep(0.01)
        with pytest.raises(SpoolFull):
            await writer.record_many([make_share(i) for i in range(5, 200)])  # would not fit: none of them
        stats = writer.stats()
        assert stats.spool_full and stats.spool_refused == 195 and not stats.db_up
        db.down = False

    await run_writer(writer, body)
    assert share_count(engine) == 5 and writer.rows_written == 5


async def test_spool_of_old_and_new_frames_replays(engine: Engine, tmp_path: Path):
    """Segments left by an older version (a frame per share) and by this one
    (a frame per record_many call) replay alike."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    rows = ShareRows()
    (spool_dir / segment_name(3)).write_bytes(b"".join(frame(encode_entry(make_share(i))) for i in range(100)))
    (spool_dir / segment_name(4)).write_bytes(encode_frames(rows.many([make_share(i) for i in range(50, 300)])))
    writer = ShareWriter(engine, spool_dir)
    await run_writer(writer, trio.lowlevel.checkpoint)
    assert share_count(engine) == 300 and writer.rows_duplicate == 50 and set(hash_counts(engine).values()) == {1}


async def test_bad_share_hash_is_quarantined(engine: Engine, tmp_path: Path):
    """A hash that is not 64 hex digits cannot be stored as 32 bytes: that one
    record goes to quarantine, the rest of its batch is written."""
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=100, flush_interval=0.01)
    bad = make_share(3)
    bad = type(bad)(**{**bad.__dict__, "share_hash": "zz" * 32})

    async def body() -> None:
        await writer.record_many([bad if i == 3 else make_share(i) for i in range(20)])

    await run_writer(writer, body)
    assert share_count(engine) == 19 and writer.quarantined == 1 and writer.rows_written == 19
    assert (tmp_path / "spool" / QUARANTINE_FILE).exists()


async def test_refused_batch_is_isolated_as_a_replay(engine: Engine, tmp_path: Path):
    """Records written one by one after a refusal are replays: those already
    stored are skipped, and a block share stored twice is not refused again."""
    store = ShareStore(engine)
    store.write([make_share(i, is_block=i == 2) for i in range(5)])
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=100, flush_interval=0.01)
    bad = make_share(7)
    bad = type(bad)(**{**bad.__dict__, "share_hash": "zz" * 32})

    async def body() -> None:
        await writer.record_many([bad if i == 7 else make_share(i, is_block=i == 2) for i in range(10)])

    await run_writer(writer, body)
    counts = hash_counts(engine)
    assert len(counts) == 9 and set(counts.values()) == {1}
    assert writer.quarantined == 1 and writer.rows_written == 4 and writer.rows_duplicate == 5


def test_store_replay_is_idempotent(engine: Engine):
    store = ShareStore(engine)
    batch = [make_share(i) for i in range(300)]
    assert store.write(batch) == 300
    assert store.write(batch, replay=True) == 0  # a replay of committed rows adds nothing
    assert store.write(batch[:10] + [make_share(300), make_share(300)], replay=True) == 1  # repeats inside one batch too
    assert share_count(engine) == 301
    assert set(hash_counts(engine).values()) == {1}
    # Without replay=True the schema stores a repeat (only block shares are unique in it):
    # anything that may be stored already must be written as a replay.
    assert store.write(batch[:1]) == 1 and hash_counts(engine)[batch[0].share_hash] == 2


def test_replay_inserts_only_the_missing_rows_in_order(engine: Engine):
    """A replayed batch of which every other row (and a block share) is stored
    already, amid rows of the same time range that are not in the batch."""
    store = ShareStore(engine)
    shares = [make_share(i, worker=f"rig{i % 3}", is_block=i == 10) for i in range(400)]
    others = [make_share(10_000 + i, at=shares[i].created_at) for i in range(0, 400, 7)]  # same times, other hashes
    assert store.write(shares[::2] + others) == 200 + len(others)
    assert store.write(shares, replay=True) == 200
    assert store.write(shares + others, replay=True) == 0
    counts = hash_counts(engine)
    assert len(counts) == 400 + len(others) and set(counts.values()) == {1}
    with Session(engine) as session:
        stored = session.scalars(select(Share.share_hash).order_by(Share.id)).all()
        assert session.scalar(select(Share.id).where(Share.share_hash == share_hash(10), Share.is_block)) is not None
    assert stored[-200:] == [s.share_hash for s in shares[1::2]]  # the missing ones, in arrival order


async def test_retried_batch_whose_commit_went_through_is_stored_once(engine: Engine, tmp_path: Path, monkeypatch):
    """The first attempt commits, then the connection "dies" (a storage error): the
    retry must be a replay, or every row of the batch would be stored twice."""
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=500, flush_interval=0.01, retry_min=0.01, retry_max=0.01)
    real_write = writer.store.write
    calls: list[bool] = []

    def write(entries, *, replay=False):  # type: ignore[no-untyped-def]
        calls.append(replay)
        inserted = real_write(entries, replay=replay)
        if len(calls) == 1:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return inserted

    monkeypatch.setattr(writer.store, "write", write)

    async def body() -> None:
        await writer.record_many([make_share(i) for i in range(200)])

    await run_writer(writer, body)
    assert calls == [False, True]
    assert share_count(engine) == 200 and set(hash_counts(engine).values()) == {1}
    assert writer.rows_written == 0 and writer.rows_duplicate == 200 and writer.outages == 1


async def test_spilled_segment_with_queued_chunks_is_stored_once(engine: Engine, tmp_path: Path, caplog):
    """The queue fills part-way through a segment: its first records wait in the
    queue, the rest only on disk. Its replay reads them all from the file, so the
    queued ones must leave the queue, or they would be inserted a second time."""
    caplog.set_level(logging.INFO, logger="pool.storage.writer")
    release = threading.Event()
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=10, queue_size=30, flush_interval=0.005,
                         segment_age=60, segment_bytes=1 << 20)  # one segment, sealed when the test says
    real_write = writer.store.write

    def write(entries, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(30)  # the database is slow: the queue fills behind this batch
        return real_write(entries, **kwargs)

    writer.store.write = write  # type: ignore[method-assign]

    async def body() -> None:
        await writer.record_many([make_share(i) for i in range(10)])
        while writer._inflight == 0:  # the drain loop took them and waits on the database
            await trio.sleep(0.005)
        await writer.record_many([make_share(i) for i in range(10, 40)])  # fills the queue
        await writer.record_many([make_share(i) for i in range(40, 60)])  # spill: disk only
        [seg] = writer.spool.segments
        writer.spool.request_seal()
        while not seg.sealed:
            await trio.sleep(0.005)
        assert seg.replay and writer.queue_depth == 30 and all(s is seg for s, _ in writer._queue)
        release.set()

    try:
        await run_writer(writer, body)
    finally:
        release.set()
    counts = hash_counts(engine)
    assert len(counts) == 60 and set(counts.values()) == {1}
    assert writer.rows_written == 60 and writer.rows_duplicate == 10  # the first batch, committed, read back too
    assert writer.queue_depth == 0 and writer.pending == 0
    assert "queued record(s) left to its replay" in caplog.text




async def test_crash_leftover_spool_is_replayed_exactly_once(engine: Engine, tmp_path: Path, caplog):
    """A previous run died with segments on disk: some rows committed, some not, a torn tail."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    shares = [make_share(i) for i in range(900)]
    ShareStore(engine).write(shares[:400])  # these reached the database before the crash
    (spool_dir / segment_name(7)).write_bytes(b"".join(frame(encode_entry(s)) for s in shares[:500]))
    torn = frame(encode_entry(make_share(10_000)))[:-5]  # an unacknowledged write cut short
    (spool_dir / segment_name(8)).write_bytes(b"".join(frame(encode_entry(s)) for s in shares[500:]) + torn)
    block = BlockRecord(101, share_hash(899), "00" * 32, ADDRESS, "rig1", 5_000_000_000, "pending", "accepted")
    (spool_dir / segment_name(9)).write_bytes(frame(encode_entry(block)))

    writer = ShareWriter(engine, spool_dir, replay_batch_size=128)

    async def body() -> None:
        await writer.record(make_share(5000))  # new shares flow while the old spool replays

    await run_writer(writer, body)
    counts = hash_counts(engine)
    assert len(counts) == 901 and set(counts.values()) == {1}
    assert make_share(10_000).share_hash not in counts
    assert writer.rows_duplicate == 400 and writer.rows_written == 501
    assert not list(spool_dir.glob("seg-*"))  # a clean stop leaves nothing to replay
    with Session(engine) as session:
        assert session.scalars(select(Block.hash)).all() == [share_hash(899)]
    assert "interrupted write" in caplog.text

    # Replaying the same files again (a crash right after commit, before unlink) changes nothing.
    (spool_dir / segment_name(20)).write_bytes(b"".join(frame(encode_entry(s)) for s in shares))
    again = ShareWriter(engine, spool_dir)
    await run_writer(again, trio.lowlevel.checkpoint)
    assert hash_counts(engine) == counts and again.rows_written == 0 and again.rows_duplicate == 900


async def test_full_queue_spills_to_disk_and_reads_back(engine: Engine, tmp_path: Path, caplog):
    writer = ShareWriter(engine, tmp_path / "spool", queue_size=20, batch_size=10, flush_interval=0.005, segment_age=0.2)

    async def body() -> None:
        async with trio.open_nursery() as n:
            for i in range(1500):
                n.start_soon(writer.record, make_share(i))

    await run_writer(writer, body)
    assert share_count(engine) == 1500
    assert writer.spilled == 0
    assert "share queue full" in caplog.text


async def test_outage_keeps_acknowledging_then_catches_up(engine: Engine, tmp_path: Path, monkeypatch, caplog):
    writer = ShareWriter(engine, tmp_path / "spool", batch_size=50, flush_interval=0.005, queue_size=100,
                         segment_age=0.1, retry_min=0.02, retry_max=0.1)
    db = Outage(writer, monkeypatch)

    async def body() -> None:
        for i in range(600):  # all acknowledged although nothing reaches the database
            await writer.record(make_share(i))
        assert not writer.db_up and writer.outages == 1
        assert writer.pending == 600 and writer.stats().spool_bytes > 0
        assert share_count(engine) == 0
        db.down = False

    await run_writer(writer, body)
    assert writer.db_up and share_count(engine) == 600 and set(hash_counts(engine).values()) == {1}
    assert "database unavailable" in caplog.text and "available again" in caplog.text


async def test_blocks_are_recorded_durably(engine: Engine, tmp_path: Path):
    writer = ShareWriter(engine, tmp_path / "spool")
    found = BlockRecord(101, "ab" * 32, "00" * 32, ADDRESS, "rig1", 5_000_000_000, "pending", "accepted")

    async def body() -> None:
        await writer.record(make_share(1, is_block=True))
        await writer.record_block(found)
        await writer.drained()
        await writer.record_block(BlockRecord(**{**found.__dict__, "status": "rejected", "submit_result": "high-hash"}))

    await run_writer(writer, body)
    with Session(engine) as session:
        blocks = session.scalars(select(Block)).all()
        assert [(b.hash, b.status, b.submit_result, b.reward) for b in blocks] == [("ab" * 32, "rejected", "high-hash", 5_000_000_000)]
        assert blocks[0].worker_id == session.scalar(select(Worker.id).where(Worker.name == "rig1"))


@pytest.mark.postgres
async def test_rows_the_database_refuses_are_quarantined(pg_url: str, tmp_path: Path, caplog):
    """PostgreSQL enforces column widths: one bad row must not block the others."""
    engine = make_engine(pg_url)
    upgrade(engine)
    try:
        writer = ShareWriter(engine, tmp_path / "spool", batch_size=100, flush_interval=0.01)
        bad = make_share(3)
        bad = type(bad)(**{**bad.__dict__, "job_id": "j" * 40})  # wider than shares.job_id

        async def body() -> None:
            async with trio.open_nursery() as n:
                for i in range(50):
                    n.start_soon(writer.record, bad if i == 3 else make_share(i))

        await run_writer(writer, body)
        assert share_count(engine) == 49 and writer.quarantined == 1
        assert (tmp_path / "spool" / QUARANTINE_FILE).exists()
        assert "quarantine" in caplog.text or "kept in" in caplog.text
    finally:
        engine.dispose()


def test_timestamps_are_utc(engine: Engine):
    local = dt.timezone(dt.timedelta(hours=5))
    ShareStore(engine).write([make_share(1, at=dt.datetime(2025, 6, 1, 12, 0, 0, 999_999, tzinfo=local))])
    with Session(engine) as session:
        stored = session.scalar(select(Share.created_at))
    assert as_utc(stored) == dt.datetime(2025, 6, 1, 7, 0, 0, 999_999, tzinfo=dt.timezone.utc)


def test_ids_follow_arrival_order(engine: Engine):
    """PPLNS windows and compaction read shares.id order as the order shares were accepted."""
    batch = [make_share(i) for i in range(4500)]  # hashes in random order; several COPY chunks / INSERT statements
    store = ShareStore(engine)
    store.write(batch)
    # A replay keeps arrival order for the new rows too.
    more = [make_share(i) for i in range(4500, 9000)]
    assert store.write(batch[::3] + more, replay=True) == 4500
    with Session(engine) as session:
        stored = session.scalars(select(Share.share_hash).order_by(Share.id)).all()
    assert stored == [s.share_hash for s in batch + more]


@settings(max_examples=300, deadline=None)
@given(count=st.integers(0, 50_000), exponent=st.integers(0, 11))
def test_chunk_sizes_cover_a_batch_with_few_statement_texts(count: int, exponent: int):
    largest = 1 << exponent
    sizes = chunk_sizes(count, largest)
    assert sum(sizes) == count
    assert all(0 < n <= largest and n & (n - 1) == 0 for n in sizes)  # powers of two, within the limit
    assert sizes == sorted(sizes, reverse=True)
    assert len(sizes) <= count // largest + exponent + 1  # full chunks, then one of each smaller power at most


def test_copy_text_escapes():
    from pool.storage.records import ShareRow
    from pool.storage.store import copy_text

    row = ShareRow("a\\b", "addr", "rig", "j\tx\ny", 5, "1/2", "3/4", True, "2025-01-01 00:00:00.000001")
    assert copy_text([row], {("addr", "rig"): 3}) == (
        "\\\\xa\\\\b\t3\tj\\tx\\ny\t5\t1/2\t3/4\tt\t2025-01-01 00:00:00.000001+00\n"
    )


@pytest.mark.postgres
def test_cli_replays_a_quarantine_file(pg_url: str, tmp_path: Path):
    from click.testing import CliRunner

    from pool.cli import main

    engine = make_engine(pg_url)
    upgrade(engine)
    try:
        ShareStore(engine).write([make_share(1)])
        path = tmp_path / QUARANTINE_FILE
        path.write_bytes(b"".join(frame(encode_entry(make_share(i))) for i in range(3)) + b"\x05\x00")
        result = CliRunner().invoke(main, ["db", "replay", "--url", pg_url, str(path)])
        assert result.exit_code == 0, result.output
        assert "3 record(s), 2 new share row(s), 2 unreadable byte(s)" in result.output
        assert share_count(engine) == 3
    finally:
        engine.dispose()


async def test_spool_segments_go_only_once_the_database_is_fsynced(engine: Engine, tmp_path: Path, monkeypatch):
    """A segment is the other copy of rows whose commit may not be on disk yet
    (SQLite's WAL with synchronous=NORMAL): it is deleted only after
    ``ShareStore.sync`` succeeded, and kept while that fails."""
    spool = tmp_path / "spool"
    writer = ShareWriter(engine, spool, batch_size=50, flush_interval=0.01, segment_age=0.05)
    seen: list[list[str]] = []
    failing = [True]
    real_sync = writer.store.sync

    def sync() -> None:
        seen.append(sorted(p.name for p in spool.glob("seg-*")))
        if failing[0]:
            raise OSError("no space left on device")
        real_sync()

    monkeypatch.setattr(writer.store, "sync", sync)

    async def body() -> None:
        await writer.record_many([make_share(i) for i in range(100)])
        with trio.fail_after(10):
            while not seen or share_count(engine) < 100:
                await trio.sleep(0.02)
        await trio.sleep(0.2)
        assert list(spool.glob("seg-*")), "a segment went although the database could not be fsynced"
        failing[0] = False
        await writer.record_many([make_share(100)])  # the writer tries again with its next work
        with trio.fail_after(10):
            while list(spool.glob("seg-*")):
                await trio.sleep(0.02)

    await run_writer(writer, body)
    assert seen[0], "sync ran before the segment files were deleted"
    assert share_count(engine) == 101 == writer.rows_written


def test_sync_fsyncs_the_sqlite_log(engine: Engine, monkeypatch):
    import pool.storage.store as store_module

    synced: list[str] = []
    real_fsync = store_module.os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    store = ShareStore(engine)
    store.write([make_share(1)])
    store.sync()
    if engine.dialect.name == "sqlite":
        database = str(Path(engine.url.database).resolve())
        assert database + "-wal" in synced and database in synced
    else:
        assert synced == []  # PostgreSQL commits are durable already
