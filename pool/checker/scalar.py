"""The scalar reference checker: hashlib, one share at a time, straight from the spec.

This is the definition the vectorised kernel is tested against (hash for
hash, verdict for verdict) and the fallback backend when Numba is not
wanted. It deliberately reuses :mod:`pool.bitcoin` primitives -- the same
``sha256d``, ``fold_branch`` and ``ser_header`` the rest of the pool uses --
so "the checker agrees with the reference" means "agrees with the code that
builds blocks".

Steps (stratum-reference §4): coinbase = coinb1 + en1 + en2 + coinb2;
txid = sha256d(coinbase); root = fold of the branch with the coinbase on the
left; version = (v & ~mask) | (vb & mask); header = LE32(version) + prevhash
+ root + LE32(ntime) + LE32(nbits) + LE32(nonce); hash = sha256d(header)
read as a little-endian integer; share iff hash <= share target, block
candidate iff hash <= SetCompact(nbits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pool.bitcoin.block import ser_header
from pool.bitcoin.merkle import fold_branch
from pool.bitcoin.serialize import hash_to_int, sha256d

from .job import CheckerJob
from .shares import BatchResult, ShareBatch


@dataclass(frozen=True)
class ShareVerdict:
    """Everything the checker decides about one share.

    ``block_hash`` is in internal byte order (the raw sha256d output);
    ``hash_int`` is the number compared with targets.
    """

    block_hash: bytes
    hash_int: int
    meets_share: bool
    meets_network: bool
    header: bytes

    @property
    def display_hash(self) -> str:
        return self.block_hash[::-1].hex()


def share_merkle_root(job: CheckerJob, extranonce1: bytes, extranonce2: bytes) -> bytes:
    """Merkle root (internal order) for a share's coinbase."""
    return fold_branch(sha256d(job.coinbase(extranonce1, extranonce2)), job.merkle_branch)


def share_header(
    job: CheckerJob,
    extranonce1: bytes,
    extranonce2: bytes,
    ntime: int,
    nonce: int,
    version_bits: int,
    mask: int,
) -> bytes:
    """The 80-byte header a share commits to."""
    root = share_merkle_root(job, extranonce1, extranonce2)
    return ser_header(job.rolled_version(version_bits, mask), job.prevhash, root, ntime, job.nbits, nonce)


def check_share_scalar(
    job: CheckerJob,
    extranonce1: bytes,
    extranonce2: bytes,
    ntime: int,
    nonce: int,
    version_bits: int,
    mask: int,
    share_target: int,
) -> ShareVerdict:
    """Validate one share; the reference definition of a verdict."""
    header = share_header(job, extranonce1, extranonce2, ntime, nonce, version_bits, mask)
    digest = sha256d(header)
    value = hash_to_int(digest)
    return ShareVerdict(
        block_hash=digest,
        hash_int=value,
        meets_share=value <= share_target,
        meets_network=value <= job.network_target,
        header=header,
    )


def check_batch_scalar(batch: ShareBatch, jobs: Sequence[CheckerJob]) -> BatchResult:
    """The scalar backend over a :class:`ShareBatch`: the reference applied row by row.

    Columns are converted to Python values once up front (not per element)
    so the loop measures hashing, not NumPy scalar boxing.
    """
    n = len(batch)
    out_hash = np.zeros((n, 32), dtype=np.uint8)
    out_share = np.zeros(n, dtype=np.bool_)
    out_net = np.zeros(n, dtype=np.bool_)
    if n == 0:
        return BatchResult(out_hash, out_share, out_net)
    job_index = batch.job_index.tolist()
    en1_rows = batch.extranonce1.tobytes()
    en2_rows = batch.extranonce2.tobytes()
    w1 = batch.extranonce1.shape[1]
    w2 = batch.extranonce2.shape[1]
    l1 = batch.en1_lengths().tolist()
    l2 = batch.en2_lengths().tolist()
    ntime = batch.ntime.tolist()
    nonce = batch.nonce.tolist()
    vbits = batch.version_bits.tolist()
    mask = batch.mask.tolist()
    targets = [int.from_bytes(row, "big") for row in _rows(batch.share_target.astype(">u4").tobytes(), 32, n)]
    digests = bytearray()
    for i in range(n):
        job = jobs[job_index[i]]
        en1 = en1_rows[i * w1 : i * w1 + l1[i]]
        en2 = en2_rows[i * w2 : i * w2 + l2[i]]
        verdict = check_share_scalar(job, en1, en2, ntime[i], nonce[i], vbits[i], mask[i], targets[i])
        digests += verdict.block_hash
        out_share[i] = verdict.meets_share
        out_net[i] = verdict.meets_network
    out_hash[:] = np.frombuffer(bytes(digests), dtype=np.uint8).reshape(n, 32)
    return BatchResult(out_hash, out_share, out_net)


def _rows(raw: bytes, width: int, n: int) -> list[bytes]:
    return [raw[i * width : (i + 1) * width] for i in range(n)]
