"""Batches share checks across all connections.

Submissions from every connection wait here for at most a short deadline
(default 2 ms) or until the batch is full, then the whole batch goes through
the checker in one call: one compiled kernel call for a flood, the scalar
path for a trickle. Per-job checker data is prepared once, when the job is
made, never per share.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import trio

from .bitcoin.serialize import hash_to_int
from .checker import Checker, CheckerJob, Share as CheckerShare, ShareBatch
from .jobs import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """The checker's answer for one share."""

    block_hash: bytes  # internal order
    hash_value: int
    meets_share: bool
    meets_network: bool


class ValidationFailed(Exception):
    """The checker raised on a batch; the shares in it could not be judged."""


@dataclass
class _Pending:
    job: CheckerJob
    share: CheckerShare
    done: trio.Event = field(default_factory=trio.Event)
    result: Check | None = None
    error: str | None = None


class BatchValidator:
    def __init__(self, checker: Checker, *, max_batch: int = 1024, deadline: float = 0.002, keep_jobs: int = 128) -> None:
        self.checker = checker
        self.max_batch = max_batch
        self.deadline = deadline
        self._jobs: OrderedDict[str, CheckerJob] = OrderedDict()
        self._keep_jobs = keep_jobs
        self._queue: list[_Pending] = []
        self._arrived = trio.Event()
        self._full = trio.Event()
        self.batches = 0
        self.checked = 0

    def add_job(self, job: Job) -> None:
        """Prepare the checker's per-job tables once, when the job is created."""
        self._jobs[job.job_id] = CheckerJob(
            job.coinbase.coinb1, job.coinbase.coinb2, job.branch, job.version, job.prevhash, job.bits, job_id=job.job_id
        )
        while len(self._jobs) > self._keep_jobs:
            self._jobs.popitem(last=False)

    async def check(self, job_id: str, extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int,
                    version_bits: int, mask: int, share_target: int) -> Check:
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        item = _Pending(job, CheckerShare(0, extranonce1, extranonce2, ntime, nonce, version_bits, mask, share_target))
        self._queue.append(item)
        self._arrived.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        await item.done.wait()
        if item.result is None:
            raise ValidationFailed(item.error or "share not judged")
        return item.result

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            with trio.move_on_after(self.deadline):
                await self._full.wait()
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._arrived = trio.Event()
            self._full = trio.Event()
            if self._queue:
                self._arrived.set()
                if len(self._queue) >= self.max_batch:
                    self._full.set()
            await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        jobs = list({id(p.job): p.job for p in batch}.values())
        index = {id(job): i for i, job in enumerate(jobs)}
        packed = ShareBatch.from_shares(p.share._replace(job_index=index[id(p.job)]) for p in batch)
        try:
            if len(batch) < self.checker.min_vector_batch:
                result = self.checker.check(packed, jobs)  # a few scalar hashes: cheaper than a thread hop
            else:
                result = await trio.to_thread.run_sync(self.checker.check, packed, jobs)
        except Exception as exc:  # noqa: BLE001 - a checker bug must fail these shares, not the pool
            log.exception("checker failed on a batch of %d shares", len(batch))
            for pending in batch:
                pending.error = repr(exc)
                pending.done.set()
            return
        for i, pending in enumerate(batch):
            raw = bytes(result.block_hash[i])
            pending.result = Check(raw, hash_to_int(raw), bool(result.meets_share[i]), bool(result.meets_network[i]))
            pending.done.set()
        self.batches += 1
        self.checked += len(batch)


def make_checker(backend: str, threads: int) -> Checker:
    return Checker(backend=backend, threads=threads)  # type: ignore[arg-type]


__all__ = ["BatchValidator", "Check", "make_checker"]
