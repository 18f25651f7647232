"""Known headers (five genesis blocks, block 125552, mainnet 1-11) from ../shared/vectors."""

from __future__ import annotations

import bitcoin.core as bc
import pytest

from pool.bitcoin.block import BlockHeader, deser_block, deser_header, ser_header
from pool.bitcoin.merkle import merkle_root
from pool.bitcoin.serialize import display_to_internal, internal_to_display, sha256d
from pool.bitcoin.target import POW_LIMITS, bits_to_target

# Vector names start with the network; map them to our network keys.
NAME_TO_NETWORK = {"mainnet": "mainnet", "testnet3": "testnet", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}


def _network(entry: dict) -> str:
    return NAME_TO_NETWORK[entry["name"].split()[0]]


def test_known_headers(vectors: dict) -> None:
    assert len(vectors["block_headers"]) >= 6
    for entry in vectors["block_headers"]:
        raw = bytes.fromhex(entry["header_hex"])
        header = deser_header(raw)
        assert header.version == entry["version"] == int(entry["version_hex"], 16), entry["name"]
        assert internal_to_display(header.prev_hash) == entry["prevhash"], entry["name"]
        assert internal_to_display(header.merkle_root) == entry["merkle_root"], entry["name"]
        assert header.time == entry["ntime"], entry["name"]
        assert header.bits == int(entry["nbits"], 16), entry["name"]
        assert header.nonce == entry["nonce"] == int(entry["nonce_hex"], 16), entry["name"]
        # Built from the explorer-style fields, the header is the published bytes.
        built = ser_header(
            entry["version"],
            display_to_internal(entry["prevhash"]),
            display_to_internal(entry["merkle_root"]),
            entry["ntime"],
            int(entry["nbits"], 16),
            entry["nonce"],
        )
        assert built == raw, entry["name"]
        assert internal_to_display(header.hash) == entry["hash"], entry["name"]
        assert header.hash == bc.CBlockHeader.deserialize(raw).GetHash(), entry["name"]
        if "sha256d_raw_digest_hex" in entry:
            assert sha256d(raw).hex() == entry["sha256d_raw_digest_hex"]
        # Proof of work holds against the network's own limit.
        target = bits_to_target(header.bits, POW_LIMITS[_network(entry)])
        assert header.hash_int <= target, entry["name"]


def test_genesis_block_parses_and_its_root_is_the_coinbase(vectors: dict) -> None:
    entry = next(e for e in vectors["block_headers"] if "raw_block_hex" in e)
    raw = bytes.fromhex(entry["raw_block_hex"])
    block = deser_block(raw)
    assert block.serialize() == raw
    assert len(block.txs) == 1 and block.txs[0].is_coinbase
    assert internal_to_display(block.txs[0].txid) == entry["coinbase_txid"]
    assert merkle_root([block.txs[0].txid]) == block.header.merkle_root
    assert internal_to_display(block.header.hash) == entry["hash"]


def test_mainnet_headers_1_to_11_chain(vectors: dict) -> None:
    genesis = next(e for e in vectors["block_headers"] if e["name"].startswith("mainnet genesis"))
    headers = vectors["mainnet_headers_1_to_11"]["headers"]
    assert [h["height"] for h in headers] == list(range(1, 12))
    previous = deser_header(bytes.fromhex(genesis["header_hex"]))
    for entry in headers:
        raw = bytes.fromhex(entry["header_hex"])
        header = deser_header(raw)
        assert header.serialize() == raw
        assert header.prev_hash == previous.hash, entry["height"]
        assert internal_to_display(header.hash) == entry["hash"], entry["height"]
        assert header.hash_int <= bits_to_target(header.bits, POW_LIMITS["mainnet"])
        previous = header


def test_header_refuses_wrong_hash_lengths() -> None:
    with pytest.raises(ValueError):
        ser_header(1, b"\x00" * 31, b"\x00" * 32, 0, 0x1D00FFFF, 0)
    with pytest.raises(ValueError):
        deser_header(b"\x00" * 79)
    # A version with the top bit set (seen with version rolling) round-trips unsigned.
    header = BlockHeader(0xE0000000, b"\x11" * 32, b"\x22" * 32, 1, 0x1D00FFFF, 2)
    assert deser_header(header.serialize()) == header
