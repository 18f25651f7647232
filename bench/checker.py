"""Share-checker throughput: scalar (hashlib) vs vectorised (Numba), by batch size.

Run: ``.venv/bin/python bench/checker.py`` (options: ``--branch``, ``--threads``,
``--seconds``). Prints one table: shares/s for each backend at batch sizes
1, 32, 1024 and 16384 and their ratio.

The job is shaped like a mainnet job: a ~62-byte coinb1 (BIP34 height, pool
tag), 4-byte extranonce1 + 8-byte extranonce2, an ~87-byte coinb2 (a P2WPKH
payout plus the witness commitment), and a 12-step merkle branch (a block of
2049..4096 transactions). Every share has its own extranonce2, nonce, ntime
and rolled version bits, so no work is shared between shares: this is the
worst case for the checker (no repeated coinbases). Batches are built before
timing; both backends are timed on the same ShareBatch, through Checker.check.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pool.bitcoin.target import difficulty_to_target
from pool.checker import Checker, CheckerJob, ShareBatch, share_targets

BATCH_SIZES = (1, 32, 1024, 16384)


def mainnet_like_job(rng: random.Random, branch_len: int) -> CheckerJob:
    """A job with realistic byte lengths (contents random; only lengths matter for speed)."""
    tag = b"/stope/" + bytes(rng.getrandbits(8) for _ in range(12))
    script_prefix = b"\x03" + struct.pack("<I", 900_000)[:3] + tag
    en_size = 12
    coinb1 = (
        struct.pack("<I", 2)
        + b"\x01"
        + b"\x00" * 32
        + b"\xff\xff\xff\xff"
        + bytes([len(script_prefix) + en_size])
        + script_prefix
    )
    payout = struct.pack("<Q", 312_500_000) + b"\x16\x00\x14" + bytes(rng.getrandbits(8) for _ in range(20))
    commitment = struct.pack("<Q", 0) + b"\x26\x6a\x24\xaa\x21\xa9\xed" + bytes(rng.getrandbits(8) for _ in range(32))
    coinb2 = b"\xff\xff\xff\xff" + b"\x02" + payout + commitment + b"\x00\x00\x00\x00"
    branch = [bytes(rng.getrandbits(8) for _ in range(32)) for _ in range(branch_len)]
    prevhash = bytes(rng.getrandbits(8) for _ in range(32))
    return CheckerJob(coinb1, coinb2, branch, 0x20000000, prevhash, 0x17034219)


def random_batch(rng: np.random.Generator, n: int, difficulty: float) -> ShareBatch:
    target = difficulty_to_target(difficulty)
    return ShareBatch(
        job_index=np.zeros(n, dtype=np.int32),
        extranonce1=np.tile(np.frombuffer(b"\x8a\x01\x00\x2c", dtype=np.uint8), (n, 1)),
        extranonce2=rng.integers(0, 256, size=(n, 8), dtype=np.uint8),
        ntime=np.full(n, 0x66A1B2C3, dtype=np.uint32) + rng.integers(0, 600, size=n, dtype=np.uint32),
        nonce=rng.integers(0, 2**32, size=n, dtype=np.uint32),
        version_bits=rng.integers(0, 2**32, size=n, dtype=np.uint32) & np.uint32(0x1FFFE000),
        mask=np.full(n, 0x1FFFE000, dtype=np.uint32),
        share_target=np.repeat(share_targets([target]), n, axis=0),
    )


def rate(checker: Checker, batch: ShareBatch, jobs: list[CheckerJob], seconds: float) -> float:
    """Shares per second, best of repeated timings lasting about ``seconds`` in total."""
    checker.check(batch, jobs)  # untimed: table caches, first-touch of outputs
    best = float("inf")
    spent = 0.0
    runs = 0
    while spent < seconds or runs < 3:
        start = time.perf_counter()
        checker.check(batch, jobs)
        took = time.perf_counter() - start
        best = min(best, took)
        spent += took
        runs += 1
    return len(batch) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", type=int, default=12, help="merkle branch steps (default 12)")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads for the vectorised path")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per cell")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    job = mainnet_like_job(random.Random(args.seed), args.branch)
    jobs = [job]
    nprng = np.random.default_rng(args.seed)
    scalar = Checker("scalar")
    vector = Checker("numba", threads=args.threads, min_vector_batch=0)
    auto = Checker("numba", threads=args.threads)
    warm = vector.warm_up()
    auto.warm_up()

    tail = job.tail(12)
    compressions = (tail.nblocks + 1) + 3 * job.branch_len + 3
    print(f"checker bench: python {sys.version.split()[0]}, {os.cpu_count()} cpus, numba threads={args.threads}")
    print(
        f"job: coinbase {tail.coinbase_len} bytes ({len(job.coinb1)}+12+{len(job.coinb2)}; "
        f"{job.midstate_len} bytes in the job midstate, {tail.nblocks} blocks per share), "
        f"branch {job.branch_len} steps -> {compressions} SHA-256 compressions per share"
    )
    print(f"kernel warm-up (compile or cache load): {warm:.2f} s")
    print()
    header = f"{'batch':>7}  {'scalar sh/s':>12}  {'vector sh/s':>12}  {'vector/scalar':>13}  {'auto sh/s':>12}"
    print(header)
    print("-" * len(header))
    for n in BATCH_SIZES:
        batch = random_batch(nprng, n, difficulty=1.0)
        want = scalar.check(batch, jobs)
        if not vector.check(batch, jobs).equals(want):
            raise SystemExit(f"backends disagree at batch size {n}")
        s = rate(scalar, batch, jobs, args.seconds)
        v = rate(vector, batch, jobs, args.seconds)
        a = rate(auto, batch, jobs, args.seconds)
        print(f"{n:>7}  {s:>12,.0f}  {v:>12,.0f}  {v / s:>12.1f}x  {a:>12,.0f}")
    print()
    print("vector = Numba kernel forced at every size (min_vector_batch=0);")
    print(f"auto = default Checker (batches under {auto.min_vector_batch} shares go to the scalar path).")


if __name__ == "__main__":
    main()
