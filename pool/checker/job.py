"""A job prepared once for share checking.

Every share of a job repeats the same work around its few variable bytes:
the coinbase prefix, the merkle branch, the previous-block hash and the
network target never change. :class:`CheckerJob` does that work when the job
is created (one `mining.notify`), so the per-share path only hashes what the
miner actually chose.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pool.bitcoin.target import bits_to_target

from .sha256 import BLOCK, midstate, padding

U32 = 0xFFFFFFFF
_HEX = frozenset("0123456789abcdefABCDEF")


def target_words(target: int) -> np.ndarray:
    """A 256-bit target as 8 uint32 words, most significant first.

    Comparing two such rows word by word (lexicographically) is the same as
    comparing the integers, which is how the kernel compares a hash with a
    target without big-integer arithmetic.
    """
    if not 0 <= target < 1 << 256:
        raise ValueError("a target is a 256-bit unsigned integer")
    return np.array([(target >> (32 * (7 - i))) & U32 for i in range(8)], dtype=np.uint32)


def words_to_target(words: np.ndarray | Sequence[int]) -> int:
    """Inverse of :func:`target_words`."""
    value = 0
    for w in words:
        value = (value << 32) | int(w)
    return value


def notify_prevhash_to_internal(prevhash_hex: str) -> bytes:
    """`mining.notify` prevhash (each 4-byte word byte-swapped) to header byte order."""
    raw = bytes.fromhex(prevhash_hex)
    if len(raw) != 32:
        raise ValueError(f"prevhash must be 32 bytes, got {len(raw)}")
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 32, 4))


def internal_to_notify_prevhash(prevhash: bytes) -> str:
    """Header-order prevhash to the word-swapped hex `mining.notify` sends."""
    if len(prevhash) != 32:
        raise ValueError("prevhash must be 32 bytes")
    return b"".join(prevhash[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


@dataclass(frozen=True)
class CoinbaseTail:
    """The hashed coinbase after the job's midstate, for one extranonce length.

    ``words`` is the rest of coinb1, ``extranonce_len`` zero bytes where
    extranonce1 + extranonce2 go, coinb2 and the SHA-256 padding, as
    big-endian message words. A share only has to overwrite its extranonce
    bytes at ``extranonce_offset`` before hashing ``nblocks`` blocks from the
    job's midstate.
    """

    extranonce_len: int
    coinbase_len: int
    words: np.ndarray  # uint32[nblocks * 16]
    nblocks: int
    extranonce_offset: int


class CheckerJob:
    """One job's fixed inputs, with everything derivable from them precomputed.

    Built once per job (not per share) from the notify fields in binary form.
    Treat instances as immutable: the checker caches packed tables keyed on
    job identity. Extranonce lengths are not part of the job: the coinbase
    tail for a given total extranonce length is laid out on first use and
    cached (one or two lengths per pool in practice).
    """

    __slots__ = (
        "coinb1",
        "coinb2",
        "merkle_branch",
        "version",
        "prevhash",
        "nbits",
        "network_target",
        "network_target_words",
        "branch_words",
        "prevhash_words",
        "midstate",
        "midstate_len",
        "job_id",
        "_tails",
    )

    def __init__(
        self,
        coinb1: bytes,
        coinb2: bytes,
        merkle_branch: Sequence[bytes],
        version: int,
        prevhash: bytes,
        nbits: int,
        *,
        job_id: str | None = None,
    ) -> None:
        """``merkle_branch`` and ``prevhash`` are in internal (header) byte order."""
        branch = tuple(bytes(h) for h in merkle_branch)
        if any(len(h) != 32 for h in branch):
            raise ValueError("every merkle branch hash is 32 bytes")
        if len(prevhash) != 32:
            raise ValueError("prevhash is 32 bytes")
        if not 0 <= version <= U32 or not 0 <= nbits <= U32:
            raise ValueError("version and nbits are 32-bit unsigned")
        self.coinb1 = bytes(coinb1)
        self.coinb2 = bytes(coinb2)
        self.merkle_branch = branch
        self.version = version
        self.prevhash = bytes(prevhash)
        self.nbits = nbits
        self.job_id = job_id
        # Raises CompactTargetError for nBits consensus would refuse: such a
        # job is a bug upstream and must not reach miners.
        self.network_target = bits_to_target(nbits)
        self.network_target_words = target_words(self.network_target)
        self.branch_words = np.frombuffer(b"".join(branch), dtype=">u4").astype(np.uint32).reshape(len(branch), 8)
        self.prevhash_words = np.frombuffer(self.prevhash, dtype=">u4").astype(np.uint32)
        state, covered = midstate(self.coinb1)
        self.midstate = np.array(state, dtype=np.uint32)
        self.midstate_len = covered
        self._tails: dict[int, CoinbaseTail] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_tails"):
            raise AttributeError("CheckerJob is immutable once built")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return (
            f"CheckerJob(job_id={self.job_id!r}, coinbase={len(self.coinb1)}+en+{len(self.coinb2)} bytes, "
            f"branch={len(self.merkle_branch)}, version={self.version:08x}, nbits={self.nbits:08x})"
        )

    @property
    def branch_len(self) -> int:
        return len(self.merkle_branch)

    def coinbase(self, extranonce1: bytes, extranonce2: bytes) -> bytes:
        """The non-witness coinbase a share hashes (stratum-reference §4 step 1)."""
        return self.coinb1 + extranonce1 + extranonce2 + self.coinb2

    def rolled_version(self, version_bits: int, mask: int) -> int:
        """BIP310 version rolling: ``(v & ~mask) | (vb & mask)``.

        Bits of ``version_bits`` outside ``mask`` are ignored here; refusing
        such a submit is the protocol layer's job (error 20).
        """
        return ((self.version & ~mask) | (version_bits & mask)) & U32

    def tail(self, extranonce_len: int) -> CoinbaseTail:
        """Padded coinbase tail for shares whose extranonce1+extranonce2 is ``extranonce_len`` bytes."""
        cached = self._tails.get(extranonce_len)
        if cached is not None:
            return cached
        if not 0 <= extranonce_len <= 255:
            raise ValueError("extranonce length out of range")
        total = len(self.coinb1) + extranonce_len + len(self.coinb2)
        head = self.coinb1[self.midstate_len :]
        raw = head + b"\x00" * extranonce_len + self.coinb2 + padding(total)
        assert len(raw) % BLOCK == 0
        words = np.frombuffer(raw, dtype=">u4").astype(np.uint32)
        made = CoinbaseTail(
            extranonce_len=extranonce_len,
            coinbase_len=total,
            words=words,
            nblocks=len(raw) // BLOCK,
            extranonce_offset=len(head),
        )
        self._tails[extranonce_len] = made
        return made

    @classmethod
    def from_notify_params(cls, params: Sequence[Any]) -> CheckerJob:
        """Build from `mining.notify` params exactly as sent on the wire (stratum-reference §3)."""
        if len(params) < 8:
            raise ValueError(f"mining.notify has 9 params, got {len(params)}")
        job_id, prevhash, coinb1, coinb2, branch, version, nbits = params[:7]
        if not isinstance(branch, list):
            raise ValueError("merkle_branch must be a list of hex hashes")
        return cls(
            coinb1=bytes.fromhex(coinb1),
            coinb2=bytes.fromhex(coinb2),
            merkle_branch=[bytes.fromhex(h) for h in branch],
            version=parse_hex_u32(version, "version"),
            prevhash=notify_prevhash_to_internal(prevhash),
            nbits=parse_hex_u32(nbits, "nbits"),
            job_id=str(job_id),
        )

    @classmethod
    def from_notify_line(cls, line: str | bytes) -> CheckerJob:
        """Build from one `mining.notify` JSON line."""
        msg = json.loads(line)
        if msg.get("method") != "mining.notify":
            raise ValueError(f"not a mining.notify line: method {msg.get('method')!r}")
        return cls.from_notify_params(msg["params"])


def parse_hex_u32(value: str, name: str) -> int:
    """An 8-hex-digit big-endian 32-bit wire field (version, nbits, ntime, nonce, version bits)."""
    if not isinstance(value, str) or len(value) != 8 or not all(c in _HEX for c in value):
        raise ValueError(f"{name} must be 8 hex digits, got {value!r}")
    return int(value, 16)
