"""Block headers and whole blocks."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .serialize import deser_compact_size, hash_to_int, ser_compact_size, sha256d
from .tx import Tx, deser_tx


@dataclass(frozen=True)
class BlockHeader:
    version: int
    prev_hash: bytes  # internal order
    merkle_root: bytes  # internal order
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return ser_header(self.version, self.prev_hash, self.merkle_root, self.time, self.bits, self.nonce)

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())

    @property
    def hash_int(self) -> int:
        return hash_to_int(self.hash)


def ser_header(version: int, prev_hash: bytes, merkle_root: bytes, time: int, bits: int, nonce: int) -> bytes:
    """The 80-byte header; hashes are internal order, integers little-endian.

    A hash of the wrong length would shift every later field and still
    produce bytes that hash, so it is refused here.
    """
    if len(prev_hash) != 32 or len(merkle_root) != 32:
        raise ValueError("prev_hash and merkle_root must be 32 bytes (internal order)")
    return (
        struct.pack("<I", version & 0xFFFFFFFF)
        + prev_hash
        + merkle_root
        + struct.pack("<III", time, bits, nonce)
    )


def deser_header(raw: bytes) -> BlockHeader:
    """Parse the first 80 bytes of ``raw`` (version read unsigned, as Stratum sends it)."""
    if len(raw) < 80:
        raise ValueError("a header is 80 bytes")
    version, = struct.unpack_from("<I", raw, 0)
    time, bits, nonce = struct.unpack_from("<III", raw, 68)
    return BlockHeader(version, bytes(raw[4:36]), bytes(raw[36:68]), time, bits, nonce)


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...]

    def serialize(self) -> bytes:
        return ser_block(self.header.serialize(), [tx.serialize() for tx in self.txs])


def ser_block(header: bytes, raw_txs: list[bytes]) -> bytes:
    """Block bytes for submitblock: header, tx count, transactions as given."""
    return header + ser_compact_size(len(raw_txs)) + b"".join(raw_txs)


def deser_block(raw: bytes) -> Block:
    """Parse a whole block, refusing truncation and trailing bytes."""
    header = deser_header(raw[:80])
    count, pos = deser_compact_size(raw, 80)
    txs = []
    for _ in range(count):
        tx, pos = deser_tx(raw, pos)
        txs.append(tx)
    if pos != len(raw):
        raise ValueError(f"{len(raw) - pos} trailing bytes after the last transaction")
    return Block(header, tuple(txs))


class VersionRollingError(ValueError):
    """Submitted version bits outside the negotiated mask (BIP310)."""


def apply_version_rolling(version: int, bits: int, mask: int) -> int:
    """Header nVersion for a share: ``(version & ~mask) | (bits & mask)`` (BIP310).

    Bits outside the mask are refused rather than silently dropped, OR-ed in
    (ckpool) or XOR-ed in (public-pool): those shortcuts agree with BIP310 only
    when the job version has no bits inside the mask. All values are unsigned
    32-bit, as the hex strings of ``mining.notify``/``mining.submit`` carry them.
    """
    for name, value in (("version", version), ("version bits", bits), ("mask", mask)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise VersionRollingError(f"{name} {value:#x} is not a 32-bit unsigned value")
    if bits & ~mask & 0xFFFFFFFF:
        raise VersionRollingError(f"version bits {bits:08x} set bits outside mask {mask:08x}")
    return (version & ~mask & 0xFFFFFFFF) | (bits & mask)
