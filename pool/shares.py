"""Judging a share: rebuild the header the miner hashed and hash it.

This is the scalar hashlib reference; the vectorised checker must agree
with it bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratum.protocol import Share

from .bitcoin.serialize import hash_to_int, sha256d
from .jobs import Job


def version_with_rolling(job_version: int, bits: int, mask: int) -> int:
    return (job_version & ~mask & 0xFFFFFFFF) | (bits & mask)


@dataclass(frozen=True)
class Verdict:
    block_hash: bytes
    hash_value: int
    header: bytes


def judge_share(job: Job, share: Share) -> Verdict:
    """Scalar reference: rebuild the header the miner hashed and hash it."""
    version = version_with_rolling(job.version, share.version_bits, share.version_mask)
    header = job.header(share.extranonce1 + share.extranonce2, share.ntime, share.nonce, version)
    h = sha256d(header)
    return Verdict(h, hash_to_int(h), header)


