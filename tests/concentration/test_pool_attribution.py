"""Block attribution against the real mempool/mining-pools table in ../shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pool.attribution import (
    UNKNOWN_PREFIX,
    Attribution,
    PoolTable,
    attribute_block,
    attribute_coinbase,
    coinbase_addresses,
    decode_script_sig,
    load_pool_table,
    script_address,
    unknown_entity,
)
from pool.bitcoin.serialize import deser_compact_size
from pool.bitcoin.tx import Tx, TxOut, deser_tx

# a plausible coinbase scriptSig head: BIP34 push of height 900000 (0x0dbba0)
HEIGHT_PUSH = bytes.fromhex("03a0bb0d")
EXTRANONCE = bytes.fromhex("fabe6d6d0011223344556677")


@pytest.fixture(scope="module")
def pools_path(shared: Path) -> Path:
    return shared / "data" / "pools-v2.json"


@pytest.fixture(scope="module")
def pools_json(pools_path: Path) -> list[dict[str, Any]]:
    return json.loads(pools_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def table(pools_path: Path) -> PoolTable:
    return load_pool_table(pools_path)


def addresses_of(pools_json: list[dict[str, Any]], name: str) -> list[str]:
    return next(p["addresses"] for p in pools_json if p["name"] == name)


def coinbase_of(path: Path) -> Tx:
    raw = path.read_bytes()
    _, pos = deser_compact_size(raw, 80)
    tx, _ = deser_tx(raw, pos)
    return tx


def test_table_loads_every_pool_in_id_order(table: PoolTable) -> None:
    # reference §5: 168 pools, 217 addresses, 197 tags, ids 1..168
    pools = list(table)
    assert len(table) == 168
    assert [p.id for p in pools] == list(range(1, 169))
    assert sum(len(p.addresses) for p in pools) == 217
    assert sum(len(p.tags) for p in pools) == 197
    assert table.by_name("Foundry USA").tags == ("/2cDw/", "Foundry USA Pool")
    with pytest.raises(KeyError):
        table.by_name("No Such Pool")


def test_foundry_tag(table: PoolTable) -> None:
    got = attribute_block(table, HEIGHT_PUSH + b"/Foundry USA Pool/" + EXTRANONCE, [], block_id="h1")
    assert (got.entity, got.method, got.evidence) == ("Foundry USA", "tag", "Foundry USA Pool")
    assert got.pool is not None and got.pool.id == 111
    assert not got.is_unknown


def test_foundry_payout_address(table: PoolTable, pools_json: list[dict[str, Any]]) -> None:
    for address in addresses_of(pools_json, "Foundry USA"):
        got = attribute_block(
            table, HEIGHT_PUSH + EXTRANONCE, ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT", address], block_id="h"
        )
        assert (got.entity, got.method, got.evidence) == ("Foundry USA", "address", address)


def test_bech32_address_match_ignores_case(table: PoolTable, pools_json: list[dict[str, Any]]) -> None:
    address = next(a for a in addresses_of(pools_json, "Foundry USA") if a.startswith("bc1"))
    assert attribute_block(table, b"", [address.upper()], block_id="h").entity == "Foundry USA"


def test_tags_are_case_insensitive(table: PoolTable) -> None:
    assert attribute_block(table, HEIGHT_PUSH + b"mined by antpool", [], block_id="h").entity == "AntPool"
    assert (
        attribute_block(table, HEIGHT_PUSH + b"/foundry usa pool/", [], block_id="h").entity == "Foundry USA"
    )


def test_tatmas_before_viabtc(table: PoolTable) -> None:
    # R-AN-4: '/ViaBTC/' also matches TATMAS's tag; id 72 is tried before id 73
    got = attribute_block(table, HEIGHT_PUSH + b"/ViaBTC/TATMAS Pool/" + EXTRANONCE, [], block_id="h")
    assert got.entity == "TATMAS Pool"
    assert attribute_block(table, HEIGHT_PUSH + b"/ViaBTC/" + EXTRANONCE, [], block_id="h").entity == "ViaBTC"


def test_tags_are_regexes_like_mempool(table: PoolTable) -> None:
    # '/BTC.COM/' has an unescaped dot, so mempool's RegExp matches any character there
    assert attribute_block(table, b"/BTCxCOM/", [], block_id="h").entity == "BTC.com"


def test_precedence_is_per_pool_in_id_order(table: PoolTable, pools_json: list[dict[str, Any]]) -> None:
    foundry_address = addresses_of(pools_json, "Foundry USA")[0]  # id 111
    btccom_address = addresses_of(pools_json, "BTC.com")[0]  # id 6
    # an earlier pool's tag beats a later pool's address
    got = attribute_block(table, b"/BTC.COM/", [foundry_address], block_id="h")
    assert (got.entity, got.method) == ("BTC.com", "tag")
    # an earlier pool's address beats a later pool's tag
    got = attribute_block(table, b"/Foundry USA Pool/", [btccom_address], block_id="h")
    assert (got.entity, got.method) == ("BTC.com", "address")
    # within one pool the address is checked first
    got = attribute_block(table, b"/Foundry USA Pool/", [foundry_address], block_id="h")
    assert (got.method, got.evidence) == ("address", foundry_address)


def test_non_ascii_tags_never_match_as_in_mempool(table: PoolTable) -> None:
    # mempool decodes the scriptSig byte by byte, so UTF-8 tags cannot match
    for text in ("七彩神仙鱼", "🐟", "/八宝池 8baochi.com/"[:4]):
        got = attribute_block(table, HEIGHT_PUSH + text.encode("utf-8"), [], block_id="x")
        assert got.is_unknown
    assert attribute_block(table, HEIGHT_PUSH + b"F2Pool", [], block_id="x").entity == "F2Pool"
    assert decode_script_sig(b"\xf0\x9f\x90\x9f") == "\xf0\x9f\x90\x9f"


def test_unknown_blocks_are_each_their_own_entity(table: PoolTable) -> None:
    sig = HEIGHT_PUSH + b"/my home miner/" + EXTRANONCE
    a = attribute_block(table, sig, ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT"], block_id="00000000aa")
    b = attribute_block(table, sig, ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT"], block_id="00000000bb")
    assert a == Attribution("unknown:00000000aa", None, "unknown", None)
    assert a.is_unknown and b.is_unknown
    assert a.entity != b.entity
    assert attribute_block(table, sig, [], block_id="00000000aa").entity == a.entity  # stable
    assert unknown_entity(840000) == UNKNOWN_PREFIX + "840000"
    with pytest.raises(ValueError):
        attribute_block(table, sig, [], block_id="")


@pytest.mark.parametrize(
    ("file", "pool", "method"),
    [
        # well-known attributions of these mainnet blocks
        ("block413567.raw", "F2Pool", "address"),  # pays 1KFHE7w8BhaENAswwryaoccDb6qcT6DbYY; its tag is UTF-8
        ("block574200.blk", "BTC.com", "address"),  # '/BTC.COM/' in the scriptSig too
        ("block277647.raw", "BTC Guild", "tag"),  # 'Mined by BTC Guild'
    ],
)
def test_real_blocks(table: PoolTable, shared: Path, file: str, pool: str, method: str) -> None:
    coinbase = coinbase_of(shared / "vectors" / file)
    assert coinbase.is_coinbase
    got = attribute_coinbase(table, coinbase, block_id=file)
    assert (got.entity, got.method) == (pool, method)


def test_coinbase_addresses_skip_zero_value_and_op_return(vectors: dict[str, Any]) -> None:
    commitment = bytes.fromhex(vectors["segwit_coinbase_574200"]["witness_commitment_output_script"])
    p2wpkh = bytes.fromhex("0014751e76e8199196d454941c45d1b3a323f1433bd6")
    outputs = [TxOut(625_000_000, p2wpkh), TxOut(0, commitment), TxOut(0, p2wpkh)]
    assert coinbase_addresses(outputs) == ["bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"]


def _address_vectors(vectors: dict[str, Any]) -> list[tuple[str, str, str]]:
    section = vectors["address_to_scriptpubkey"]
    chain_to_network = {"main": "main", "testnet4": "test", "regtest": "regtest"}
    rows = [
        (r["address"], r["scriptPubKey"], chain_to_network[r["chain"]])
        for r in section["bitcoin_core_key_io_valid_sample"]
    ]
    for r in section["bip350_valid"]:
        hrp = r["address"].lower().split("1")[0]
        if hrp in ("bc", "tb"):
            rows.append((r["address"], r["scriptPubKey"], "main" if hrp == "bc" else "test"))
    return rows


def test_script_address_known_answers(vectors: dict[str, Any]) -> None:
    rows = _address_vectors(vectors)
    kinds = {bytes.fromhex(spk)[:1] for _, spk, _ in rows}
    assert {b"\x76", b"\xa9", b"\x00", b"\x51", b"\x52", b"\x60"} <= kinds  # p2pkh p2sh v0 v1 v2 v16
    for address, spk, network in rows:
        expected = address.lower() if address.lower().startswith(("bc1", "tb1", "bcrt1")) else address
        assert script_address(bytes.fromhex(spk), network) == expected, (address, spk)


@pytest.mark.parametrize(
    "script",
    [
        "",
        "6a24aa21a9ed26402ed52f8eee7114e8f5c57c79a7862371c7f0dbfe51e7152e67d36b143593",  # OP_RETURN
        # P2PK (genesis output): bitcoind shows no address
        "4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac",
        "0015751e76e8199196d454941c45d1b3a323f1433bd6aa",  # v0 with a 21-byte program
        "5101ff",  # 1-byte witness program is below the minimum of 2
    ],
)
def test_scripts_without_an_address(script: str) -> None:
    assert script_address(bytes.fromhex(script)) is None


@given(st.binary(max_size=50))
def test_script_address_never_raises(script: bytes) -> None:
    result = script_address(script)
    assert result is None or isinstance(result, str)


def test_unknown_network_rejected() -> None:
    with pytest.raises(ValueError):
        script_address(b"", "mainnet")


@pytest.mark.parametrize(
    "data",
    [
        {"id": 1},
        [
            {"id": 1, "name": "a", "addresses": [], "tags": []},
            {"id": 1, "name": "b", "addresses": [], "tags": []},
        ],
        [{"id": 1, "name": "a", "addresses": [], "tags": ["(unclosed"]}],
        [{"id": "1", "name": "a", "addresses": [], "tags": []}],
        [{"id": 1, "name": "a", "addresses": [3], "tags": []}],
        [{"id": 1, "name": "a", "addresses": "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "tags": []}],
        [{"name": "a"}],
    ],
)
def test_malformed_tables_rejected(data: Any) -> None:
    with pytest.raises(ValueError):
        PoolTable.from_json(data)
