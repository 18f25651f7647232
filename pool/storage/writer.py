"""The share writer: spool first (durable, before the miner hears ``true``),
then batches into the database from a bounded in-memory queue, off the event loop.

Flow of accepted shares::

    Pool.submit_shares --await record_many()--> Spool (one frame, group fsync) --on_durable--> queue
        --batch--> ShareStore.write (worker thread, one transaction)
        --> segment fully committed and sealed --> segment file deleted

When the database is slow or down, batches are retried with back-off while
shares keep going into the spool; records that do not fit in the queue stay
only on disk and are read back from their segment once it is sealed. At
start, segments left by a crash are replayed the same way.

The schema does not refuse a share stored twice (revision 0004), so whatever
may already be in the database is written with ``ShareStore.write(replay=True)``,
which skips shares already stored: every segment read back from disk, every
retry of a batch after a storage error (a COMMIT whose connection died may have
gone through) and the one-by-one writes of a refused batch. A segment read back
while some of its records still wait in the queue takes them out of the queue
first: the read covers them. Only a batch's first attempt, from the queue,
inserts directly.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import trio
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from .records import BlockRecord, ShareRecord, ShareRow
from .spool import (
    Segment,
    Spool,
    SpoolEntry,
    SpoolError,
    SpoolFull,
    encode_entry,
    frame,
)
from .store import BadShareRecord, InsertMethod, ShareStore, WorkerDirectory, write_block, write_shares

__all__ = [
    "ShareWriter",
    "SpoolError",
    "SpoolFull",
    "WorkerDirectory",
    "WriterStats",
    "write_block",
    "write_shares",
]

log = logging.getLogger(__name__)

# The database refused these rows themselves: retrying the same batch cannot help.
POISON_ERRORS: tuple[type[BaseException], ...] = (
    IntegrityError, DataError, psycopg.IntegrityError, psycopg.DataError, sqlite3.IntegrityError, sqlite3.DataError,
    BadShareRecord,
)
# Anything else from the database or the disk: assume it is down and retry.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, psycopg.Error, sqlite3.Error, OSError)

QUARANTINE_FILE = "quarantine.spool"


@dataclass(frozen=True)
class WriterStats:
    """A snapshot for metrics and logs."""

    db_up: bool
    queue_depth: int
    pending: int
    spool_bytes: int
    spool_segments: int
    spool_full: bool
    spool_refused: int
    fsyncs: int
    rows_written: int
    rows_duplicate: int
    batches: int
    outages: int
    quarantined: int


class ShareWriter:
    """Durable share recording: ``await record(share)`` returns once the share
    is fsynced in the spool; ``run()`` moves spooled records into the database."""

    def __init__(
        self,
        engine: Engine,
        spool_dir: Path,
        *,
        batch_size: int = 20000,
        flush_interval: float = 0.05,
        queue_size: int = 100_000,
        fsync_interval: float = 0.002,
        spool_max_bytes: int = 1 << 30,
        segment_bytes: int = 8 << 20,
        segment_age: float = 2.0,
        replay_batch_size: int = 20000,
        retry_min: float = 0.1,
        retry_max: float = 2.0,
        prepare: Callable[[], None] | None = None,
        method: InsertMethod = "auto",
    ) -> None:
        self.engine = engine
        self.store = ShareStore(engine, method=method)
        self.directory = self.store.directory
        self.spool = Spool(
            Path(spool_dir),
            fsync_interval=fsync_interval,
            segment_bytes=segment_bytes,
            segment_age=segment_age,
            max_bytes=spool_max_bytes,
            on_durable=self._on_durable,
            on_sealed=self._on_sealed,
        )
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self.replay_batch_size = replay_batch_size
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._prepare = prepare
        # Chunks of records in arrival order, each from one spool group (one fsync)
        # and so from one segment; ``_queued`` counts the records in them.
        self._queue: deque[tuple[Segment, Sequence[SpoolEntry]]] = deque()
        self._queued = 0
        self._inflight = 0
        self._work = trio.Event()
        self._changed = trio.Event()
        self._spilling = False
        # Public state (read by metrics): see stats().
        self.db_up = True
        self.down_since: float | None = None
        self.rows_written = 0
        self.rows_duplicate = 0
        self.batches = 0
        self.outages = 0
        self.spilled = 0  # records only on disk (not in the queue), known so far
        self.quarantined = 0
        self._last_down_log = -math.inf

    # --- the hot path --------------------------------------------------------------
    async def record_many(self, records: Sequence[ShareRecord | ShareRow]) -> None:
        """Return once every share in ``records`` is durable (fsynced): one wait,
        one spool frame for all of them. Only then may they be acknowledged.

        All or nothing: raises ``SpoolFull`` (back-pressure: the database is not
        keeping up) or ``SpoolError`` (the disk failed) for the whole batch, and
        then none of them may be acknowledged.
        """
        await self.spool.append_many(records)

    async def record(self, record: ShareRecord) -> None:
        """``record_many([record])``: return once the share is durable (fsynced)."""
        await self.spool.append_many((record,))

    async def record_block(self, record: BlockRecord) -> None:
        """Durably record a found block (inserted, or its status updated, by hash)."""
        await self.spool.append(record)

    # --- state ------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def pending(self) -> int:
        """Records acknowledged but not yet known to be committed."""
        return self._queued + self._inflight + self.spilled + self.spool.in_flight

    @property
    def idle(self) -> bool:
        return (
            not self._queue
            and self._inflight == 0
            and self.spool.in_flight == 0
            and self.spool.buffered_bytes == 0
            and not any(s.replay for s in self.spool.segments)
        )

    def stats(self) -> WriterStats:
        return WriterStats(
            db_up=self.db_up,
            queue_depth=self._queued,
            pending=self.pending,
            spool_bytes=self.spool.size_bytes,
            spool_segments=len(self.spool.segments),
            spool_full=self.spool.full,
            spool_refused=self.spool.refused,
            fsyncs=self.spool.fsyncs,
            rows_written=self.rows_written,
            rows_duplicate=self.rows_duplicate,
            batches=self.batches,
            outages=self.outages,
            quarantined=self.quarantined,
        )

    async def drained(self) -> None:
        """Wait until every record appended before this call is committed (or quarantined).

        A barrier, not "until idle": under a steady flow of shares it still returns.
        """
        await self.spool.flushed()
        targets = [(seg, seg.entries) for seg in self.spool.segments]
        while not all(self._reached(seg, entries) for seg, entries in targets):
            await self._changed.wait()

    def _reached(self, seg: Segment, entries: int) -> bool:
        if seg not in self.spool.segments:
            return True  # replayed or fully committed, and deleted
        if seg.replay:
            if not seg.sealed:
                self.spool.request_seal()  # a spilled active segment is read back once sealed
            return False
        return seg.committed >= entries

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- spool callbacks (event loop) -----------------------------------------------
    def _on_durable(self, seg: Segment, entries: Sequence[SpoolEntry]) -> None:
        left = len(entries)
        if not seg.replay:
            room = min(left, self.queue_size - self._queued)
            if room > 0:
                self._queue.append((seg, entries if room == left else entries[:room]))
                self._queued += room
                left -= room
            if left:
                seg.replay = True
                if not self._spilling:
                    self._spilling = True
                    log.warning(
                        "share queue full (%d records): new shares stay in the spool only and are read back "
                        "from disk when the database catches up (spool %d bytes)",
                        self._queued, self.spool.size_bytes,
                    )
        if left:
            seg.spilled += left
            self.spilled += left
        self._work.set()
        self._notify()

    def _on_sealed(self, seg: Segment) -> None:
        self._work.set()

    # --- the drain loop ------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the spool (recovering a crashed run's segments), then write until cancelled."""
        await trio.to_thread.run_sync(self.spool.open)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.spool.run)
                task_status.started()
                await self._drain()
        finally:
            self._forget_committed_segments()

    def _forget_committed_segments(self) -> None:
        """On the way out: delete segments whose every record is committed (the
        active one included), so a clean stop leaves nothing to replay."""
        done = [s for s in self.spool.segments if not s.replay and s.entries and s.committed >= s.entries]
        if done and not self._synced():
            done = []  # kept, and replayed at the next start
        for seg in done:
            try:
                Spool.remove_file(seg)
            except OSError as exc:
                log.warning("could not remove spool segment %s: %s", seg.path, exc)
                continue
            self.spool.forget(seg)
        if self.spool.segments:
            log.info("stopping with %d spool segment(s) not yet fully committed; they are replayed at the next start",
                     len(self.spool.segments))

    async def _wait_work(self) -> None:
        self._work = trio.Event()
        await self._work.wait()

    async def _drain(self) -> None:
        while True:
            await self._retire_done()
            seg = next((s for s in self.spool.segments if s.replay and s.sealed), None)
            if seg is not None:
                await self._replay(seg)
                continue
            if not self._queue:
                if self._spilling:
                    self._spilling = False
                    log.info("share queue drained; reading spilled records back from the spool")
                if any(s.replay for s in self.spool.segments):
                    self.spool.request_seal()
                self._notify()
                await self._wait_work()
                continue
            if self._queued < self.batch_size:
                with trio.move_on_after(self.flush_interval):
                    while self._queued < self.batch_size:
                        await self._wait_work()
            batch, done = self._take(self.batch_size)
            self._inflight = len(batch)
            try:
                await self._commit(batch)
            finally:
                self._inflight = 0
            for seg, n in done:
                seg.committed += n
            self._notify()

    def _take(self, limit: int) -> tuple[list[SpoolEntry], list[tuple[Segment, int]]]:
        """Up to ``limit`` queued records, oldest first, and how many from each segment."""
        batch: list[SpoolEntry] = []
        done: list[tuple[Segment, int]] = []
        queue = self._queue
        while queue and len(batch) < limit:
            seg, entries = queue.popleft()
            room = limit - len(batch)
            if len(entries) > room:
                queue.appendleft((seg, entries[room:]))
                entries = entries[:room]
            batch.extend(entries)
            if done and done[-1][0] is seg:
                done[-1] = (seg, done[-1][1] + len(entries))
            else:
                done.append((seg, len(entries)))
        self._queued -= len(batch)
        return batch, done

    async def _retire_done(self) -> None:
        done = [s for s in self.spool.segments if s.done]
        if done and await self._durable():
            for seg in done:
                await self._remove(seg)

    async def _durable(self) -> bool:
        """``_synced`` in a worker thread."""
        return await trio.to_thread.run_sync(self._synced)

    def _synced(self) -> bool:
        """Make every commit so far survive an OS crash; False if that failed (blocking).

        Called before a spool segment, the other copy of its records, is
        deleted: SQLite's WAL commits with ``synchronous=NORMAL`` survive a
        crash of the pool but not of the machine until the log is fsynced.
        """
        try:
            self.store.sync()
        except OSError as exc:
            log.error("could not fsync the database (%s); spool segments are kept until it can be", exc)
            return False
        return True

    async def _remove(self, seg: Segment, keep_as: str | None = None) -> None:
        try:
            await trio.to_thread.run_sync(Spool.remove_file, seg, keep_as)
        except OSError as exc:
            log.error("could not remove spool segment %s (it will be replayed again, harmlessly): %s", seg.path, exc)
        self.spool.forget(seg)

    def _unqueue(self, seg: Segment) -> int:
        """Drop the chunks of ``seg`` still waiting in the queue (its replay reads
        them from the file, so they must not be inserted a second time); return how many records."""
        kept: deque[tuple[Segment, Sequence[SpoolEntry]]] = deque()
        dropped = 0
        for chunk in self._queue:
            if chunk[0] is seg:
                dropped += len(chunk[1])
            else:
                kept.append(chunk)
        if dropped:
            self._queue.clear()
            self._queue.extend(kept)
            self._queued -= dropped
        return dropped

    async def _replay(self, seg: Segment) -> None:
        # Its early records may still be queued (the queue filled up part-way through
        # it): the file holds them too, and replay=True skips any already committed.
        dropped = self._unqueue(seg)
        if dropped:
            log.info("spool segment %s: %d queued record(s) left to its replay from disk", seg.path.name, dropped)
        decoded = await trio.to_thread.run_sync(Spool.read, seg)
        if decoded.torn_bytes:
            log.warning(
                "spool segment %s: %d byte(s) of an interrupted write at its end ignored "
                "(that write was never acknowledged)", seg.path, decoded.torn_bytes,
            )
        if decoded.corrupt_bytes:
            log.error(
                "spool segment %s is damaged after byte %d (%d bytes unreadable); the file is kept as %s.corrupt",
                seg.path, decoded.good_bytes, decoded.corrupt_bytes, seg.path.name,
            )
        before = self.rows_written
        entries = decoded.entries
        for i in range(0, len(entries), self.replay_batch_size):
            await self._commit(entries[i : i + self.replay_batch_size], replay=True)
        self.spilled -= seg.spilled
        seg.spilled = 0
        seg.replay = False
        seg.committed = seg.entries = len(entries)
        keep = ".corrupt" if decoded.corrupt_bytes else None
        # Deleted only once its rows are durable (else _retire_done tries again); a
        # damaged file is renamed, not deleted, so it goes either way.
        if await self._durable() or keep:
            await self._remove(seg, keep)
        log.log(
            logging.WARNING if seg.recovered else logging.INFO,
            "spool segment %s replayed: %d record(s), %d new share row(s)", seg.path.name, len(entries), self.rows_written - before,
        )
        self._notify()

    # --- committing ----------------------------------------------------------------------
    async def _commit(self, entries: Sequence[SpoolEntry], *, replay: bool = False) -> None:
        """Commit ``entries``, retrying until the database takes them.

        A retry is always a replay: the failed attempt may have committed (the
        connection died after the server took the COMMIT), and its rows must not go in twice.
        """
        delay = self.retry_min
        while True:
            try:
                if self._prepare is not None:
                    await trio.to_thread.run_sync(self._prepare)
                    self._prepare = None
                inserted = await trio.to_thread.run_sync(functools.partial(self.store.write, entries, replay=replay))
            except POISON_ERRORS as exc:
                await self._isolate(entries, exc)
                return
            except STORAGE_ERRORS as exc:
                self.directory.forget()
                self._went_down(exc)
                replay = True
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self._came_up()
            self._count(entries, inserted)
            return

    def _count(self, entries: Sequence[SpoolEntry], inserted: int) -> None:
        shares = len(entries) - list(map(type, entries)).count(BlockRecord)
        self.rows_written += inserted
        self.rows_duplicate += shares - inserted
        self.batches += 1

    async def _isolate(self, entries: Sequence[SpoolEntry], exc: BaseException) -> None:
        """A batch the database refuses: write records one by one, quarantine the bad ones.

        As replays: the batch may be a replay or a retry (rows of it may be stored),
        a one-row write may be retried after a storage error, and a block share
        stored twice (refused by ``ux_shares_block_hash``) is then simply skipped.
        """
        log.error("database refused a batch of %d record(s) (%s); writing them one by one", len(entries), exc)
        self.directory.forget()
        for entry in entries:
            delay = self.retry_min
            while True:
                try:
                    inserted = await trio.to_thread.run_sync(functools.partial(self.store.write, [entry], replay=True))
                except POISON_ERRORS as bad:
                    await self._quarantine(entry, bad)
                    break
                except STORAGE_ERRORS as down:
                    self._went_down(down)
                    await trio.sleep(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
                self._came_up()
                self._count([entry], inserted)
                break

    async def _quarantine(self, entry: SpoolEntry, exc: BaseException) -> None:
        path = self.spool.directory / QUARANTINE_FILE
        data = frame(encode_entry(entry))

        def append() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

        await trio.to_thread.run_sync(append)
        self.quarantined += 1
        log.error(
            "database refused %r: %s; the record is kept in %s (re-insert with `stope db replay %s`)",
            entry, exc, path, path,
        )

    def _went_down(self, exc: BaseException) -> None:
        now = trio.current_time()
        if self.db_up:
            self.db_up = False
            self.outages += 1
            self.down_since = now
            self._last_down_log = now
            log.error(
                "database unavailable (%s): %s; accepted shares continue into the spool "
                "(%d bytes, %d record(s) waiting)",
                type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
                self.spool.size_bytes, self.pending,
            )
        elif now - self._last_down_log >= 10.0:
            self._last_down_log = now
            log.error(
                "database still unavailable after %.0fs: spool %d bytes of %d allowed, %d record(s) waiting",
                now - (self.down_since or now), self.spool.size_bytes, self.spool.max_bytes, self.pending,
            )

    def _came_up(self) -> None:
        if not self.db_up:
            self.db_up = True
            log.warning(
                "database available again after %.1fs; catching up on %d record(s)",
                trio.current_time() - (self.down_since or trio.current_time()), self.pending,
            )
            self.down_since = None
