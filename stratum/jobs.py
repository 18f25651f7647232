"""Jobs as Stratum sees them, and the book of live jobs shared by all connections."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import cached_property

from .messages import encode_notification


@dataclass(frozen=True)
class StratumJob:
    """Everything a connection needs to send a job and sanity-check a submit.

    ``generation`` increases with every new chain tip; a job from an older
    generation is stale.
    """

    job_id: str
    prevhash: str  # notify encoding (word-swapped)
    coinb1: str
    coinb2: str
    merkle_branch: tuple[str, ...]
    version: int
    nbits: int
    ntime: int
    clean_jobs: bool
    generation: int
    ntime_min: int
    ntime_max: int

    def notify_params(self) -> list:
        return [
            self.job_id,
            self.prevhash,
            self.coinb1,
            self.coinb2,
            list(self.merkle_branch),
            f"{self.version:08x}",
            f"{self.nbits:08x}",
            f"{self.ntime:08x}",
            self.clean_jobs,
        ]

    @cached_property
    def notify_line(self) -> bytes:
        """Serialised once per job, written to every connection as is."""
        return encode_notification("mining.notify", self.notify_params())

    def reissue_line(self, wire_id: str) -> bytes:
        """The same work under another job id, clean_jobs=false.

        Sent to one connection after its difficulty (or extranonce1) changed,
        so that firmware applying ``mining.set_difficulty`` at the next notify
        (cgminer, bmminer) switches at once; the new id keeps the shares of
        the two difficulties apart.
        """
        params = self.notify_params()
        params[0] = wire_id
        params[8] = False
        return encode_notification("mining.notify", params)


@dataclass
class JobBook:
    """Live jobs and the shares already seen for each (duplicate detection).

    One book is shared by every connection of a server.  Duplicates are keyed
    per job across all connections, by everything that determines the header
    (extranonce1, extranonce2, ntime, nonce, resulting version: one bytes
    key, ``protocol.duplicate_key``; the extranonce sizes are fixed per
    server), so a miner that reconnects (and resumes its extranonce1) and
    resubmits is caught, and two shares that differ only in rolled version
    bits are not confused.

    The keys of jobs on an older chain tip are dropped when a job on a newer
    tip arrives: shares on them are stale, refused uncredited either way, so
    a repeat of one is answered as stale rather than as a duplicate. What is
    kept is bounded by the shares since the last block, not by the jobs the
    book holds (64 jobs at a 30 s refresh would be half an hour of shares).
    """

    max_jobs: int = 64
    _jobs: OrderedDict[str, StratumJob] = field(default_factory=OrderedDict)
    _seen: dict[str, set[Hashable]] = field(default_factory=dict)
    generation: int = 0
    current: StratumJob | None = None
    #: Each live job's sequence number: 1, 2, 3... in the order jobs were first added.
    #: Connections record the jobs they were sent as runs of consecutive numbers.
    _seqs: dict[str, int] = field(default_factory=dict)
    _last_seq: int = 0
    #: ``seq(current)``, for the broadcast loop.
    current_seq: int = 0

    def add(self, job: StratumJob) -> None:
        job_id = job.job_id
        if job.generation > self.generation:  # a new tip: forget the older tips' share keys
            for old_id, old in self._jobs.items():
                if old.generation < job.generation:
                    self._seen.pop(old_id, None)
        self._jobs[job_id] = job
        self._seen.setdefault(job_id, set())
        seq = self._seqs.get(job_id)
        if seq is None:  # a job added again keeps its number
            self._last_seq = seq = self._last_seq + 1
            self._seqs[job_id] = seq
        self.generation = max(self.generation, job.generation)
        self.current = job
        self.current_seq = seq
        while len(self._jobs) > self.max_jobs:
            old, _ = self._jobs.popitem(last=False)
            self._seen.pop(old, None)
            self._seqs.pop(old, None)

    def get(self, job_id: str) -> StratumJob | None:
        return self._jobs.get(job_id)

    def seq(self, job: StratumJob) -> int | None:
        """``job``'s sequence number; None unless it is the job this book holds under its id."""
        if job is self.current:
            return self.current_seq
        if self._jobs.get(job.job_id) is not job:
            return None
        return self._seqs[job.job_id]

    def seq_of(self, job_id: str) -> int | None:
        """The sequence number of the live job ``job_id`` (None if the book has no such job)."""
        return self._seqs.get(job_id)

    def is_stale(self, job: StratumJob) -> bool:
        return job.generation < self.generation

    def first_sighting(self, job_id: str, key: Hashable) -> bool:
        """Record a share key; False if it was seen before for this job (always True
        for a job of an older tip: its keys are not kept)."""
        seen = self._seen.get(job_id)
        if seen is None:
            job = self._jobs.get(job_id)
            if job is not None and job.generation < self.generation:
                return True
            seen = self._seen[job_id] = set()
        if key in seen:
            return False
        seen.add(key)
        return True

    def forget(self, job_id: str, key: Hashable) -> None:
        """Undo ``first_sighting`` for a share the pool could not judge (may be retried)."""
        self._seen.get(job_id, set()).discard(key)
