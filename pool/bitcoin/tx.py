"""Transactions: the subset of the format a pool and a devnet need."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .serialize import (
    deser_compact_size,
    ser_compact_size,
    ser_string,
    ser_u32,
    ser_u64,
    sha256d,
)


@dataclass(frozen=True)
class TxIn:
    """One input; ``witness`` is its stack (empty for legacy spends)."""

    prev_txid: bytes  # internal order
    prev_index: int
    script_sig: bytes
    sequence: int
    witness: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class TxOut:
    """One output: value in satoshis and the scriptPubKey it pays."""

    value: int
    script_pubkey: bytes


@dataclass(frozen=True)
class Tx:
    """A transaction; ``raw_size`` records the parsed length and is not compared."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int
    raw_size: int = field(default=0, compare=False)

    @property
    def has_witness(self) -> bool:
        return any(i.witness for i in self.inputs)

    def serialize(self, with_witness: bool = True) -> bytes:
        return ser_tx(self, with_witness=with_witness)

    @property
    def txid(self) -> bytes:
        return sha256d(ser_tx(self, with_witness=False))

    @property
    def wtxid(self) -> bytes:
        return sha256d(ser_tx(self, with_witness=True))

    @property
    def is_coinbase(self) -> bool:
        return (
            len(self.inputs) == 1
            and self.inputs[0].prev_txid == b"\x00" * 32
            and self.inputs[0].prev_index == 0xFFFFFFFF
        )


def ser_txout(out: TxOut) -> bytes:
    return ser_u64(out.value) + ser_string(out.script_pubkey)


def ser_txin(txin: TxIn) -> bytes:
    return txin.prev_txid + ser_u32(txin.prev_index) + ser_string(txin.script_sig) + ser_u32(txin.sequence)


def ser_tx(tx: Tx, with_witness: bool = True) -> bytes:
    """BIP144 serialisation; the witness form only when asked and some input has one.

    The txid (and the block merkle tree) hash the non-witness form; blocks and
    the wtxid use the witness form.
    """
    witness = with_witness and tx.has_witness
    parts = [struct.pack("<i", tx.version)]
    if witness:
        parts.append(b"\x00\x01")
    parts.append(ser_compact_size(len(tx.inputs)))
    parts.extend(ser_txin(i) for i in tx.inputs)
    parts.append(ser_compact_size(len(tx.outputs)))
    parts.extend(ser_txout(o) for o in tx.outputs)
    if witness:
        for txin in tx.inputs:
            parts.append(ser_compact_size(len(txin.witness)))
            parts.extend(ser_string(item) for item in txin.witness)
    parts.append(ser_u32(tx.locktime))
    return b"".join(parts)


def _take(buf: bytes, pos: int, n: int) -> bytes:
    """``n`` bytes at ``pos``, refusing to run past the end (slices would truncate silently)."""
    if n < 0 or pos + n > len(buf):
        raise ValueError("transaction runs past the end of the buffer")
    return bytes(buf[pos : pos + n])


def deser_tx(buf: bytes, pos: int = 0) -> tuple[Tx, int]:
    """Parse one transaction at ``pos``; return it and the position after it.

    Malformed input raises ``ValueError`` (truncation, an unknown segwit flag,
    or a witness marker with no witness data, which Core refuses as
    "Superfluous witness record"), so what parses always re-serialises to the
    same bytes.
    """
    start = pos
    (version,) = struct.unpack("<i", _take(buf, pos, 4))
    pos += 4
    marker = _take(buf, pos, 2)
    segwit = marker[0] == 0
    if segwit:
        if marker[1] != 1:
            raise ValueError(f"unknown transaction flag {marker[1]:#04x} after a zero marker")
        pos += 2
    n_in, pos = deser_compact_size(buf, pos)
    raw_inputs = []
    for _ in range(n_in):
        prev = _take(buf, pos, 32)
        (index,) = struct.unpack("<I", _take(buf, pos + 32, 4))
        pos += 36
        slen, pos = deser_compact_size(buf, pos)
        script = _take(buf, pos, slen)
        pos += slen
        (seq,) = struct.unpack("<I", _take(buf, pos, 4))
        pos += 4
        raw_inputs.append((prev, index, script, seq))
    n_out, pos = deser_compact_size(buf, pos)
    outputs = []
    for _ in range(n_out):
        (value,) = struct.unpack("<Q", _take(buf, pos, 8))
        pos += 8
        slen, pos = deser_compact_size(buf, pos)
        outputs.append(TxOut(value, _take(buf, pos, slen)))
        pos += slen
    witnesses: list[tuple[bytes, ...]] = [()] * n_in
    if segwit:
        for i in range(n_in):
            n_items, pos = deser_compact_size(buf, pos)
            items = []
            for _ in range(n_items):
                ilen, pos = deser_compact_size(buf, pos)
                items.append(_take(buf, pos, ilen))
                pos += ilen
            witnesses[i] = tuple(items)
        if not any(witnesses):
            raise ValueError("superfluous witness record: segwit marker but no witness data")
    (locktime,) = struct.unpack("<I", _take(buf, pos, 4))
    pos += 4
    inputs = tuple(TxIn(p, ix, s, q, w) for (p, ix, s, q), w in zip(raw_inputs, witnesses))
    return Tx(version, inputs, tuple(outputs), locktime, raw_size=pos - start), pos
