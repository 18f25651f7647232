"""Checker API behaviour: inputs, backends, routing, caching."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from pool.bitcoin.target import DIFF1_TARGET
from pool.checker import (
    Checker,
    CheckerJob,
    Share,
    ShareBatch,
    check_batch_scalar,
    share_targets,
    target_words,
    words_to_target,
)


def _job(rng: random.Random, branch: int = 3) -> CheckerJob:
    return CheckerJob(
        rng.randbytes(80),
        rng.randbytes(100),
        [rng.randbytes(32) for _ in range(branch)],
        0x20000000,
        rng.randbytes(32),
        0x207FFFFF,
    )


def _shares(rng: random.Random, n: int, e2: int = 8) -> list[Share]:
    return [
        Share(
            0,
            b"\x00\x00\x00\x01",
            rng.randbytes(e2),
            rng.getrandbits(32),
            rng.getrandbits(32),
            0,
            0x1FFFE000,
            DIFF1_TARGET,
        )
        for _ in range(n)
    ]


def test_target_words_roundtrip() -> None:
    for value in (0, 1, DIFF1_TARGET, (1 << 256) - 1, 0x1234 << 200):
        words = target_words(value)
        assert words.dtype == np.uint32 and words.shape == (8,)
        assert words_to_target(words) == value
    with pytest.raises(ValueError):
        target_words(1 << 256)


def test_share_batch_validation() -> None:
    batch = ShareBatch.from_shares(_shares(random.Random(1), 3))
    assert len(batch) == 3 and batch.uniform_extranonce
    assert batch.share(1).extranonce1 == b"\x00\x00\x00\x01"
    with pytest.raises(ValueError, match="share_target"):
        ShareBatch(
            job_index=[0], extranonce1=np.zeros((1, 4), np.uint8), extranonce2=np.zeros((1, 4), np.uint8),
            ntime=[0], nonce=[0], version_bits=[0], mask=[0], share_target=np.zeros((1, 4), np.uint32),
        )  # fmt: skip
    with pytest.raises(ValueError, match="32 bits"):
        ShareBatch(
            job_index=[0], extranonce1=np.zeros((1, 4), np.uint8), extranonce2=np.zeros((1, 4), np.uint8),
            ntime=[1 << 32], nonce=[0], version_bits=[0], mask=[0], share_target=share_targets([1]),
        )  # fmt: skip
    with pytest.raises(ValueError, match="extranonce2_len"):
        ShareBatch(
            job_index=[0], extranonce1=np.zeros((1, 4), np.uint8), extranonce2=np.zeros((1, 4), np.uint8),
            ntime=[0], nonce=[0], version_bits=[0], mask=[0], share_target=share_targets([1]),
            extranonce2_len=[5],
        )  # fmt: skip


def test_mixed_lengths_recorded_only_when_needed() -> None:
    rng = random.Random(2)
    mixed = ShareBatch.from_shares(_shares(rng, 2, e2=4) + _shares(rng, 2, e2=8))
    assert not mixed.uniform_extranonce
    assert list(mixed.en2_lengths()) == [4, 4, 8, 8]
    assert mixed.share(0).extranonce2 == mixed.extranonce2[0, :4].tobytes()


def test_uniform_and_explicit_lengths_agree(vector_checker: Checker) -> None:
    """The same shares as full-width rows, or with explicit per-share lengths, hash the same."""
    rng = random.Random(3)
    jobs = [_job(rng)]
    uniform = ShareBatch.from_shares(_shares(rng, 40))
    explicit = ShareBatch(
        job_index=uniform.job_index, extranonce1=uniform.extranonce1, extranonce2=uniform.extranonce2,
        ntime=uniform.ntime, nonce=uniform.nonce, version_bits=uniform.version_bits, mask=uniform.mask,
        share_target=uniform.share_target, extranonce2_len=np.full(40, 8, np.uint8),
    )  # fmt: skip
    assert vector_checker.check(uniform, jobs).equals(vector_checker.check(explicit, jobs))


def test_backends_and_routing(vector_checker: Checker) -> None:
    rng = random.Random(4)
    jobs = [_job(rng), _job(rng, 0)]
    batch = ShareBatch.from_shares(_shares(rng, 5))
    want = check_batch_scalar(batch, jobs)
    assert Checker("scalar").check(batch, jobs).equals(want)
    assert Checker("numba", min_vector_batch=100).check(batch, jobs).equals(want)  # routed to scalar
    assert vector_checker.check(batch, jobs).equals(want)
    with pytest.raises(ValueError):
        Checker("gpu")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        vector_checker.check(batch, jobs[:0])


def test_empty_batch(vector_checker: Checker) -> None:
    empty = ShareBatch.from_shares([])
    result = vector_checker.check(empty, [_job(random.Random(5))])
    assert len(result) == 0 and result.block_hash.shape == (0, 32)


def test_check_one_and_result_helpers(vector_checker: Checker) -> None:
    rng = random.Random(6)
    job = _job(rng)
    s = _shares(rng, 1)[0]
    result = vector_checker.check_one(
        job, s.extranonce1, s.extranonce2, s.ntime, s.nonce, s.version_bits, s.mask, s.share_target
    )
    assert result.display_hash(0) == result.block_hash[0, ::-1].tobytes().hex()
    assert result.hash_int(0) == int(result.display_hash(0), 16)


def test_job_tables_cached_on_job_identity(vector_checker: Checker) -> None:
    rng = random.Random(7)
    jobs = [_job(rng)]
    batch = ShareBatch.from_shares(_shares(rng, 33))
    vector_checker.check(batch, jobs)
    keys = ((0, 12),)
    first = vector_checker._tables_for(jobs, keys)
    assert vector_checker._tables_for(jobs, keys) is first
    assert vector_checker._tables_for([_job(rng)], keys) is not first


def test_checker_job_is_immutable_and_validates() -> None:
    job = _job(random.Random(8))
    with pytest.raises(AttributeError):
        job.version = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        CheckerJob(b"", b"", [b"\x00" * 31], 0, bytes(32), 0x207FFFFF)
    with pytest.raises(ValueError):  # nBits consensus would refuse
        CheckerJob(b"", b"", [], 0, bytes(32), 0x01FEDCBA)


def test_warm_up_second_call_is_free(vector_checker: Checker) -> None:
    assert vector_checker.warm_up() < 0.05


def test_scalar_backend_does_not_load_numba() -> None:
    code = (
        "import sys; from pool.checker import Checker, ShareBatch, CheckerJob, Share;"
        "from pool.checker.verify import verify_from_wire;"
        "job = CheckerJob(b'', b'', [], 0, bytes(32), 0x207fffff);"
        "Checker('scalar').check(ShareBatch.from_shares([Share(0, b'', bytes(4), 0, 0, 0, 0, 1)]), [job]);"
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_readonly_and_strided_inputs_reuse_the_warm_signature(vector_checker: Checker) -> None:
    """Inputs Numba would type differently (read-only, strided, big-endian) are normalised,
    so no batch ever triggers a fresh compile after warm_up."""
    from pool.checker import kernel

    rng = random.Random(9)
    jobs = [_job(rng)]
    base = ShareBatch.from_shares(_shares(rng, 40))
    ro_en2 = np.frombuffer(base.extranonce2.tobytes(), dtype=np.uint8).reshape(40, 8)  # read-only
    assert not ro_en2.flags.writeable
    odd = ShareBatch(
        job_index=base.job_index.astype(np.int64),
        extranonce1=np.asfortranarray(base.extranonce1),  # not C-contiguous
        extranonce2=ro_en2,
        ntime=base.ntime[::1],
        nonce=base.nonce.astype(">u4"),
        version_bits=base.version_bits.tolist(),
        mask=base.mask,
        share_target=base.share_target.astype(">u4"),
    )
    before = len(kernel.check_shares.signatures)
    assert vector_checker.check(odd, jobs).equals(check_batch_scalar(base, jobs))
    assert len(kernel.check_shares.signatures) == before == 1


def test_kernel_releases_the_gil() -> None:
    from pool.checker import kernel

    assert kernel.check_shares.targetoptions.get("nogil") is True
    assert kernel.check_shares_parallel.targetoptions.get("nogil") is True
