"""BIP34 height pushes and payout addresses against BIP173/BIP350/Core vectors and python-bitcoinlib."""

from __future__ import annotations

from pathlib import Path

import pytest
from bitcoin import segwit_addr
from bitcoin.base58 import CBase58Data
from bitcoin.core.script import CScript
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.bitcoin.block import deser_block
from pool.bitcoin.script import (
    NETWORK_PREFIXES,
    AddressError,
    address_to_script,
    bip34_height_push,
    push_data,
)

ALL_NETWORKS = sorted(NETWORK_PREFIXES)
# Which of our networks each hrp / Core chain name is valid on.
HRP_NETWORKS = {"bc": {"mainnet"}, "tb": {"testnet", "testnet4", "signet"}, "bcrt": {"regtest"}}
# Base58 test prefixes are shared by testnet, signet and regtest (as in Core's chainparams).
BASE58_NETWORKS = {"main": {"mainnet"}, "test": {"testnet", "testnet4", "signet", "regtest"}}
# The word a refusal must use to name the address's own network.
HRP_WORD = {"bc": "mainnet", "tb": "testnet", "bcrt": "regtest"}
BECH32M_CONST = 0x2BC830A3  # BIP350; the only difference from bech32's constant 1


# ---------------------------------------------------------------- BIP34


def test_bip34_rule_cases(vectors: dict) -> None:
    cases = vectors["bip34_height_push"]["rule_cases"]
    assert len(cases) >= 17
    for case in cases:
        assert bip34_height_push(case["height"]).hex() == case["push_hex"], case


def test_bip34_real_coinbases(vectors: dict) -> None:
    for case in vectors["bip34_height_push"]["real_coinbases"]:
        assert bip34_height_push(case["height"]).hex() == case["push_hex"], case


def test_bip34_push_starts_real_block_coinbases(shared: Path, vectors: dict) -> None:
    """The vector pushes really do open the coinbases of the real blocks beside them."""
    pushes = {c["push_hex"]: c["height"] for c in vectors["bip34_height_push"]["real_coinbases"]}
    checked = 0
    for entry in vectors["full_blocks"]:
        block = deser_block((shared / "vectors" / entry["file"]).read_bytes())
        script_sig = block.txs[0].inputs[0].script_sig
        for push_hex, height in pushes.items():
            if script_sig.hex().startswith(push_hex):
                assert script_sig.startswith(bip34_height_push(height))
                checked += 1
    assert checked == len(vectors["full_blocks"])


def test_bip34_refuses_negative() -> None:
    with pytest.raises(ValueError):
        bip34_height_push(-1)


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_bip34_push_equals_python_bitcoinlib(height: int) -> None:
    """``CScript() << nHeight``: OP_0, OP_1..OP_16, else a minimal CScriptNum push."""
    assert bip34_height_push(height) == bytes(CScript([height]))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_push_data_equals_python_bitcoinlib(data: bytes) -> None:
    assert push_data(data) == bytes(CScript([data]))


# ---------------------------------------------------------------- addresses


def _valid_segwit_vectors(vectors: dict) -> list[dict]:
    section = vectors["address_to_scriptpubkey"]
    return section["bip350_valid"] + section["bip173_v0_valid"]


def _hrp(address: str) -> str:
    return address.lower().rsplit("1", 1)[0]


def test_bip350_and_bip173_valid(vectors: dict) -> None:
    cases = _valid_segwit_vectors(vectors)
    # The section covers v0 (both lengths), v1 (P2TR), v2 and v16 (BIP350 generic).
    versions = {bytes.fromhex(c["scriptPubKey"])[0] for c in cases}
    assert {0x00, 0x51, 0x52, 0x60} <= versions
    for case in cases:
        for network in HRP_NETWORKS[_hrp(case["address"])]:
            assert address_to_script(case["address"], network).hex() == case["scriptPubKey"], (case, network)


def test_core_key_io_valid(vectors: dict) -> None:
    cases = vectors["address_to_scriptpubkey"]["bitcoin_core_key_io_valid_sample"]
    kinds: set[str] = set()
    for case in cases:
        address = case["address"]
        if _hrp(address) in HRP_NETWORKS:
            networks = HRP_NETWORKS[_hrp(address)]
        else:
            networks = BASE58_NETWORKS["main" if case["chain"] == "main" else "test"]
        # Core's chain label must be one of the networks we accept the address on.
        assert {"main": "mainnet"}.get(case["chain"], case["chain"]) in networks
        for network in networks:
            script = address_to_script(address, network)
            assert script.hex() == case["scriptPubKey"], (case, network)
        kinds.add(script[:1].hex() if script[0] in (0x76, 0xA9) else script[:2].hex())
    # P2PKH, P2SH, P2WPKH, P2WSH, P2TR and higher witness versions (v2, v3, v16) all appear.
    assert {"76", "a9", "0014", "0020", "5120", "5202", "5310", "6028"} <= kinds


def test_invalid_addresses_refused_everywhere(vectors: dict) -> None:
    section = vectors["address_to_scriptpubkey"]
    invalid = [c["address"] for c in section["bip350_invalid"]] + section["bip173_v1plus_examples_now_invalid"]
    assert len(invalid) >= 18
    for address in invalid:
        for network in ALL_NETWORKS:
            with pytest.raises(AddressError):
                address_to_script(address, network)


def test_wrong_network_refused_naming_the_network(vectors: dict) -> None:
    section = vectors["address_to_scriptpubkey"]
    cases = _valid_segwit_vectors(vectors) + section["bitcoin_core_key_io_valid_sample"]
    refusals = 0
    for case in cases:
        address = case["address"]
        hrp = _hrp(address)
        if hrp in HRP_NETWORKS:
            valid_on, word = HRP_NETWORKS[hrp], HRP_WORD[hrp]
        else:
            kind = "main" if case.get("chain") == "main" else "test"
            valid_on, word = BASE58_NETWORKS[kind], ("mainnet" if kind == "main" else "testnet")
        for network in set(ALL_NETWORKS) - valid_on:
            with pytest.raises(AddressError, match=f"is a {word}") as info:
                address_to_script(address, network)
            assert network in str(info.value)
            refusals += 1
    assert refusals > 100


@pytest.mark.parametrize("bad", ["", " ", "bc1", "1", "notanaddress", "1FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mp", "0FsSia9rv4NeEwvJ2GvXrX7LyxYspbN2mo"])
def test_garbage_refused(bad: str) -> None:
    with pytest.raises(AddressError):
        address_to_script(bad, "mainnet")


def test_unknown_network_refused() -> None:
    with pytest.raises(AddressError, match="unknown network"):
        address_to_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "litecoin")


# Independent encoders: python-bitcoinlib's base58 and BIP173 reference bech32,
# plus BIP350's one-constant change for bech32m (so embit is not checked against itself).


def _bech32m_encode(hrp: str, version: int, program: bytes) -> str:
    data = [version] + segwit_addr.convertbits(list(program), 8, 5)
    values = segwit_addr.bech32_hrp_expand(hrp) + data
    polymod = segwit_addr.bech32_polymod(values + [0] * 6) ^ BECH32M_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(segwit_addr.CHARSET[d] for d in data + checksum)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=20, max_size=20), st.sampled_from(ALL_NETWORKS), st.booleans())
def test_base58_addresses_from_python_bitcoinlib(h160: bytes, network: str, p2sh: bool) -> None:
    _, p2pkh_version, p2sh_version = NETWORK_PREFIXES[network]
    address = str(CBase58Data.from_bytes(h160, p2sh_version if p2sh else p2pkh_version))
    expected = b"\xa9\x14" + h160 + b"\x87" if p2sh else b"\x76\xa9\x14" + h160 + b"\x88\xac"
    assert address_to_script(address, network) == expected


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([20, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)), st.sampled_from(ALL_NETWORKS))
def test_v0_addresses_from_reference_bech32(program: bytes, network: str) -> None:
    hrp = NETWORK_PREFIXES[network][0]
    address = segwit_addr.encode(hrp, 0, list(program))
    assert address_to_script(address, network) == bytes([0, len(program)]) + program
    assert address_to_script(address.upper(), network) == bytes([0, len(program)]) + program


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=16), st.binary(min_size=2, max_size=40), st.sampled_from(ALL_NETWORKS))
def test_v1_plus_addresses_bech32m_accepted_bech32_refused(version: int, program: bytes, network: str) -> None:
    hrp = NETWORK_PREFIXES[network][0]
    expected = bytes([0x50 + version, len(program)]) + program
    assert address_to_script(_bech32m_encode(hrp, version, program), network) == expected
    # The same data with BIP173's bech32 checksum is invalid since BIP350.
    with pytest.raises(AddressError):
        address_to_script(segwit_addr.encode(hrp, version, list(program)), network)
