"""The coinbase transaction, split around the miner's extranonce.

Stratum sends the coinbase in two halves (coinb1, coinb2); the miner puts
extranonce1 + extranonce2 between them. Everything else about the coinbase
is fixed per job, so it is serialised once here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .merkle import witness_merkle_root
from .script import bip34_height_push
from .serialize import ser_compact_size, ser_u32, sha256d
from .tx import TxOut, ser_txout

WITNESS_RESERVED_VALUE = b"\x00" * 32
WITNESS_COMMITMENT_HEADER = b"\x6a\x24\xaa\x21\xa9\xed"
MIN_SCRIPT_SIG = 2
MAX_SCRIPT_SIG = 100
MAX_MONEY = 21_000_000 * 100_000_000  # Core consensus/amount.h: "bad-txns-vout-toolarge" above it


class CoinbaseError(ValueError):
    """A coinbase that consensus would refuse."""


@dataclass(frozen=True)
class CoinbaseTemplate:
    coinb1: bytes
    coinb2: bytes
    extranonce_size: int
    has_witness_commitment: bool

    def assemble(self, extranonce: bytes) -> bytes:
        """Non-witness serialisation: what the txid and the merkle root hash."""
        if len(extranonce) != self.extranonce_size:
            raise CoinbaseError(
                f"extranonce is {len(extranonce)} bytes, the template reserves {self.extranonce_size}"
            )
        return self.coinb1 + extranonce + self.coinb2

    def txid(self, extranonce: bytes) -> bytes:
        return sha256d(self.assemble(extranonce))

    def assemble_for_block(self, extranonce: bytes) -> bytes:
        """Serialisation for submitblock: with the witness reserved value when committed."""
        plain = self.assemble(extranonce)
        if not self.has_witness_commitment:
            return plain
        return plain[:4] + b"\x00\x01" + plain[4:-4] + b"\x01\x20" + WITNESS_RESERVED_VALUE + plain[-4:]


def witness_commitment_script(commitment: bytes) -> bytes:
    """BIP141 commitment output script for a 32-byte commitment hash."""
    if len(commitment) != 32:
        raise ValueError("a witness commitment is 32 bytes")
    return WITNESS_COMMITMENT_HEADER + commitment


def witness_commitment(witness_root: bytes, reserved: bytes = WITNESS_RESERVED_VALUE) -> bytes:
    """BIP141 commitment hash: sha256d(witness merkle root || witness reserved value).

    The reserved value is the coinbase's single witness item, which is why
    ``assemble_for_block`` writes the same 32 zero bytes there.
    """
    if len(witness_root) != 32 or len(reserved) != 32:
        raise ValueError("witness root and reserved value are 32 bytes each")
    return sha256d(witness_root + reserved)


def commitment_script_for_wtxids(wtxids: Sequence[bytes]) -> bytes:
    """Commitment output script for a template's non-coinbase wtxids (internal order).

    Equals GBT's ``default_witness_commitment`` for the same transaction set;
    recompute it whenever the pool changes that set.
    """
    return witness_commitment_script(witness_commitment(witness_merkle_root(wtxids)))


def witness_commitment_index(outputs: Sequence[TxOut]) -> int | None:
    """Index of the output consensus reads the commitment from, or None.

    Bitcoin Core's ``GetWitnessCommitmentIndex``: the LAST output whose script
    is at least 38 bytes and starts ``6a24aa21a9ed``.
    """
    found = None
    for index, out in enumerate(outputs):
        script = out.script_pubkey
        if len(script) >= 38 and script[:6] == WITNESS_COMMITMENT_HEADER:
            found = index
    return found


def script_sig_prefix(height: int, tag: bytes, aux: bytes = b"") -> bytes:
    """scriptSig bytes before the extranonce: BIP34 height, node aux flags, pool tag."""
    return bip34_height_push(height) + aux + tag


def check_script_sig_length(prefix_len: int, extranonce_size: int, suffix_len: int = 0) -> None:
    total = prefix_len + extranonce_size + suffix_len
    if not MIN_SCRIPT_SIG <= total <= MAX_SCRIPT_SIG:
        raise CoinbaseError(
            f"coinbase scriptSig would be {total} bytes; consensus allows {MIN_SCRIPT_SIG}..{MAX_SCRIPT_SIG}"
        )


def build_coinbase(
    *,
    height: int,
    outputs: Sequence[TxOut],
    extranonce_size: int,
    tag: bytes = b"",
    aux: bytes = b"",
    witness_commitment_script: bytes | None = None,
    version: int = 2,
    sequence: int = 0xFFFFFFFF,
    locktime: int = 0,
) -> CoinbaseTemplate:
    """Serialise a coinbase paying ``outputs`` and split it around the extranonce.

    The witness commitment output, when given, is appended last (the one
    Bitcoin Core's ``GetWitnessCommitmentIndex`` finds).
    """
    if extranonce_size < 0:
        raise CoinbaseError("extranonce size cannot be negative")
    prefix = script_sig_prefix(height, tag, aux)
    check_script_sig_length(len(prefix), extranonce_size)
    all_outputs = list(outputs)
    if witness_commitment_script is not None:
        all_outputs.append(TxOut(0, witness_commitment_script))
    if not all_outputs:
        raise CoinbaseError("a coinbase needs at least one output (bad-txns-vout-empty)")
    for out in all_outputs:
        if not 0 <= out.value <= MAX_MONEY:
            raise CoinbaseError(f"output value {out.value} is outside 0..{MAX_MONEY} sat")
    script_len = len(prefix) + extranonce_size
    coinb1 = (
        ser_u32(version)
        + ser_compact_size(1)
        + b"\x00" * 32
        + ser_u32(0xFFFFFFFF)
        + ser_compact_size(script_len)
        + prefix
    )
    coinb2 = (
        ser_u32(sequence)
        + ser_compact_size(len(all_outputs))
        + b"".join(ser_txout(o) for o in all_outputs)
        + ser_u32(locktime)
    )
    return CoinbaseTemplate(coinb1, coinb2, extranonce_size, witness_commitment_script is not None)
