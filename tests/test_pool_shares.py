"""``Pool.submit_shares``: verdicts, stored rows and the best share, against the scalar reference."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import trio

from pool.bitcoin.target import difficulty_to_target, hash_difficulty
from pool.metrics import PoolMetrics
from pool.service import Pool, job_network_difficulty
from pool.shares import judge_share
from stratum import errors
from tests.pool_fixtures import devnet_settings
from tests.test_validator import _job, _share

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


class CapturingWriter:
    """Stands in for the spool and writer: keeps what the pool hands over to be recorded."""

    def __init__(self) -> None:
        self.rows: list = []

    async def record_many(self, rows) -> None:
        self.rows.extend(rows)


async def test_batch_verdicts_rows_and_best_share_match_the_reference(tmp_path: Path):
    """Shares from two workers at two difficulties on two jobs, some low, some
    stale, some on a job the pool never had, in one batch: each verdict, each
    stored row (the hash as display hex, the exact difficulties) and the best
    share are what the scalar reference (``judge_share``) says."""
    settings = devnet_settings(tmp_path)
    metrics = PoolMetrics(settings=settings.metrics, concentration=settings.concentration)
    writer = CapturingWriter()
    pool = Pool(settings, nodes=None, metrics=metrics, writer=writer)  # type: ignore[arg-type]
    jobs = [_job(), _job()]
    jobs[1] = type(jobs[1])(**{**jobs[1].__dict__, "job_id": "2"})
    for job in jobs:
        pool.jobs.jobs[job.job_id] = job
        pool.validator.add_job(job)
    ghost = type(jobs[0])(**{**jobs[0].__dict__, "job_id": "never-sent"})
    rng = random.Random(21)
    easy, hard = Fraction(1, 2**30), Fraction(1, 2**26)  # hard: most shares fall short
    shares, want = [], []
    for n in range(300):
        job = jobs[n % 2] if n % 37 else ghost
        difficulty = easy if n % 3 else hard
        share = _share(job, rng, difficulty)._replace(worker=f"{ADDRESS}.rig{n % 2}", stale=n % 41 == 0)
        shares.append(share)
        if job is ghost:
            want.append(errors.UNKNOWN_JOB)
            continue
        verdict = judge_share(job, share)
        if share.stale:
            want.append(errors.STALE_JOB)
        elif verdict.hash_value > difficulty_to_target(difficulty):
            want.append(errors.LOW_DIFFICULTY)
        else:
            want.append(None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.validator.run)
        results = await pool.submit_shares(shares)
        nursery.cancel_scope.cancel()
    assert results == want
    accepted = [s for s, r in zip(shares, results) if r is None]
    assert 30 < len(accepted) < 250 and len(writer.rows) == len(accepted)
    for share, row in zip(accepted, writer.rows):
        job = pool.jobs.jobs[share.job.job_id]
        verdict = judge_share(job, share)
        network = job_network_difficulty(job.network_target)
        assert row.share_hash == verdict.block_hash[::-1].hex()
        assert (row.address, row.worker) == (ADDRESS, share.worker.split(".")[1])
        assert (row.job_id, row.height, row.is_block) == (job.job_id, job.height, False)
        assert Fraction(row.difficulty) == share.difficulty and Fraction(row.network_difficulty) == network
    best = min(judge_share(pool.jobs.jobs[s.job.job_id], s).hash_value for s in accepted)
    assert pool.best_share == hash_difficulty(best)
    assert metrics.shares_accepted._value.get() == len(accepted)
