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
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
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
        path compares the hashes as display hex instead)."""
        return int.from_bytes(self.block_hash, "little")


class ValidationFailed(Exception):
    """The checker raised on a batch; the shares in it could not be judged."""


class Checks:
    """The answers to one ``check_many`` call, column by column: the checker's
    output arrays are copied in by slice (no object per share on the loop).

    ``checks[i]`` is share ``i``'s ``Check``, or None if its job was unknown here.
    """

    __slots__ = ("block_hashes", "known", "meets_network", "meets_share")

    def __init__(self, n: int) -> None:
        #: Every share's hash, 32 bytes each, internal order.
        self.block_hashes = bytearray(32 * n)
        self.meets_share: list[bool] = [False] * n
        self.meets_network: list[bool] = [False] * n
        #: Which shares' jobs were known (None: all of them).
        self.known: list[bool] | None = None

    def __len__(self) -> int:
        return len(self.meets_share)

    def display_hex(self) -> str:
        """Every hash in display order (byte-reversed) as hex, 64 digits each, in one string."""
        raw = np.frombuffer(self.block_hashes, dtype=np.uint8).reshape(-1, 32)
        return raw[:, ::-1].tobytes().hex()

    def __iter__(self) -> Iterator[Check | None]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Check | None:
        if self.known is not None and not self.known[i]:
            return None
        return _tuple_new(Check, (bytes(self.block_hashes[32 * i : 32 * i + 32]), self.meets_share[i], self.meets_network[i]))


class _Ticket:
    """One ``check_many`` call: woken once every one of its shares is judged."""

    __slots__ = ("checks", "done", "error", "remaining")

    def __init__(self, n: int) -> None:
        self.checks = Checks(n)
        self.remaining = n
        self.error: str | None = None
        self.done = trio.Event()


class _Chunk:
    """Consecutive shares of one ticket, from position ``start``: their checker jobs
    and their fields as columns (``pool.checker.Share`` order after job_index)."""

    __slots__ = ("columns", "jobs", "start", "ticket")

    def __init__(self, ticket: _Ticket, start: int, jobs: list[CheckerJob], columns: list[Sequence[Any]]) -> None:
        self.ticket = ticket
        self.start = start
        self.jobs = jobs
        self.columns = columns

    def __len__(self) -> int:
        return len(self.jobs)

    def split(self, n: int) -> tuple[_Chunk, _Chunk]:
        return (
            _Chunk(self.ticket, self.start, self.jobs[:n], [c[:n] for c in self.columns]),
            _Chunk(self.ticket, self.start + n, self.jobs[n:], [c[n:] for c in self.columns]),
        )


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
        self._queue: list[_Chunk] = []
        self._queued = 0  # shares in the queue
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
        result = (await self.check_many([(job_id, extranonce1, extranonce2, ntime, nonce, version_bits, mask, share_target)]))[0]
        assert result is not None  # its job was known when it was queued
        return result

    async def check_many(self, submits: Sequence[tuple[str, bytes, bytes, int, int, int, int, int]]) -> Checks:
        """Judge many shares ``(job_id, extranonce1, extranonce2, ntime, nonce,
        version_bits, mask, share_target)`` with one wait; a share whose job is
        unknown here gets None.

        Raises ``ValidationFailed`` if the checker failed on a batch holding any of them.
        """
        n = len(submits)
        ticket = _Ticket(n)
        if not n:
            return ticket.checks
        job_ids, *columns = zip(*submits)  # one C-level transpose
        jobs = list(map(self._jobs.get, job_ids))
        if None in jobs:  # rare: a job that left the window; those shares are not queued
            known = [job is not None for job in jobs]
            ticket.checks.known = known
            kept = [k for k in range(n) if known[k]]
            ticket.remaining = len(kept)
            if not kept:
                return ticket.checks
            # One chunk per run of known shares (chunks are consecutive in the ticket).
            runs: list[tuple[int, int]] = []
            for k in kept:
                if runs and runs[-1][1] == k:
                    runs[-1] = (runs[-1][0], k + 1)
                else:
                    runs.append((k, k + 1))
            chunks = [_Chunk(ticket, a, jobs[a:b], [c[a:b] for c in columns]) for a, b in runs]  # type: ignore[misc]
        else:
            chunks = [_Chunk(ticket, 0, jobs, columns)]  # type: ignore[arg-type]
        for chunk in chunks:
            self._queue.append(chunk)
            self._queued += len(chunk)
        self._arrived.set()
        if self._queued >= self.max_batch:
            self._full.set()
        await ticket.done.wait()
        if ticket.error is not None:
            raise ValidationFailed(ticket.error)
        return ticket.checks

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            if self._queued < self.max_batch:
                with trio.move_on_after(self.deadline):
                    await self._full.wait()
            batch = self._take(self.max_batch)
            self._arrived = trio.Event()
            self._full = trio.Event()
            if self._queue:
                self._arrived.set()
                if self._queued >= self.max_batch:
                    self._full.set()
            await self._flush(batch)

    def _take(self, limit: int) -> list[_Chunk]:
        """Queued chunks holding up to ``limit`` shares (the last one split if need be)."""
        batch: list[_Chunk] = []
        room = limit
        queue = self._queue
        while queue and room:
            chunk = queue[0]
            if len(chunk) > room:
                chunk, queue[0] = chunk.split(room)
            else:
                del queue[0]
            batch.append(chunk)
            room -= len(chunk)
        self._queued -= limit - room
        return batch

    async def _flush(self, batch: list[_Chunk]) -> None:
        size = sum(map(len, batch))
        try:
            jobs: list[CheckerJob] = []
            columns: list[list[Any]] = [[] for _ in range(7)]
            for chunk in batch:
                jobs += chunk.jobs
                for column, part in zip(columns, chunk.columns):
                    column += part
            # Checker jobs numbered in order of appearance (dict.fromkeys keeps it; C speed).
            distinct = list(dict.fromkeys(jobs))  # (CheckerJob hashes by identity)
            job_index = list(map({job: k for k, job in enumerate(distinct)}.__getitem__, jobs)) if len(distinct) > 1 else [0] * size
            packed = ShareBatch.from_columns(job_index, *columns)
            if size <= self.inline_batch:
                result = self.checker.check(packed, distinct)  # cheaper than a thread hop
            else:
                result = await trio.to_thread.run_sync(self.checker.check, packed, distinct)
        except Exception as exc:  # noqa: BLE001 - a checker bug must fail these shares, not the pool
            log.exception("checker failed on a batch of %d shares", size)
            for chunk in batch:
                ticket = chunk.ticket
                ticket.error = repr(exc)
                ticket.remaining -= len(chunk)
                if ticket.remaining == 0:
                    ticket.done.set()
            return
        hashes = result.block_hash.tobytes()
        meets_share = result.meets_share.tolist()
        meets_network = result.meets_network.tolist()
        at = 0
        for chunk in batch:  # slices into each ticket's columns: no per-share work here
            ticket, start, n = chunk.ticket, chunk.start, len(chunk)
            checks = ticket.checks
            checks.block_hashes[32 * start : 32 * (start + n)] = hashes[32 * at : 32 * (at + n)]
            checks.meets_share[start : start + n] = meets_share[at : at + n]
            checks.meets_network[start : start + n] = meets_network[at : at + n]
            at += n
            ticket.remaining -= n
            if ticket.remaining == 0:
                ticket.done.set()
        self.batches += 1
        self.checked += size


def make_checker(backend: str, threads: int) -> Checker:
    return Checker(backend=backend, threads=threads)  # type: ignore[arg-type]


__all__ = ["BatchValidator", "Check", "Checks", "ValidationFailed", "make_checker"]
