"""Batches of shares and their results, as NumPy arrays.

A batch is column-oriented (one array per submit field) because that is what
the compiled kernel consumes without per-share Python work; the scalar
fallback reads the same arrays so both backends see identical input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pool.bitcoin.serialize import hash_to_int

from .job import target_words

MAX_EXTRANONCE1 = 32
MAX_EXTRANONCE2 = 32  # Stratum sizes are 4..8 in practice; the kernel takes any width up to this


class Share(NamedTuple):
    """One submit in Python form; :meth:`ShareBatch.from_shares` packs a list of them."""

    job_index: int
    extranonce1: bytes
    extranonce2: bytes
    ntime: int
    nonce: int
    version_bits: int
    mask: int
    share_target: int


def _kernel_ready(arr: np.ndarray) -> np.ndarray:
    """C-contiguous and writeable.

    Numba compiles a separate specialisation for read-only or strided
    arrays; normalising here keeps every batch on the one signature that
    ``Checker.warm_up`` compiled, so no batch ever pays compile time.
    """
    if arr.flags.c_contiguous and arr.flags.writeable:
        return arr
    return np.array(arr, order="C", copy=True)


def _u32(values: Sequence[int] | np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype != np.uint32:
        if arr.size and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
            raise ValueError(f"{name} values must fit in 32 bits")
        arr = arr.astype(np.uint32)
    return _kernel_ready(arr)


def _lengths(lengths: np.ndarray | None, n: int, width: int, name: str) -> np.ndarray | None:
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > width):
        raise ValueError(f"{name} values must be within 0..{width}")
    return _kernel_ready(arr.astype(np.uint8))


@dataclass(frozen=True)
class ShareBatch:
    """Submits to check together, one row per share.

    Extranonces: ``extranonce1`` is ``uint8[n, W1]`` and ``extranonce2`` is
    ``uint8[n, W2]``. By default every share uses the full widths (the usual
    case: one pool-wide extranonce1 size and extranonce2 size). Shares of
    mixed sizes (e.g. 4-byte and 8-byte extranonce2 in one batch) set
    ``extranonce1_len`` / ``extranonce2_len`` (``uint8[n]``); the bytes are
    then the first ``len`` of each row. Any widths up to 32 bytes work; the
    coinbase layout is derived per job and per total extranonce length.

    ``share_target`` is ``uint32[n, 8]``, most significant word first (see
    :func:`pool.checker.job.target_words`); ``job_index`` indexes the job
    list passed with the batch. ``mask`` is the connection's negotiated
    version-rolling mask (0 when rolling is off).
    """

    job_index: np.ndarray
    extranonce1: np.ndarray
    extranonce2: np.ndarray
    ntime: np.ndarray
    nonce: np.ndarray
    version_bits: np.ndarray
    mask: np.ndarray
    share_target: np.ndarray
    extranonce1_len: np.ndarray | None = None
    extranonce2_len: np.ndarray | None = None

    def __post_init__(self) -> None:
        job_index = np.asarray(self.job_index)
        if job_index.ndim != 1:
            raise ValueError("job_index must be one-dimensional")
        n = job_index.shape[0]
        if job_index.dtype != np.int32:
            if n and (job_index.min() < 0 or job_index.max() > np.iinfo(np.int32).max):
                raise ValueError("job_index out of range")
            job_index = job_index.astype(np.int32)
        fields = {"job_index": _kernel_ready(job_index)}
        for name, limit in (("extranonce1", MAX_EXTRANONCE1), ("extranonce2", MAX_EXTRANONCE2)):
            arr = _kernel_ready(np.asarray(getattr(self, name), dtype=np.uint8))
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"{name} must have shape (n, width), got {arr.shape}")
            if arr.shape[1] > limit:
                raise ValueError(f"{name} wider than {limit} bytes")
            fields[name] = arr
        for name in ("ntime", "nonce", "version_bits", "mask"):
            fields[name] = _u32(getattr(self, name), n, name)
        target = np.asarray(self.share_target)
        if target.shape != (n, 8) or target.dtype.kind != "u" or target.dtype.itemsize != 4:
            raise ValueError("share_target must be uint32[n, 8] (most significant word first)")
        fields["share_target"] = _kernel_ready(target.astype(np.uint32, copy=False))
        fields["extranonce1_len"] = _lengths(self.extranonce1_len, n, fields["extranonce1"].shape[1], "extranonce1_len")
        fields["extranonce2_len"] = _lengths(self.extranonce2_len, n, fields["extranonce2"].shape[1], "extranonce2_len")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.job_index.shape[0])

    @property
    def uniform_extranonce(self) -> bool:
        """True when every share uses the full extranonce widths (one coinbase layout per job)."""
        return self.extranonce1_len is None and self.extranonce2_len is None

    def en1_lengths(self) -> np.ndarray:
        if self.extranonce1_len is not None:
            return self.extranonce1_len
        return np.full(len(self), self.extranonce1.shape[1], dtype=np.uint8)

    def en2_lengths(self) -> np.ndarray:
        if self.extranonce2_len is not None:
            return self.extranonce2_len
        return np.full(len(self), self.extranonce2.shape[1], dtype=np.uint8)

    def share(self, i: int) -> Share:
        """Row ``i`` back in Python form."""
        e1 = int(self.extranonce1_len[i]) if self.extranonce1_len is not None else self.extranonce1.shape[1]
        e2 = int(self.extranonce2_len[i]) if self.extranonce2_len is not None else self.extranonce2.shape[1]
        target = 0
        for word in self.share_target[i]:
            target = (target << 32) | int(word)
        return Share(
            job_index=int(self.job_index[i]),
            extranonce1=self.extranonce1[i, :e1].tobytes(),
            extranonce2=self.extranonce2[i, :e2].tobytes(),
            ntime=int(self.ntime[i]),
            nonce=int(self.nonce[i]),
            version_bits=int(self.version_bits[i]),
            mask=int(self.mask[i]),
            share_target=target,
        )

    @classmethod
    def from_shares(cls, shares: Iterable[Share]) -> ShareBatch:
        """Pack Python shares (see ``from_columns``)."""
        rows = list(shares)
        if not rows:
            return cls.from_columns([], [], [], [], [], [], [], [])
        return cls.from_columns(*zip(*rows))

    @classmethod
    def from_columns(
        cls,
        job_index: Sequence[int],
        extranonce1: Sequence[bytes],
        extranonce2: Sequence[bytes],
        ntime: Sequence[int],
        nonce: Sequence[int],
        version_bits: Sequence[int],
        mask: Sequence[int],
        share_target: Sequence[int],
    ) -> ShareBatch:
        """Pack shares given column by column (``Share``'s fields, in its order);
        per-share lengths are recorded only when sizes differ.

        The usual batch (every share with the same extranonce widths, a few
        distinct targets) is packed with one ``frombuffer`` per column rather
        than per-row NumPy calls: this runs on the event loop for every batch,
        and the validator hands its queue over as columns (one ``zip``).
        """
        n = len(job_index)
        l1 = list(map(len, extranonce1))
        l2 = list(map(len, extranonce2))
        w1 = max(l1, default=0)
        w2 = max(l2, default=0)
        uniform1 = all(x == w1 for x in l1)
        uniform2 = all(x == w2 for x in l2)
        words: dict[int, bytes] = {}
        target_rows = []
        for t in share_target:
            row = words.get(t)
            if row is None:
                row = words[t] = target_words(t).tobytes()
            target_rows.append(row)
        targets = np.frombuffer(b"".join(target_rows), dtype=np.uint32).reshape(n, 8).copy()
        return cls(
            job_index=np.array(job_index, dtype=np.int32),
            extranonce1=_pack(list(extranonce1), n, w1, uniform1),
            extranonce2=_pack(list(extranonce2), n, w2, uniform2),
            ntime=np.array(ntime, dtype=np.int64),
            nonce=np.array(nonce, dtype=np.int64),
            version_bits=np.array(version_bits, dtype=np.int64),
            mask=np.array(mask, dtype=np.int64),
            share_target=targets,
            extranonce1_len=None if uniform1 else np.array(l1, dtype=np.uint8),
            extranonce2_len=None if uniform2 else np.array(l2, dtype=np.uint8),
        )


def _pack(values: list[bytes], n: int, width: int, uniform: bool) -> np.ndarray:
    """Byte strings as a ``uint8[n, width]`` array, left-aligned and zero-padded."""
    if uniform:
        return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(n, width).copy()
    return np.frombuffer(b"".join(v.ljust(width, b"\0") for v in values), dtype=np.uint8).reshape(n, width).copy()


@dataclass(frozen=True)
class BatchResult:
    """Per-share outcome: the block hash (internal byte order) and the two verdicts.

    ``meets_network`` is reported whatever ``meets_share`` says: a share that
    is low for its worker can still solve a block (ckpool's rule), and the
    caller decides what to do with it.
    """

    block_hash: np.ndarray  # uint8[n, 32], internal order; display = reversed
    meets_share: np.ndarray  # bool[n]
    meets_network: np.ndarray  # bool[n]

    def __len__(self) -> int:
        return int(self.meets_share.shape[0])

    def hash_values(self) -> list[int]:
        """Every share's hash as the integer compared with targets (little-endian)."""
        raw = self.block_hash.tobytes()
        frombytes = int.from_bytes
        return [frombytes(raw[k : k + 32], "little") for k in range(0, len(raw), 32)]

    def hash_int(self, i: int) -> int:
        """The value compared with targets (little-endian integer of the hash)."""
        return hash_to_int(self.block_hash[i].tobytes())

    def display_hash(self, i: int) -> str:
        return self.block_hash[i, ::-1].tobytes().hex()

    def equals(self, other: BatchResult) -> bool:
        """Hash-for-hash, verdict-for-verdict equality (how the backends are tested)."""
        return (
            np.array_equal(self.block_hash, other.block_hash)
            and np.array_equal(self.meets_share, other.meets_share)
            and np.array_equal(self.meets_network, other.meets_network)
        )
