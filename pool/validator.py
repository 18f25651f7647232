"""Batches share checks across all connections.

Submissions wait here for at most a short deadline (default 2 ms) or until
the batch is full, then the whole batch goes through the checker in one
call: one compiled kernel call for a flood, the scalar path for a trickle.
Callers hand over many shares at once (``check_many``: the Stratum server
gives the pool every share that arrived in one scheduler pass), and each
call waits on one event however many shares it brought, so the event loop
does per-batch work, not per-share work. Per-job checker data is prepared
once, when the job is made, never per share.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import trio

from .checker import Checker, CheckerJob, ShareBatch
from .jobs import Job

log = logging.getLogger(__name__)
# A NamedTuple built straight from a tuple: its generated __new__ is a Python
# frame, twice the cost, and these are made once per share on the loop.
_tuple_new = tuple.__new__


class Check(NamedTuple):
    """The checker's answer for one share (a tuple: one is made per share, on the loop)."""

    block_hash: bytes  # internal order
    meets_share: bool
    meets_network: bool

    @property
    def hash_value(self) -> int:
        """The hash as the integer compared with targets (computed on demand: the share
        path compares the hashes as big-endian bytes instead)."""
        return int.from_bytes(self.block_hash, "little")


class ValidationFailed(Exception):
    """The checker raised on a batch; the shares in it could not be judged."""


class _Ticket:
    """One ``check_many`` call: woken once every one of its shares is judged."""

    __slots__ = ("done", "error", "remaining", "results")

    def __init__(self, n: int) -> None:
        self.results: list[Check | None] = [None] * n
        self.remaining = n
        self.error: str | None = None
        self.done = trio.Event()


# A queued share: its ticket, its index in the ticket, its job, then its fields in
# ``pool.checker.Share`` order after job_index (extranonce1, extranonce2, ntime,
# nonce, version bits, mask, share target).
_Queued = tuple[Any, ...]


class BatchValidator:
    def __init__(
        self, checker: Checker, *, max_batch: int = 1024, deadline: float = 0.002, keep_jobs: int = 128, inline_batch: int = 128
    ) -> None:
        self.checker = checker
        #: Batches up to this size are checked on the event loop itself: the kernel
        #: does 128 shares in ~0.3 ms, less than the CPU a hop to a worker thread and
        #: back costs; bigger batches go to a thread (the kernel releases the GIL).
        self.inline_batch = inline_batch
        self.max_batch = max_batch
        self.deadline = deadline
        self._jobs: OrderedDict[str, CheckerJob] = OrderedDict()
        self._keep_jobs = keep_jobs
        self._queue: list[_Queued] = []
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

    def knows(self, job_id: str) -> bool:
        return job_id in self._jobs

    async def check(self, job_id: str, extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int,
                    version_bits: int, mask: int, share_target: int) -> Check:
        """One share (see ``check_many``); raises KeyError for a job it does not know."""
        if job_id not in self._jobs:
            raise KeyError(job_id)
        (result,) = await self.check_many([(job_id, extranonce1, extranonce2, ntime, nonce, version_bits, mask, share_target)])
        assert result is not None  # its job was known when it was queued
        return result

    async def check_many(self, submits: Sequence[tuple[str, bytes, bytes, int, int, int, int, int]]) -> list[Check | None]:
        """Judge many shares with one wait; None for a share whose job is unknown here.

        Raises ``ValidationFailed`` if the checker failed on a batch holding any of them.
        """
        ticket = _Ticket(len(submits))
        jobs = self._jobs
        queue = self._queue
        for i, (job_id, e1, e2, ntime, nonce, bits, mask, target) in enumerate(submits):
            job = jobs.get(job_id)
            if job is None:
                ticket.remaining -= 1
                continue
            queue.append((ticket, i, job, e1, e2, ntime, nonce, bits, mask, target))
        if ticket.remaining == 0:
            return ticket.results
        self._arrived.set()
        if len(queue) >= self.max_batch:
            self._full.set()
        await ticket.done.wait()
        if ticket.error is not None:
            raise ValidationFailed(ticket.error)
        return ticket.results

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            if len(self._queue) < self.max_batch:
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

    async def _flush(self, batch: list[_Queued]) -> None:
        index: dict[int, int] = {}
        jobs: list[CheckerJob] = []
        job_index: list[int] = []
        for entry in batch:
            job = entry[2]
            k = index.get(id(job))
            if k is None:
                k = index[id(job)] = len(jobs)
                jobs.append(job)
            job_index.append(k)
        try:
            # The queue's share fields, column by column (one C-level transpose).
            _tickets, _indexes, _jobs, *columns = zip(*batch)
            packed = ShareBatch.from_columns(job_index, *columns)
            if len(batch) <= self.inline_batch:
                result = self.checker.check(packed, jobs)  # cheaper than a thread hop
            else:
                result = await trio.to_thread.run_sync(self.checker.check, packed, jobs)
        except Exception as exc:  # noqa: BLE001 - a checker bug must fail these shares, not the pool
            log.exception("checker failed on a batch of %d shares", len(batch))
            for ticket, *_ in batch:
                ticket.error = repr(exc)
                ticket.remaining -= 1
                if ticket.remaining == 0:
                    ticket.done.set()
            return
        hashes = result.block_hash.tobytes()
        meets_share = result.meets_share.tolist()
        meets_network = result.meets_network.tolist()
        for k, (ticket, i, *_) in enumerate(batch):
            ticket.results[i] = _tuple_new(Check, (hashes[32 * k : 32 * k + 32], meets_share[k], meets_network[k]))
            ticket.remaining -= 1
            if ticket.remaining == 0:
                ticket.done.set()
        self.batches += 1
        self.checked += len(batch)


def make_checker(backend: str, threads: int) -> Checker:
    return Checker(backend=backend, threads=threads)  # type: ignore[arg-type]


__all__ = ["BatchValidator", "Check", "ValidationFailed", "make_checker"]
