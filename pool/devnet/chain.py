"""Chain state and block validation for the devnet (no sockets here).

The checks follow Bitcoin Core's order (``CheckBlockHeader``,
``ContextualCheckBlockHeader``, ``CheckBlock``, ``ContextualCheckBlock``,
``ConnectBlock``) and return Core's BIP22 reason strings, so a pool bug shows
up here with the same words it would get from a real node. The checks are an
independent implementation (the pool's own helpers are not reused for the
verdicts), so the devnet is a second opinion rather than an echo.

Deliberate differences from Core, all on the strict side or out of a pool's
reach:

* No ``UpdateUncommittedBlockStructures``: Core's ``submitblock`` quietly adds
  the 32-byte witness reserved value to a coinbase that lacks it; the devnet
  refuses such a block (``bad-witness-nonce-size``) so the pool must send it.
* Transactions come from a synthetic mempool: a block may only contain those
  (otherwise ``bad-txns-inputs-missingorspent``); scripts are not executed.
* Blocks that arrive through a re-organisation skip ``ConnectBlock``.
"""

from __future__ import annotations

import hashlib
import statistics
import struct
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..bitcoin.block import Block, BlockHeader, deser_block
from ..bitcoin.coinbase import MAX_SCRIPT_SIG, MIN_SCRIPT_SIG, WITNESS_RESERVED_VALUE
from ..bitcoin.merkle import merkle_root
from ..bitcoin.script import bip34_height_push
from ..bitcoin.serialize import internal_to_display, ser_compact_size, sha256d
from ..bitcoin.target import (
    CompactTargetError,
    bits_to_target,
    difficulty_to_target,
    target_to_bits,
)
from ..bitcoin.tx import Tx, TxIn, TxOut

REGTEST_POW_LIMIT = (1 << 255) - 1
HALVING_INTERVAL = 150  # regtest
COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN
MAX_FUTURE_BLOCK_TIME = 7200
MAX_BLOCK_WEIGHT = 4_000_000
MAX_BLOCK_SIGOPS_COST = 80_000
WITNESS_SCALE_FACTOR = 4
LOCKTIME_THRESHOLD = 500_000_000
SEQUENCE_FINAL = 0xFFFFFFFF
WITNESS_COMMITMENT_HEADER = b"\x6a\x24\xaa\x21\xa9\xed"

# Failures Core does not remember as invalid: the header may still be good
# with other transactions (BLOCK_MUTATED), or the block may become valid later.
_NOT_CACHED = {
    "high-hash",
    "prev-blk-not-found",
    "bad-diffbits",
    "time-too-old",
    "time-too-new",
    "bad-txnmrklroot",
    "bad-txns-duplicate",
    "bad-witness-nonce-size",
    "bad-witness-merkle-match",
    "unexpected-witness",
}


class RPCError(Exception):
    """An error bitcoind would answer with a JSON-RPC error object."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def block_subsidy(height: int) -> int:
    halvings = height // HALVING_INTERVAL
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


def legacy_sigop_count(script: bytes) -> int:
    """Core's ``CScript::GetSigOpCount(false)``: multisig counts 20, a bad push ends the count."""
    count = 0
    i = 0
    n = len(script)
    while i < n:
        op = script[i]
        i += 1
        if op <= 0x4E:
            if op < 0x4C:
                size = op
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
                if i + width > n:
                    break
                size = int.from_bytes(script[i : i + width], "little")
                i += width
            if i + size > n:
                break
            i += size
        elif op in (0xAC, 0xAD):  # OP_CHECKSIG, OP_CHECKSIGVERIFY
            count += 1
        elif op in (0xAE, 0xAF):  # OP_CHECKMULTISIG(VERIFY), inaccurate mode
            count += 20
    return count


def tx_legacy_sigops(tx: Tx) -> int:
    return sum(legacy_sigop_count(i.script_sig) for i in tx.inputs) + sum(
        legacy_sigop_count(o.script_pubkey) for o in tx.outputs
    )


def is_final_tx(tx: Tx, height: int, time_cutoff: int) -> bool:
    """Core's ``IsFinalTx`` (the cutoff is the parent's median time past, BIP113)."""
    if tx.locktime == 0:
        return True
    threshold = height if tx.locktime < LOCKTIME_THRESHOLD else time_cutoff
    if tx.locktime < threshold:
        return True
    return all(i.sequence == SEQUENCE_FINAL for i in tx.inputs)


@dataclass
class MempoolTx:
    tx: Tx
    fee: int
    serial: int = 0

    def template_entry(self) -> dict[str, Any]:
        return {
            "data": self.tx.serialize().hex(),
            "txid": internal_to_display(self.tx.txid),
            "hash": internal_to_display(self.tx.wtxid),
            "depends": [],
            "fee": self.fee,
            "sigops": tx_legacy_sigops(self.tx) * WITNESS_SCALE_FACTOR,
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


def synthetic_tx(serial: int) -> MempoolTx:
    """The ``serial``-th synthetic mempool transaction (the same on every peer).

    Every other one carries a witness, so the witness commitment differs from
    the txid tree.
    """
    seed = hashlib.sha256(f"stope-devnet-tx-{serial}".encode()).digest()
    witness = (seed[:16],) if serial % 2 == 0 else ()
    tx = Tx(
        2,
        (TxIn(seed, serial & 0xFF, b"" if witness else b"\x51", 0xFFFFFFFD, witness),),
        (TxOut(10_000 + serial, b"\x00\x14" + seed[12:32]),),
        0,
    )
    return MempoolTx(tx, fee=1_000 + serial, serial=serial)


@dataclass
class DevnetChain:
    """A regtest-like chain with a fixed difficulty and a synthetic mempool.

    ``on_new_tip`` callbacks get (hash, height) for every new active tip;
    ``on_template_change`` callbacks fire whenever a new template would
    differ (new tip or mempool change) and drive the long-poll.
    """

    difficulty: Fraction = Fraction(1)
    synthetic_txs: int = 3
    clock: Callable[[], float] = _time.time
    genesis_time: int | None = None
    blocks: dict[bytes, StoredBlock] = field(default_factory=dict)
    active: list[bytes] = field(default_factory=list)
    mempool: list[MempoolTx] = field(default_factory=list)
    invalid: set[bytes] = field(default_factory=set)
    on_new_tip: list[Callable[[bytes, int], None]] = field(default_factory=list)
    on_template_change: list[Callable[[], None]] = field(default_factory=list)
    mempool_sequence: int = 0
    _tx_counter: int = 0

    def __post_init__(self) -> None:
        self.set_difficulty(self.difficulty)
        if not self.blocks:
            self._make_genesis()
            self._refill_mempool()

    def set_difficulty(self, difficulty: Fraction) -> None:
        """Fixed difficulty for the next blocks (a devnet knob; nothing retargets).

        Capped at the regtest proof-of-work limit, where about every second
        hash is a block.
        """
        self.difficulty = Fraction(difficulty)
        self.target = bits_to_target(target_to_bits(min(difficulty_to_target(self.difficulty), REGTEST_POW_LIMIT)))
        self.bits = target_to_bits(self.target)
        self._template_changed()

    # --- chain -----------------------------------------------------------
    def _make_genesis(self) -> None:
        cb = Tx(1, (TxIn(b"\x00" * 32, 0xFFFFFFFF, b"\x04stope-devnet-genesis", 0xFFFFFFFF),),
                (TxOut(50 * COIN, b"\x51"),), 0)
        when = self.genesis_time if self.genesis_time is not None else int(self.clock()) - 3600
        header = BlockHeader(1, b"\x00" * 32, cb.txid, when, self.bits, 0)
        block = Block(header, (cb,))
        h = header.hash
        self.blocks[h] = StoredBlock(block, 0, h, len(block.serialize()))
        self.active.append(h)

    def spawn_peer(self) -> DevnetChain:
        """A second node with the same chain and mempool (link them with ``DevnetRelay``)."""
        peer = DevnetChain(
            difficulty=self.difficulty,
            synthetic_txs=self.synthetic_txs,
            clock=self.clock,
            blocks=dict(self.blocks),
            active=list(self.active),
            mempool=list(self.mempool),
            invalid=set(self.invalid),
        )
        peer._tx_counter = self._tx_counter
        peer.bits, peer.target = self.bits, self.target
        return peer

    @property
    def tip(self) -> StoredBlock:
        return self.blocks[self.active[-1]]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def median_time_past(self, tip: bytes | None = None) -> int:
        """Median of the last 11 block times ending at ``tip`` (default: the active tip)."""
        h = self.active[-1] if tip is None else tip
        times = []
        for _ in range(11):
            stored = self.blocks[h]
            times.append(stored.block.header.time)
            if stored.height == 0:
                break
            h = stored.block.header.prev_hash
        return int(statistics.median_low(sorted(times)))

    def _refill_mempool(self) -> None:
        present = {m.tx.txid for m in self.mempool}
        while len(self.mempool) < self.synthetic_txs:
            self._tx_counter += 1
            entry = synthetic_tx(self._tx_counter)
            if entry.tx.txid not in present:
                self.mempool.append(entry)

    def _template_changed(self) -> None:
        self.mempool_sequence += 1
        for callback in list(self.on_template_change):
            callback()

    def add_synthetic_transaction(self) -> MempoolTx:
        """New mempool entry without a new block (template refresh without clean_jobs)."""
        self.synthetic_txs += 1
        self._refill_mempool()
        self._template_changed()
        return self.mempool[-1]

    def accept_to_mempool(self, entry: MempoolTx) -> bool:
        """Take a transaction relayed by a peer; False if already known."""
        if any(m.tx.txid == entry.tx.txid for m in self.mempool):
            return False
        self.mempool.append(entry)
        self.synthetic_txs = max(self.synthetic_txs, len(self.mempool))
        self._tx_counter = max(self._tx_counter, entry.serial)
        self._template_changed()
        return True

    # --- RPC-facing views -------------------------------------------------
    def longpoll_id(self) -> str:
        """bitcoind's format: tip hash followed by the mempool update counter."""
        return internal_to_display(self.tip.hash) + str(self.mempool_sequence)

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
            "longpollid": self.longpoll_id(),
            "target": f"{self.target:064x}",
            "mintime": mintime,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": MAX_BLOCK_SIGOPS_COST,
            "sizelimit": 4000000,
            "weightlimit": MAX_BLOCK_WEIGHT,
            "curtime": curtime,
            "bits": f"{self.bits:08x}",
            "height": height,
            "default_witness_commitment": (WITNESS_COMMITMENT_HEADER + commitment).hex(),
        }

    def network_difficulty(self) -> float:
        return float(Fraction(0xFFFF << 208, self.target))

    # --- validation --------------------------------------------------------
    def submit_block(self, raw: bytes) -> str | None:
        """Validate and store; return bitcoind's BIP22 result string or None.

        A valid block on the tip is connected (None); a valid block on another
        known block is stored as a side branch ("inconclusive"), and becomes
        the tip if its branch is now the longest (None).
        """
        try:
            block = deser_block(raw)
        except (ValueError, IndexError, struct.error) as exc:
            raise RPCError(-22, "Block decode failed") from exc
        h = block.header.hash
        if h in self.blocks:
            return "duplicate"
        if h in self.invalid:
            return "duplicate-invalid"
        reason = self._check_header(block.header)
        if reason is None:
            parent = self.blocks[block.header.prev_hash]
            height = parent.height + 1
            reason = self._check_block(block) or self._contextual_check_block(block, height, parent)
            if reason is None and parent.hash == self.active[-1]:
                reason = self._connect_checks(block, height)
        if reason is not None:
            if reason not in _NOT_CACHED:
                self.invalid.add(h)
            return reason
        self.blocks[h] = StoredBlock(block, height, h, len(raw))
        if parent.hash == self.active[-1]:
            self._set_active(self.active + [h])
            return None
        if height > self.height:
            self._reorganise_to(h)
            return None
        return "inconclusive"

    def _check_header(self, header: BlockHeader) -> str | None:
        """``CheckBlockHeader`` + ``AcceptBlockHeader`` + ``ContextualCheckBlockHeader``."""
        try:
            claimed = bits_to_target(header.bits, REGTEST_POW_LIMIT)
        except CompactTargetError:
            return "high-hash"
        if header.hash_int > claimed:
            return "high-hash"
        parent = self.blocks.get(header.prev_hash)
        if parent is None:
            return "prev-blk-not-found"
        if header.bits != self.bits:
            return "bad-diffbits"
        if header.time <= self.median_time_past(parent.hash):
            return "time-too-old"
        if header.time > int(self.clock()) + MAX_FUTURE_BLOCK_TIME:
            return "time-too-new"
        version = struct.unpack("<i", struct.pack("<I", header.version & 0xFFFFFFFF))[0]
        if version < 4:  # BIP34/66/65 are active from height 1 on regtest
            return f"bad-version(0x{header.version & 0xFFFFFFFF:08x})"
        return None

    @staticmethod
    def _check_block(block: Block) -> str | None:
        """``CheckBlock``: context-free structure, sizes and legacy sigops."""
        if not block.txs:
            return "bad-txnmrklroot" if block.header.merkle_root != b"\x00" * 32 else "bad-blk-length"
        if merkle_root([tx.txid for tx in block.txs]) != block.header.merkle_root:
            return "bad-txnmrklroot"
        if len({tx.txid for tx in block.txs}) != len(block.txs):
            return "bad-txns-duplicate"
        base_size = 80 + len(ser_compact_size(len(block.txs))) + sum(len(tx.serialize(False)) for tx in block.txs)
        if len(block.txs) * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT or base_size * WITNESS_SCALE_FACTOR > MAX_BLOCK_WEIGHT:
            return "bad-blk-length"
        if not block.txs[0].is_coinbase:
            return "bad-cb-missing"
        if any(tx.is_coinbase for tx in block.txs[1:]):
            return "bad-cb-multiple"
        for tx in block.txs:
            reason = DevnetChain._check_transaction(tx)
            if reason is not None:
                return reason
        if sum(tx_legacy_sigops(tx) for tx in block.txs) * WITNESS_SCALE_FACTOR > MAX_BLOCK_SIGOPS_COST:
            return "bad-blk-sigops"
        return None

    @staticmethod
    def _check_transaction(tx: Tx) -> str | None:
        """The parts of ``CheckTransaction`` a pool's coinbase can get wrong."""
        if not tx.inputs:
            return "bad-txns-vin-empty"
        if not tx.outputs:
            return "bad-txns-vout-empty"
        total = 0
        for out in tx.outputs:
            if out.value > MAX_MONEY:
                return "bad-txns-vout-toolarge"
            total += out.value
            if total > MAX_MONEY:
                return "bad-txns-txouttotal-toolarge"
        if tx.is_coinbase and not MIN_SCRIPT_SIG <= len(tx.inputs[0].script_sig) <= MAX_SCRIPT_SIG:
            return "bad-cb-length"
        return None

    def _contextual_check_block(self, block: Block, height: int, parent: StoredBlock) -> str | None:
        """``ContextualCheckBlock``: finality, BIP34 height, witness commitment, weight."""
        cutoff = self.median_time_past(parent.hash)
        if not all(is_final_tx(tx, height, cutoff) for tx in block.txs):
            return "bad-txns-nonfinal"
        if not block.txs[0].inputs[0].script_sig.startswith(bip34_height_push(height)):
            return "bad-cb-height"
        reason = self._check_witness(block)
        if reason is not None:
            return reason
        base = len(block.header.serialize()) + len(ser_compact_size(len(block.txs))) + sum(
            len(tx.serialize(False)) for tx in block.txs
        )
        total = len(block.serialize())
        if base * (WITNESS_SCALE_FACTOR - 1) + total > MAX_BLOCK_WEIGHT:
            return "bad-blk-weight"
        return None

    def _connect_checks(self, block: Block, height: int) -> str | None:
        """``ConnectBlock``: inputs must exist (mempool stand-in) and the coinbase may not overpay."""
        known = {m.tx.txid: m for m in self.mempool}
        fees = 0
        for tx in block.txs[1:]:
            entry = known.get(tx.txid)
            if entry is None:
                return "bad-txns-inputs-missingorspent"
            fees += entry.fee
        if sum(o.value for o in block.txs[0].outputs) > block_subsidy(height) + fees:
            return "bad-cb-amount"
        return None

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

    def _reorganise_to(self, tip: bytes) -> None:
        branch: list[bytes] = []
        h = tip
        while not (self.blocks[h].height < len(self.active) and self.active[self.blocks[h].height] == h):
            branch.append(h)
            h = self.blocks[h].block.header.prev_hash
        fork_height = self.blocks[h].height
        self._set_active(self.active[: fork_height + 1] + branch[::-1])

    def _set_active(self, active: list[bytes]) -> None:
        self.active = active
        tip = self.tip
        included = {tx.txid for tx in tip.block.txs[1:]}
        self.mempool = [m for m in self.mempool if m.tx.txid not in included]
        self._refill_mempool()
        for callback in list(self.on_new_tip):
            callback(tip.hash, tip.height)
        self._template_changed()

    # --- a built-in miner (like ``generatetoaddress``) ---------------------
    def generate(self, count: int = 1, script_pubkey: bytes = b"\x51", *, max_tries: int = 1 << 22) -> list[bytes]:
        """Mine ``count`` blocks on the tip with the mempool, paying ``script_pubkey``.

        Real proof of work, so only practical at devnet difficulties (at the
        regtest limit about every second hash wins); ``RuntimeError`` when
        ``max_tries`` nonces are not enough.
        """
        hashes = []
        for _ in range(count):
            raw = self._mine_template(script_pubkey, max_tries)
            result = self.submit_block(raw)
            if result is not None:
                raise RuntimeError(f"devnet refused its own block: {result}")
            hashes.append(self.tip.hash)
        return hashes

    def _mine_template(self, script_pubkey: bytes, max_tries: int) -> bytes:
        height = self.height + 1
        txs = [m.tx for m in self.mempool]
        outputs = [TxOut(block_subsidy(height) + sum(m.fee for m in self.mempool), script_pubkey)]
        outputs.append(TxOut(0, WITNESS_COMMITMENT_HEADER + witness_commitment_for(txs)))
        script_sig = bip34_height_push(height) + b"\x08" + struct.pack("<Q", height)
        coinbase = Tx(2, (TxIn(b"\x00" * 32, 0xFFFFFFFF, script_sig, 0xFFFFFFFF, (WITNESS_RESERVED_VALUE,)),),
                      tuple(outputs), 0)
        all_txs = (coinbase, *txs)
        root = merkle_root([tx.txid for tx in all_txs])
        when = max(int(self.clock()), self.median_time_past() + 1)
        for nonce in range(max_tries):
            header = BlockHeader(0x20000000, self.tip.hash, root, when, self.bits, nonce)
            if header.hash_int <= self.target:
                return Block(header, all_txs).serialize()
        raise RuntimeError(f"no block found in {max_tries} tries at difficulty {float(self.difficulty)}")

    # --- lookups -------------------------------------------------------------
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


class DevnetRelay:
    """Two devnet nodes that share blocks and transactions, as peers would.

    ``pause()`` cuts the link (a node that falls behind); ``resume()`` syncs
    both ways and reconnects. Relaying is synchronous, so a block submitted to
    one node is on the other before ``submitblock`` returns.
    """

    def __init__(self, a: DevnetChain, b: DevnetChain) -> None:
        self.a = a
        self.b = b
        self.paused = False
        a.on_new_tip.append(lambda _h, _height: self._push(a, b))
        b.on_new_tip.append(lambda _h, _height: self._push(b, a))
        a.on_template_change.append(lambda: self._share_mempool(a, b))
        b.on_template_change.append(lambda: self._share_mempool(b, a))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._push(self.a, self.b)
        self._push(self.b, self.a)

    def _push(self, src: DevnetChain, dst: DevnetChain) -> None:
        """Send ``dst`` the blocks of ``src``'s active chain it lacks, oldest first."""
        if self.paused:
            return
        missing = []
        for h in reversed(src.active):
            if h in dst.blocks:
                break
            missing.append(h)
        for h in reversed(missing):
            dst.submit_block(src.blocks[h].block.serialize())

    def _share_mempool(self, src: DevnetChain, dst: DevnetChain) -> None:
        if self.paused:
            return
        known = {m.tx.txid for m in dst.mempool}
        for entry in list(src.mempool):
            if entry.tx.txid not in known and entry.tx.txid not in _confirmed_txids(dst):
                dst.accept_to_mempool(entry)


def _confirmed_txids(chain: DevnetChain) -> set[bytes]:
    return {tx.txid for h in chain.active[1:] for tx in chain.blocks[h].block.txs[1:]}
