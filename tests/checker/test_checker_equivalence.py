"""The vectorised checker equals the scalar hashlib reference, hash for hash, verdict for verdict."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pool.bitcoin.target import DIFF1_TARGET
from pool.checker import Checker, CheckerJob, Share, ShareBatch, check_batch_scalar, check_share_scalar

MAX_TARGET = (1 << 256) - 1
# regtest (about half of all hashes meet it), near-maximal, mainnet-genesis-like (practically never), in between
NBITS = (0x207FFFFF, 0x2100FFFF, 0x1D00FFFF, 0x200FFFFF, 0x1F00FFFF)
MASKS = (0, 0x1FFFE000, 0xFFFFFFFF, 0x00006000)

jobs_st = st.builds(
    CheckerJob,
    coinb1=st.binary(min_size=0, max_size=200),
    coinb2=st.binary(min_size=0, max_size=300),
    merkle_branch=st.lists(st.binary(min_size=32, max_size=32), min_size=0, max_size=16),
    version=st.integers(0, 0xFFFFFFFF),
    prevhash=st.binary(min_size=32, max_size=32),
    nbits=st.sampled_from(NBITS),
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[CheckerJob], list[Share]]:
    """A few random jobs and shares against them; extranonce sizes uniform or mixed."""
    jobs = draw(st.lists(jobs_st, min_size=1, max_size=4))
    n = draw(st.integers(1, 80))  # partial groups, exactly one group, several groups
    mixed = draw(st.booleans())
    e1_fixed = draw(st.integers(0, 8))
    e2_fixed = draw(st.integers(4, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    shares = []
    for _ in range(n):
        e1 = rng.randint(0, 8) if mixed else e1_fixed
        e2 = rng.randint(4, 8) if mixed else e2_fixed
        mask = rng.choice((*MASKS, rng.getrandbits(32)))
        target = rng.choice((MAX_TARGET, 0, DIFF1_TARGET, rng.getrandbits(256), rng.getrandbits(256) >> 1))
        shares.append(
            Share(
                job_index=rng.randrange(len(jobs)),
                extranonce1=rng.randbytes(e1),
                extranonce2=rng.randbytes(e2),
                ntime=rng.getrandbits(32),
                nonce=rng.getrandbits(32),
                version_bits=rng.getrandbits(32),  # bits outside the mask must be ignored by the hash
                mask=mask,
                share_target=target,
            )
        )
    return jobs, shares


def _assert_same(vector_checker: Checker, jobs: list[CheckerJob], shares: list[Share]) -> None:
    batch = ShareBatch.from_shares(shares)
    want = check_batch_scalar(batch, jobs)
    got = vector_checker.check(batch, jobs)
    for i in range(len(shares)):
        assert got.block_hash[i].tobytes() == want.block_hash[i].tobytes(), f"hash differs at share {i}"
    assert np.array_equal(got.meets_share, want.meets_share)
    assert np.array_equal(got.meets_network, want.meets_network)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches())
def test_vector_equals_scalar(vector_checker: Checker, case: tuple[list[CheckerJob], list[Share]]) -> None:
    jobs, shares = case
    _assert_same(vector_checker, jobs, shares)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batches(), st.data())
def test_share_target_boundary(
    vector_checker: Checker, case: tuple[list[CheckerJob], list[Share]], data: st.DataObject
) -> None:
    """Share target = hash value accepts, hash value - 1 rejects, on both backends."""
    jobs, shares = case
    first = check_batch_scalar(ShareBatch.from_shares(shares), jobs)
    offsets = data.draw(st.lists(st.sampled_from((0, -1, 1)), min_size=len(shares), max_size=len(shares)))
    bounded = []
    for i, (share, off) in enumerate(zip(shares, offsets, strict=True)):
        h = first.hash_int(i)
        bounded.append(share._replace(share_target=min(max(h + off, 0), MAX_TARGET)))
    batch = ShareBatch.from_shares(bounded)
    got = vector_checker.check(batch, jobs)
    want = check_batch_scalar(batch, jobs)
    assert got.equals(want)
    for i, off in enumerate(offsets):
        h = first.hash_int(i)
        assert got.hash_int(i) == h
        if off == 0:
            assert got.meets_share[i], "a hash exactly at the target is a share"
        elif off == -1:
            assert not got.meets_share[i], "a hash one above the target is not"
        else:
            assert got.meets_share[i]


def test_batch_rows_equal_single_share_reference(vector_checker: Checker) -> None:
    """Each batch row is exactly what the one-share reference says, header included."""
    rng = random.Random(5)
    jobs = [
        CheckerJob(
            rng.randbytes(a),
            rng.randbytes(b),
            [rng.randbytes(32) for _ in range(k)],
            0x20000000,
            rng.randbytes(32),
            0x207FFFFF,
        )
        for a, b, k in ((0, 0, 0), (63, 1, 1), (64, 64, 16), (150, 190, 7))
    ]
    shares = [
        Share(
            i % 4,
            rng.randbytes(4),
            rng.randbytes(4 + i % 5),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(32),
            0x1FFFE000,
            DIFF1_TARGET,
        )
        for i in range(100)
    ]
    batch = ShareBatch.from_shares(shares)
    got = vector_checker.check(batch, jobs)
    for i, s in enumerate(shares):
        ref = check_share_scalar(
            jobs[s.job_index], s.extranonce1, s.extranonce2, s.ntime, s.nonce, s.version_bits, s.mask, s.share_target
        )
        assert got.block_hash[i].tobytes() == ref.block_hash
        assert got.hash_int(i) == ref.hash_int
        assert bool(got.meets_share[i]) == ref.meets_share
        assert bool(got.meets_network[i]) == ref.meets_network


def test_many_jobs_interleaved_lengths(vector_checker: Checker) -> None:
    """A large mixed batch: every coinbase block count and branch length lands in shared groups."""
    rng = random.Random(11)
    jobs = [
        CheckerJob(
            rng.randbytes(rng.randint(0, 260)),
            rng.randbytes(rng.randint(0, 400)),
            [rng.randbytes(32) for _ in range(rng.randint(0, 16))],
            rng.getrandbits(32),
            rng.randbytes(32),
            rng.choice(NBITS),
        )
        for _ in range(9)
    ]
    shares = [
        Share(
            rng.randrange(9),
            rng.randbytes(rng.randint(0, 8)),
            rng.randbytes(rng.randint(4, 8)),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.choice(MASKS),
            rng.getrandbits(256) >> 2,
        )
        for _ in range(1500)
    ]
    _assert_same(vector_checker, jobs, shares)


def test_parallel_kernel_equals_scalar() -> None:
    """The opt-in multi-threaded kernel gives the same answers."""
    rng = random.Random(3)
    jobs = [
        CheckerJob(
            rng.randbytes(90),
            rng.randbytes(120),
            [rng.randbytes(32) for _ in range(11)],
            0x20000000,
            rng.randbytes(32),
            0x207FFFFF,
        )
    ]
    shares = [
        Share(
            0,
            rng.randbytes(4),
            rng.randbytes(8),
            rng.getrandbits(32),
            rng.getrandbits(32),
            rng.getrandbits(32),
            0x1FFFE000,
            DIFF1_TARGET,
        )
        for _ in range(200)
    ]
    checker = Checker("numba", threads=2, min_vector_batch=0)
    checker.warm_up()
    batch = ShareBatch.from_shares(shares)
    assert checker.check(batch, jobs).equals(check_batch_scalar(batch, jobs))
