"""Batched writes of share and block records, off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from .models import Block, Miner, Share, Worker
from .records import BlockRecord, ShareRecord

log = logging.getLogger(__name__)


class WorkerDirectory:
    """Resolves (address, worker name) to a worker id, creating rows on first sight."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], int] = {}

    def resolve(self, session: Session, address: str, name: str) -> int:
        key = (address, name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        miner_id = session.scalar(select(Miner.id).where(Miner.address == address))
        if miner_id is None:
            miner = Miner(address=address)
            session.add(miner)
            session.flush()
            miner_id = miner.id
        worker_id = session.scalar(select(Worker.id).where(Worker.miner_id == miner_id, Worker.name == name))
        if worker_id is None:
            worker = Worker(miner_id=miner_id, name=name)
            session.add(worker)
            session.flush()
            worker_id = worker.id
        self._cache[key] = worker_id
        return worker_id

    def forget(self) -> None:
        self._cache.clear()


def write_shares(engine: Engine, directory: WorkerDirectory, records: Sequence[ShareRecord]) -> int:
    """Insert a batch in one transaction; a record already present is skipped."""
    with Session(engine) as session, session.begin():
        rows = []
        for r in records:
            rows.append(
                {
                    "share_hash": r.share_hash,
                    "worker_id": directory.resolve(session, r.address, r.worker),
                    "job_id": r.job_id,
                    "height": r.height,
                    "difficulty": r.difficulty,
                    "network_difficulty": r.network_difficulty,
                    "is_block": r.is_block,
                    "created_at": r.created_at,
                }
            )
        hashes = [r["share_hash"] for r in rows]
        present = set(session.scalars(select(Share.share_hash).where(Share.share_hash.in_(hashes))))
        fresh = [r for r in rows if r["share_hash"] not in present]
        if fresh:
            session.execute(insert(Share), fresh)
        return len(fresh)


def write_block(engine: Engine, directory: WorkerDirectory, record: BlockRecord) -> None:
    with Session(engine) as session, session.begin():
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
                worker_id=directory.resolve(session, record.address, record.worker),
                reward=record.reward,
                status=record.status,
                submit_result=record.submit_result,
            )
        )


class ShareWriter:
    """Drains a bounded queue of share records into the database in batches."""

    def __init__(self, engine: Engine, *, batch_size: int = 500, flush_interval: float = 0.05, queue_size: int = 100_000) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.directory = WorkerDirectory()
        self._send, self._receive = trio.open_memory_channel[ShareRecord](queue_size)
        self.written = 0
        self.pending = 0
        self._idle = trio.Event()
        self._idle.set()

    def put(self, record: ShareRecord) -> None:
        """Queue a record (never blocks the event loop; raises if the queue is full)."""
        self._send.send_nowait(record)
        self.pending += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    async def drained(self) -> None:
        """Wait until every queued record is committed."""
        while self.pending:
            await self._idle.wait()

    async def run(self) -> None:
        while True:
            batch = [await self._receive.receive()]
            with trio.move_on_after(self.flush_interval):
                while len(batch) < self.batch_size:
                    batch.append(await self._receive.receive())
            while True:
                try:
                    await trio.to_thread.run_sync(write_shares, self.engine, self.directory, batch)
                    break
                except Exception as exc:  # noqa: BLE001 - any DB failure: keep the batch and retry
                    log.error("share batch of %d not written, retrying: %s", len(batch), exc)
                    self.directory.forget()
                    await trio.sleep(1.0)
            self.written += len(batch)
            self.pending -= len(batch)
            if not self.pending:
                self._idle.set()
