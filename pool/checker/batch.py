"""The checker API: a batch of shares plus the jobs they refer to, in; hashes and verdicts, out.

Two backends give bit-identical results (the test suite holds them to it):

* ``"numba"`` (default): :mod:`pool.checker.kernel`, the whole pipeline in one
  compiled call over the batch, 32 shares in lockstep per core.
* ``"scalar"``: :func:`pool.checker.scalar.check_batch_scalar`, hashlib one
  share at a time. Needs no compiler; the reference definition.

Per-call Python work is kept to packing: job tables and coinbase layouts are
cached on the identity of the job list, so a server calling with its live
job list every few milliseconds re-packs only when a job arrives.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .job import CheckerJob, target_words
from .scalar import check_batch_scalar
from .shares import BatchResult, Share, ShareBatch

__all__ = ["BatchResult", "Checker", "JobTables", "Share", "ShareBatch"]

Backend = Literal["numba", "scalar"]

# Below this many shares the kernel's fixed cost (a 32-lane group, NumPy
# packing) loses to hashlib; see bench/checker.py for the measured crossover.
DEFAULT_MIN_VECTOR_BATCH = 4


@dataclass(frozen=True)
class JobTables:
    """Per-job and per-coinbase-layout arrays in the form the kernel reads.

    A *template* is one job at one total extranonce length (its coinbase
    layout). ``keys[t]`` is ``(job index, extranonce length)``.
    """

    jobs: tuple[CheckerJob, ...]  # held so the id()-based cache key stays valid
    keys: tuple[tuple[int, int], ...]
    tpl_job: np.ndarray  # int32[T]
    tpl_mid: np.ndarray  # uint32[T, 8]
    tpl_words: np.ndarray  # uint32[T, maxwords]
    tpl_nblocks: np.ndarray  # int32[T]
    tpl_en_off: np.ndarray  # int32[T]
    job_version: np.ndarray  # uint32[J]
    job_prev: np.ndarray  # uint32[J, 8]
    job_nbits: np.ndarray  # uint32[J]
    job_branch: np.ndarray  # uint32[J, max(1, maxbranch), 8]
    job_nbranch: np.ndarray  # int32[J]
    job_net: np.ndarray  # uint32[J, 8]

    @classmethod
    def build(cls, jobs: Sequence[CheckerJob], keys: Sequence[tuple[int, int]]) -> JobTables:
        jobs = tuple(jobs)
        nj = len(jobs)
        maxbr = max([1] + [j.branch_len for j in jobs])
        job_branch = np.zeros((nj, maxbr, 8), dtype=np.uint32)
        for ji, job in enumerate(jobs):
            job_branch[ji, : job.branch_len] = job.branch_words
        tails = [jobs[ji].tail(en_len) for ji, en_len in keys]
        maxwords = max([16] + [t.words.shape[0] for t in tails])
        tpl_words = np.zeros((len(keys), maxwords), dtype=np.uint32)
        for ti, tail in enumerate(tails):
            tpl_words[ti, : tail.words.shape[0]] = tail.words
        return cls(
            jobs=jobs,
            keys=tuple(keys),
            tpl_job=np.array([k[0] for k in keys], dtype=np.int32),
            tpl_mid=np.array([jobs[ji].midstate for ji, _ in keys], dtype=np.uint32).reshape(len(keys), 8),
            tpl_words=tpl_words,
            tpl_nblocks=np.array([t.nblocks for t in tails], dtype=np.int32),
            tpl_en_off=np.array([t.extranonce_offset for t in tails], dtype=np.int32),
            job_version=np.array([j.version for j in jobs], dtype=np.uint32),
            job_prev=np.array([j.prevhash_words for j in jobs], dtype=np.uint32).reshape(nj, 8),
            job_nbits=np.array([j.nbits for j in jobs], dtype=np.uint32),
            job_branch=job_branch,
            job_nbranch=np.array([j.branch_len for j in jobs], dtype=np.int32),
            job_net=np.array([j.network_target_words for j in jobs], dtype=np.uint32).reshape(nj, 8),
        )


class Checker:
    """Validates batches of shares against their jobs.

    ``backend``: ``"numba"`` (default) or ``"scalar"``. ``threads``: Numba
    threads for the kernel; 1 (default) runs the single-threaded kernel and
    leaves the other cores to the event loop and the database, more runs the
    ``parallel=True`` variant. ``min_vector_batch``: batches smaller than
    this go to the scalar path even on the Numba backend, because a nearly
    empty 32-lane group costs more than hashlib (results are identical
    either way); 0 forces the kernel.

    Call :meth:`warm_up` at start-up: it compiles the kernel, or loads it
    from Numba's on-disk cache, so the first real share pays no compile time.

    The kernel releases the GIL, so :meth:`check` is meant to be called from
    a worker thread (e.g. ``trio.to_thread.run_sync``) and may be called from
    several at once; it is not async itself.
    """

    def __init__(
        self,
        backend: Backend = "numba",
        *,
        threads: int = 1,
        min_vector_batch: int = DEFAULT_MIN_VECTOR_BATCH,
        table_cache_size: int = 16,
    ) -> None:
        if backend not in ("numba", "scalar"):
            raise ValueError(f"unknown checker backend {backend!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.backend: Backend = backend
        self.threads = threads
        self.min_vector_batch = min_vector_batch
        self._tables: OrderedDict[tuple, JobTables] = OrderedDict()
        self._tables_lock = threading.Lock()  # check() may run in several worker threads
        self._table_cache_size = table_cache_size
        self._warm = False

    # -- public -----------------------------------------------------------------

    def check(self, batch: ShareBatch, jobs: Sequence[CheckerJob]) -> BatchResult:
        """Hash and judge every share of ``batch``; ``batch.job_index`` indexes ``jobs``."""
        n = len(batch)
        if n and (int(batch.job_index.min()) < 0 or int(batch.job_index.max()) >= len(jobs)):
            raise IndexError("share job_index outside the job list")
        if self.backend == "scalar" or n < self.min_vector_batch or n == 0:
            return check_batch_scalar(batch, jobs)
        return self._check_numba(batch, jobs)

    def check_one(
        self,
        job: CheckerJob,
        extranonce1: bytes,
        extranonce2: bytes,
        ntime: int,
        nonce: int,
        version_bits: int,
        mask: int,
        share_target: int,
    ) -> BatchResult:
        """Convenience for a single share (goes through :meth:`check`)."""
        batch = ShareBatch.from_shares(
            [Share(0, extranonce1, extranonce2, ntime, nonce, version_bits, mask, share_target)]
        )
        return self.check(batch, [job])

    def warm_up(self) -> float:
        """Compile or load the kernel now; returns the seconds it took.

        Runs a tiny synthetic batch through the very same packing path real
        batches take, so the compiled signature is exactly the one used later.
        """
        start = time.perf_counter()
        if self.backend == "numba" and not self._warm:
            job = CheckerJob(
                coinb1=bytes(70),
                coinb2=bytes(90),
                merkle_branch=[bytes(32)],
                version=0x20000000,
                prevhash=bytes(32),
                nbits=0x207FFFFF,
            )
            batch = ShareBatch.from_shares([Share(0, bytes(4), bytes(8), 0, i, 0, 0, (1 << 256) - 1) for i in range(2)])
            self._check_numba(batch, [job])
            if self.threads > 1:
                self._check_numba(batch, [job], parallel=True)
            self._warm = True
        return time.perf_counter() - start

    # -- internals --------------------------------------------------------------

    def _tables_for(self, jobs: Sequence[CheckerJob], keys: tuple[tuple[int, int], ...]) -> JobTables:
        cache_key = (tuple(id(j) for j in jobs), keys)
        with self._tables_lock:
            tables = self._tables.get(cache_key)
            if tables is not None:
                self._tables.move_to_end(cache_key)
                return tables
        tables = JobTables.build(jobs, keys)
        with self._tables_lock:
            self._tables[cache_key] = tables
            while len(self._tables) > self._table_cache_size:
                self._tables.popitem(last=False)
        return tables

    def _check_numba(self, batch: ShareBatch, jobs: Sequence[CheckerJob], parallel: bool | None = None) -> BatchResult:
        from . import kernel  # imported here so the scalar backend never loads Numba

        n = len(batch)
        if batch.uniform_extranonce:
            en_len = batch.extranonce1.shape[1] + batch.extranonce2.shape[1]
            keys = tuple((ji, en_len) for ji in range(len(jobs)))
            share_tpl = batch.job_index
            en1_len = np.full(n, batch.extranonce1.shape[1], dtype=np.uint8)
            en2_len = np.full(n, batch.extranonce2.shape[1], dtype=np.uint8)
        else:
            en1_len = batch.en1_lengths()
            en2_len = batch.en2_lengths()
            combined = batch.job_index.astype(np.int64) * 512 + en1_len.astype(np.int64) + en2_len.astype(np.int64)
            uniq, inverse = np.unique(combined, return_inverse=True)
            keys = tuple((int(k) // 512, int(k) % 512) for k in uniq)
            share_tpl = inverse.astype(np.int32).reshape(n)
        tables = self._tables_for(jobs, keys)
        if len(keys) > 1:
            # Group shares of one coinbase layout together so lanes rarely need masking.
            order = np.argsort(share_tpl, kind="stable").astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        out_hash = np.zeros((n, 32), dtype=np.uint8)
        out_share = np.zeros(n, dtype=np.bool_)
        out_net = np.zeros(n, dtype=np.bool_)
        use_parallel = self.threads > 1 if parallel is None else parallel
        if use_parallel:
            import numba

            numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
            fn = kernel.check_shares_parallel
        else:
            fn = kernel.check_shares
        fn(
            order, share_tpl, batch.extranonce1, en1_len, batch.extranonce2, en2_len,
            batch.ntime, batch.nonce, batch.version_bits, batch.mask, batch.share_target,
            tables.tpl_job, tables.tpl_mid, tables.tpl_words, tables.tpl_nblocks, tables.tpl_en_off,
            tables.job_version, tables.job_prev, tables.job_nbits, tables.job_branch,
            tables.job_nbranch, tables.job_net,
            out_hash, out_share, out_net,
        )  # fmt: skip
        return BatchResult(out_hash, out_share, out_net)


def share_targets(targets: Sequence[int]) -> np.ndarray:
    """Integer share targets to the ``uint32[n, 8]`` column of a :class:`ShareBatch`."""
    out = np.zeros((len(targets), 8), dtype=np.uint32)
    for i, t in enumerate(targets):
        out[i] = target_words(t)
    return out
