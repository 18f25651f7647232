"""Real mainnet blocks from ../shared/vectors against our parser, merkle and witness code.

Every expected value comes from expected.json (recomputed by the vector
authors from Bitcoin Core / btcd test data) or from python-bitcoinlib parsing
the same bytes; nothing is compared only with our own output.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import bitcoin.core as bc
import pytest

from pool.bitcoin.block import Block, deser_block
from pool.bitcoin.coinbase import (
    commitment_script_for_wtxids,
    witness_commitment,
    witness_commitment_index,
    witness_commitment_script,
)
from pool.bitcoin.merkle import coinbase_branch, fold_branch, merkle_root, witness_merkle_root
from pool.bitcoin.serialize import display_to_internal, internal_to_display, ser_compact_size
from pool.bitcoin.target import bits_to_target
from pool.bitcoin.tx import deser_tx

# The block files the vectors README lists; the test below fails if expected.json grows.
BLOCK_FILES = ["block413567.raw", "block574200.blk", "block277647.raw"]


@cache
def _load(path: Path) -> tuple[bytes, Block, bc.CBlock]:
    """Read, parse (ours) and parse (python-bitcoinlib) a block once per session."""
    raw = path.read_bytes()
    return raw, deser_block(raw), bc.CBlock.deserialize(raw)


@pytest.fixture(params=BLOCK_FILES)
def block_case(request: pytest.FixtureRequest, shared: Path, vectors: dict) -> tuple[dict, bytes, Block, bc.CBlock]:
    entry = next(e for e in vectors["full_blocks"] if e["file"] == request.param)
    raw, ours, theirs = _load(shared / "vectors" / request.param)
    return entry, raw, ours, theirs


def test_every_full_block_vector_is_covered(vectors: dict) -> None:
    assert sorted(e["file"] for e in vectors["full_blocks"]) == sorted(BLOCK_FILES)


def test_file_is_the_published_one(block_case: tuple) -> None:
    entry, raw, _, _ = block_case
    assert len(raw) == entry["bytes"]
    assert hashlib.sha256(raw).hexdigest() == entry["sha256_of_file"]


def test_parse_and_reserialise_byte_identical(block_case: tuple) -> None:
    entry, raw, block, _ = block_case
    assert len(block.txs) == entry["tx_count"]
    assert block.serialize() == raw
    # Header, count and each transaction's parsed size add up to the file exactly.
    count_len = len(ser_compact_size(entry["tx_count"]))
    assert 80 + count_len + sum(tx.raw_size for tx in block.txs) == len(raw)


def test_each_transaction_reparses_from_its_own_bytes(block_case: tuple) -> None:
    _, _, block, _ = block_case
    for tx in block.txs[:300]:
        raw_tx = tx.serialize()
        again, end = deser_tx(raw_tx)
        assert end == len(raw_tx) == tx.raw_size
        assert again == tx


def test_header_fields(block_case: tuple) -> None:
    entry, _, block, _ = block_case
    header = block.header
    assert header.serialize().hex() == entry["header_hex"]
    assert header.version == entry["version"] == int(entry["version_hex"], 16)
    assert internal_to_display(header.prev_hash) == entry["prevhash"]
    assert internal_to_display(header.merkle_root) == entry["merkle_root"]
    assert header.time == entry["ntime"]
    assert header.bits == int(entry["nbits"], 16)
    assert header.nonce == entry["nonce"] == int(entry["nonce_hex"], 16)
    assert internal_to_display(header.hash) == entry["block_hash"]
    assert header.hash_int <= bits_to_target(header.bits)


def test_merkle_root_from_all_txids(block_case: tuple) -> None:
    entry, _, block, theirs = block_case
    txids = [tx.txid for tx in block.txs]
    root = merkle_root(txids)
    assert internal_to_display(root) == entry["merkle_root_recomputed_from_all_txids"] == entry["merkle_root"]
    assert root == block.header.merkle_root == theirs.calc_merkle_root()


def test_coinbase_branch_matches_vector_and_folds_to_root(block_case: tuple) -> None:
    entry, _, block, _ = block_case
    txids = [tx.txid for tx in block.txs]
    branch = coinbase_branch(txids[1:])
    assert [h.hex() for h in branch] == entry["coinbase_merkle_branch_internal_hex"]
    vector_branch = [bytes.fromhex(h) for h in entry["coinbase_merkle_branch_internal_hex"]]
    leaf = display_to_internal(entry["coinbase_txid"])
    assert internal_to_display(fold_branch(leaf, vector_branch)) == entry["merkle_root"]


def test_txids_and_wtxids_match_python_bitcoinlib(block_case: tuple) -> None:
    entry, _, block, theirs = block_case
    assert len(theirs.vtx) == len(block.txs)
    for ours, other in zip(block.txs, theirs.vtx):
        assert ours.txid == other.GetTxid()
        assert ours.wtxid == other.GetHash()
        assert ours.has_witness == other.has_witness()
    assert block.header.hash == theirs.GetHash()


def test_coinbase_facts(block_case: tuple) -> None:
    entry, _, block, _ = block_case
    coinbase = block.txs[0]
    assert coinbase.is_coinbase
    assert not any(tx.is_coinbase for tx in block.txs[1:])
    assert internal_to_display(coinbase.txid) == entry["coinbase_txid"]
    assert coinbase.inputs[0].script_sig.hex() == entry["coinbase_scriptsig_hex"]
    assert coinbase.has_witness == entry["coinbase_has_witness"]
    if "coinbase_witness_stack" in entry:
        assert [w.hex() for w in coinbase.inputs[0].witness] == entry["coinbase_witness_stack"]


def test_witness_commitment_of_segwit_block(shared: Path, vectors: dict) -> None:
    entry = next(e for e in vectors["full_blocks"] if e["file"] == "block574200.blk")
    _, block, theirs = _load(shared / "vectors" / entry["file"])
    wtxids = [tx.wtxid for tx in block.txs[1:]]
    root = witness_merkle_root(wtxids)
    assert root.hex() == entry["witness_merkle_root_internal"]
    assert root == theirs.calc_witness_merkle_root()

    coinbase = block.txs[0]
    reserved = coinbase.inputs[0].witness[0]
    script = witness_commitment_script(witness_commitment(root, reserved))
    assert script.hex() == entry["witness_commitment_script"]
    assert commitment_script_for_wtxids(wtxids).hex() == entry["witness_commitment_script"]

    index = witness_commitment_index(coinbase.outputs)
    assert index is not None and index == theirs.get_witness_commitment_index()
    assert coinbase.outputs[index].script_pubkey.hex() == entry["witness_commitment_script"]


def test_truncated_block_is_refused(shared: Path) -> None:
    raw = (shared / "vectors" / "block277647.raw").read_bytes()
    for cut in (79, 81, 200, len(raw) - 1):
        with pytest.raises(ValueError):
            deser_block(raw[:cut])
    with pytest.raises(ValueError, match="trailing"):
        deser_block(raw + b"\x00")
