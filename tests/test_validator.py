"""Batching share checks across connections: same answers as the scalar reference."""

from __future__ import annotations

import random
from fractions import Fraction

import trio

from pool.bitcoin.script import address_to_script
from pool.bitcoin.target import difficulty_to_target
from pool.bitcoin.tx import TxOut
from pool.checker import Checker
from pool.config import DEVNET_POOL_ADDRESS
from pool.devnet.chain import DevnetChain
from pool.jobs import build_job
from pool.shares import judge_share
from pool.validator import BatchValidator
from stratum.protocol import Share

SCRIPT = address_to_script(DEVNET_POOL_ADDRESS, "regtest")


def _job(difficulty: Fraction = Fraction(1)):
    chain = DevnetChain(difficulty=difficulty, synthetic_txs=5)
    return build_job(
        chain.block_template(), job_id="1", generation=1,
        payout_outputs=lambda v: [TxOut(v, SCRIPT)], tag=b"/t/", extranonce_size=8, clean_jobs=True,
    )


def _share(job, rng: random.Random, difficulty: Fraction) -> Share:
    return Share(
        worker="w", job=job.stratum_job(), extranonce1=rng.randbytes(4), extranonce2=rng.randbytes(4),
        ntime=job.curtime, nonce=rng.getrandbits(32), version_bits=rng.getrandbits(32) & 0x1FFFE000,
        version_mask=0x1FFFE000, difficulty=difficulty, stale=False,
    )


async def _check_all(validator: BatchValidator, job, shares, difficulty):
    results = [None] * len(shares)

    async def one(i, s):
        results[i] = await validator.check(job.job_id, s.extranonce1, s.extranonce2, s.ntime, s.nonce,
                                           s.version_bits, s.version_mask, difficulty_to_target(difficulty))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(validator.run)
        async with trio.open_nursery() as inner:
            for i, s in enumerate(shares):
                inner.start_soon(one, i, s)
        nursery.cancel_scope.cancel()
    return results


async def test_concurrent_submissions_are_batched_and_match_reference():
    job = _job()
    rng = random.Random(7)
    difficulty = Fraction(1, 2**28)  # about one random header in 16 meets it
    shares = [_share(job, rng, difficulty) for _ in range(600)]
    validator = BatchValidator(Checker(backend="numba"), max_batch=256, deadline=0.005)
    validator.add_job(job)
    results = await _check_all(validator, job, shares, difficulty)
    assert validator.batches < 10  # 600 concurrent shares went through in a handful of calls
    target = difficulty_to_target(difficulty)
    for share, got in zip(shares, results):
        ref = judge_share(job, share)
        assert got.block_hash == ref.block_hash
        assert got.meets_share == (ref.hash_value <= target)
        assert got.meets_network == (ref.hash_value <= job.network_target)
    assert any(r.meets_share for r in results)


async def test_lone_share_is_judged_promptly_on_scalar_path():
    job = _job()
    rng = random.Random(1)
    share = _share(job, rng, Fraction(1))
    validator = BatchValidator(Checker(backend="scalar"), max_batch=1024, deadline=0.002)
    validator.add_job(job)
    start = trio.current_time()
    [got] = await _check_all(validator, job, [share], Fraction(1))
    assert trio.current_time() - start < 0.5
    assert got.block_hash == judge_share(job, share).block_hash
    assert validator.batches == 1


async def test_unknown_job_is_refused_not_crashing():
    validator = BatchValidator(Checker(backend="scalar"))
    try:
        await validator.check("nope", b"", b"\0" * 4, 0, 0, 0, 0, 1)
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown job must be refused")


async def test_check_many_judges_a_whole_batch_with_one_wait():
    """The server's path: one call for many shares (max_batch splits it), unknown jobs as None."""
    job = _job()
    rng = random.Random(11)
    difficulty = Fraction(1, 2**28)
    shares = [_share(job, rng, difficulty) for _ in range(600)]
    target = difficulty_to_target(difficulty)
    submits = [
        (job.job_id, s.extranonce1, s.extranonce2, s.ntime, s.nonce, s.version_bits, s.version_mask, target) for s in shares
    ]
    submits.insert(17, ("no-such-job", b"\0" * 4, b"\0" * 4, job.curtime, 0, 0, 0, target))
    validator = BatchValidator(Checker(backend="numba"), max_batch=256, deadline=0.002)
    validator.add_job(job)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(validator.run)
        results = list(await validator.check_many(submits))
        nursery.cancel_scope.cancel()
    assert results[17] is None
    del results[17]
    assert validator.batches == 3  # 600 shares: 256 + 256 + 88
    assert validator.checked == 600
    for share, got in zip(shares, results):
        ref = judge_share(job, share)
        assert got is not None and got.block_hash == ref.block_hash
        assert got.hash_value == ref.hash_value
        assert got.meets_share == (ref.hash_value <= target)
    assert any(r.meets_share for r in results) and not all(r.meets_share for r in results)


async def test_concurrent_calls_split_across_batches_keep_every_answer_in_place():
    """Calls of many sizes at once, unknown jobs among their shares, batches far
    smaller than the calls (every call split across several): each share's answer
    is the scalar reference's, at its own position in its own call."""
    job = _job()
    rng = random.Random(12)
    difficulty = Fraction(1, 2**28)
    target = difficulty_to_target(difficulty)
    validator = BatchValidator(Checker(backend="numba"), max_batch=7, deadline=0.001)
    validator.add_job(job)
    calls = []
    for size in (1, 5, 7, 8, 23, 40):
        shares = [_share(job, rng, difficulty) for _ in range(size)]
        submits = [
            (job.job_id, s.extranonce1, s.extranonce2, s.ntime, s.nonce, s.version_bits, s.version_mask, target) for s in shares
        ]
        unknown = set(rng.sample(range(size), size // 4))
        for k in unknown:
            submits[k] = ("gone", *submits[k][1:])
        calls.append((shares, submits, unknown))
    answers: dict[int, list] = {}

    async def call(c: int) -> None:
        answers[c] = list(await validator.check_many(calls[c][1]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(validator.run)
        async with trio.open_nursery() as callers:
            for c in range(len(calls)):
                callers.start_soon(call, c)
        nursery.cancel_scope.cancel()
    assert validator.checked == sum(len(s) - len(u) for s, _, u in calls)
    assert validator.batches >= validator.checked // 7
    for c, (shares, _submits, unknown) in enumerate(calls):
        assert len(answers[c]) == len(shares)
        for k, (share, got) in enumerate(zip(shares, answers[c])):
            if k in unknown:
                assert got is None
                continue
            ref = judge_share(job, share)
            assert got is not None and got.block_hash == ref.block_hash and got.hash_value == ref.hash_value
            assert got.meets_share == (ref.hash_value <= target)
