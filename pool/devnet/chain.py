"""Chain state and block validation for the devnet (no sockets here)."""

from __future__ import annotations

import hashlib
import struct
import statistics
import time as _time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from ..bitcoin.block import Block, BlockHeader, deser_block
from ..bitcoin.coinbase import MAX_SCRIPT_SIG, MIN_SCRIPT_SIG, WITNESS_RESERVED_VALUE
from ..bitcoin.merkle import merkle_root
from ..bitcoin.script import bip34_height_push
from ..bitcoin.serialize import internal_to_display, sha256d
from ..bitcoin.target import CompactTargetError, bits_to_target, difficulty_to_target, target_to_bits
from ..bitcoin.tx import Tx, TxIn, TxOut

REGTEST_POW_LIMIT = (1 << 255) - 1
HALVING_INTERVAL = 150  # regtest
COIN = 100_000_000
MAX_FUTURE_BLOCK_TIME = 7200
WITNESS_COMMITMENT_HEADER = b"\x6a\x24\xaa\x21\xa9\xed"


class RPCError(Exception):
    """An error bitcoind would answer with a JSON-RPC error object."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def block_subsidy(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


@dataclass
class MempoolTx:
    tx: Tx
    fee: int

    def template_entry(self) -> dict[str, Any]:
        return {
            "data": self.tx.serialize().hex(),
            "txid": internal_to_display(self.tx.txid),
            "hash": internal_to_display(self.tx.wtxid),
            "depends": [],
            "fee": self.fee,
            "sigops": 4,
            "weight": 3 * len(self.tx.serialize(False)) + len(self.tx.serialize()),
        }


@dataclass
class StoredBlock:
    block: Block
    height: int
    hash: bytes
    raw_size: int


def witness_commitment_for(txs: list[Tx]) -> bytes:
    """BIP141: sha256d(witness merkle root || reserved value); coinbase leaf is zero."""
    leaves = [b"\x00" * 32] + [tx.wtxid for tx in txs]
    return sha256d(merkle_root(leaves) + WITNESS_RESERVED_VALUE)


@dataclass
class DevnetChain:
    """A regtest-like chain with a fixed difficulty and a synthetic mempool."""

    difficulty: Fraction = Fraction(1)
    synthetic_txs: int = 3
    clock: Callable[[], float] = _time.time
    blocks: dict[bytes, StoredBlock] = field(default_factory=dict)
    active: list[bytes] = field(default_factory=list)
    mempool: list[MempoolTx] = field(default_factory=list)
    invalid: set[bytes] = field(default_factory=set)
    _tx_counter: int = 0
    on_new_tip: list[Callable[[bytes, int], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.target = bits_to_target(target_to_bits(min(difficulty_to_target(self.difficulty), REGTEST_POW_LIMIT)))
        self.bits = target_to_bits(self.target)
        self._make_genesis()
        self._refill_mempool()

    # --- chain -----------------------------------------------------------
    def _make_genesis(self) -> None:
        cb = Tx(1, (TxIn(b"\x00" * 32, 0xFFFFFFFF, b"\x04stope-devnet-genesis", 0xFFFFFFFF),),
                (TxOut(50 * COIN, b"\x51"),), 0)
        header = BlockHeader(1, b"\x00" * 32, cb.txid, int(self.clock()) - 3600, self.bits, 0)
        block = Block(header, (cb,))
        h = header.hash
        self.blocks[h] = StoredBlock(block, 0, h, len(block.serialize()))
        self.active.append(h)

    @property
    def tip(self) -> StoredBlock:
        return self.blocks[self.active[-1]]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def median_time_past(self) -> int:
        times = [self.blocks[h].block.header.time for h in self.active[-11:]]
        return int(statistics.median_low(sorted(times)))

    def _refill_mempool(self) -> None:
        while len(self.mempool) < self.synthetic_txs:
            self._tx_counter += 1
            n = self._tx_counter
            seed = hashlib.sha256(f"stope-devnet-tx-{n}".encode()).digest()
            # Every other synthetic transaction carries a witness, so the
            # witness commitment differs from the txid tree.
            witness = (seed[:16],) if n % 2 == 0 else ()
            tx = Tx(
                2,
                (TxIn(seed, n & 0xFF, b"" if witness else b"\x51", 0xFFFFFFFD, witness),),
                (TxOut(10_000 + n, b"\x00\x14" + seed[12:32]),),
                0,
            )
            self.mempool.append(MempoolTx(tx, fee=1_000 + n))

    # --- RPC-facing views -------------------------------------------------
    def block_template(self) -> dict[str, Any]:
        tip = self.tip
        height = self.height + 1
        mintime = self.median_time_past() + 1
        curtime = max(int(self.clock()), mintime)
        txs = [m.tx for m in self.mempool]
        fees = sum(m.fee for m in self.mempool)
        commitment = witness_commitment_for(txs)
        return {
            "capabilities": ["proposal"],
            "version": 0x20000000,
            "rules": ["csv", "!segwit", "taproot"],
            "vbavailable": {},
            "vbrequired": 0,
            "previousblockhash": internal_to_display(tip.hash),
            "transactions": [m.template_entry() for m in self.mempool],
            "coinbaseaux": {},
            "coinbasevalue": block_subsidy(height) + fees,
            "longpollid": internal_to_display(tip.hash) + str(len(self.mempool)),
            "target": f"{self.target:064x}",
            "mintime": mintime,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
            "curtime": curtime,
            "bits": f"{self.bits:08x}",
            "height": height,
            "default_witness_commitment": (WITNESS_COMMITMENT_HEADER + commitment).hex(),
        }

    def network_difficulty(self) -> float:
        return float(Fraction(0xFFFF << 208, self.target))

    # --- validation --------------------------------------------------------
    def submit_block(self, raw: bytes) -> str | None:
        """Validate and connect; return bitcoind's BIP22 result string or None."""
        try:
            block = deser_block(raw)
        except (ValueError, IndexError, struct.error) as exc:
            raise RPCError(-22, "Block decode failed") from exc
        header = block.header
        h = header.hash
        if h in self.blocks:
            return "duplicate"
        if h in self.invalid:
            return "duplicate-invalid"
        reason = self._check_block(block)
        if reason is not None:
            if reason not in ("high-hash", "prev-blk-not-found", "inconclusive"):
                self.invalid.add(h)
            return reason
        self._connect(block, h, len(raw))
        return None

    def _check_block(self, block: Block) -> str | None:
        header = block.header
        try:
            claimed = bits_to_target(header.bits, REGTEST_POW_LIMIT)
        except CompactTargetError:
            return "high-hash"
        if header.hash_int > claimed:
            return "high-hash"
        if header.prev_hash not in self.blocks:
            return "prev-blk-not-found"
        if header.prev_hash != self.active[-1]:
            return "inconclusive"
        if header.bits != self.bits:
            return "bad-diffbits"
        if not block.txs or not block.txs[0].is_coinbase:
            return "bad-cb-missing"
        if merkle_root([tx.txid for tx in block.txs]) != header.merkle_root:
            return "bad-txnmrklroot"
        if len({tx.txid for tx in block.txs}) != len(block.txs):
            return "bad-txns-duplicate"
        if header.time <= self.median_time_past():
            return "time-too-old"
        if header.time > int(self.clock()) + MAX_FUTURE_BLOCK_TIME:
            return "time-too-new"
        coinbase = block.txs[0]
        script_sig = coinbase.inputs[0].script_sig
        if not MIN_SCRIPT_SIG <= len(script_sig) <= MAX_SCRIPT_SIG:
            return "bad-cb-length"
        height = self.height + 1
        if not script_sig.startswith(bip34_height_push(height)):
            return "bad-cb-height"
        if any(tx.is_coinbase for tx in block.txs[1:]):
            return "bad-cb-multiple"
        known = {m.tx.txid: m for m in self.mempool}
        fees = 0
        for tx in block.txs[1:]:
            entry = known.get(tx.txid)
            if entry is None:
                return "bad-txns-inputs-missingorspent"
            fees += entry.fee
        if sum(o.value for o in coinbase.outputs) > block_subsidy(height) + fees:
            return "bad-cb-amount"
        return self._check_witness(block)

    @staticmethod
    def _check_witness(block: Block) -> str | None:
        coinbase = block.txs[0]
        commit_index = None
        for i, out in enumerate(coinbase.outputs):
            if len(out.script_pubkey) >= 38 and out.script_pubkey[:6] == WITNESS_COMMITMENT_HEADER:
                commit_index = i  # the last match counts
        if commit_index is None:
            if any(tx.has_witness for tx in block.txs):
                return "unexpected-witness"
            return None
        witness = coinbase.inputs[0].witness
        if len(witness) != 1 or len(witness[0]) != 32:
            return "bad-witness-nonce-size"
        leaves = [b"\x00" * 32] + [tx.wtxid for tx in block.txs[1:]]
        expected = sha256d(merkle_root(leaves) + witness[0])
        if coinbase.outputs[commit_index].script_pubkey[6:38] != expected:
            return "bad-witness-merkle-match"
        return None

    def _connect(self, block: Block, h: bytes, size: int) -> None:
        height = self.height + 1
        self.blocks[h] = StoredBlock(block, height, h, size)
        self.active.append(h)
        included = {tx.txid for tx in block.txs[1:]}
        self.mempool = [m for m in self.mempool if m.tx.txid not in included]
        self._refill_mempool()
        for callback in self.on_new_tip:
            callback(h, height)

    def add_synthetic_transaction(self) -> None:
        """New mempool entry without a new block (template refresh without clean_jobs)."""
        self.synthetic_txs += 1
        self._refill_mempool()

    def lookup(self, display_hash: str) -> StoredBlock:
        try:
            raw = bytes.fromhex(display_hash)[::-1]
        except ValueError as exc:
            raise RPCError(-8, "blockhash must be hexadecimal string") from exc
        stored = self.blocks.get(raw)
        if stored is None:
            raise RPCError(-5, "Block not found")
        return stored

    def confirmations(self, stored: StoredBlock) -> int:
        if stored.height < len(self.active) and self.active[stored.height] == stored.hash:
            return self.height - stored.height + 1
        return -1
