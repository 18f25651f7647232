"""Coinbase, witness commitment, notify prevhash and version rolling against ../shared vectors."""

from __future__ import annotations

from pathlib import Path

import bitcoin.core as bc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.bitcoin.block import VersionRollingError, apply_version_rolling, deser_block
from pool.bitcoin.coinbase import (
    WITNESS_RESERVED_VALUE,
    CoinbaseError,
    build_coinbase,
    commitment_script_for_wtxids,
    witness_commitment,
    witness_commitment_index,
    witness_commitment_script,
)
from pool.bitcoin.merkle import coinbase_branch, fold_branch, merkle_root, witness_merkle_root
from pool.bitcoin.script import bip34_height_push
from pool.bitcoin.serialize import (
    display_to_internal,
    internal_to_display,
    internal_to_notify_prevhash,
    notify_prevhash,
    notify_prevhash_to_display,
    notify_prevhash_to_internal,
    sha256d,
)
from pool.bitcoin.tx import Tx, TxOut, deser_tx

# ---------------------------------------------------------------- notify prevhash


def test_notify_prevhash_examples(vectors: dict) -> None:
    examples = vectors["notify_prevhash_encoding"]["examples"]
    assert len(examples) >= 3
    for example in examples:
        gbt, notify = example["gbt_previousblockhash"], example["notify_prevhash"]
        assert notify_prevhash(gbt) == notify
        assert notify_prevhash_to_display(notify) == gbt
        # Share validation needs the header bytes: the display hash reversed.
        assert notify_prevhash_to_internal(notify) == display_to_internal(gbt)
        assert internal_to_notify_prevhash(display_to_internal(gbt)) == notify


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_notify_prevhash_is_display_words_in_reverse_order(raw: bytes) -> None:
    """The vectors' second formulation: 8 groups of 8 hex chars, order reversed."""
    display = raw.hex()
    groups = [display[i : i + 8] for i in range(0, 64, 8)]
    assert notify_prevhash(display) == "".join(reversed(groups))
    assert notify_prevhash_to_display(notify_prevhash(display)) == display


def test_notify_prevhash_refuses_wrong_length() -> None:
    with pytest.raises(ValueError):
        notify_prevhash("00" * 31)
    with pytest.raises(ValueError):
        notify_prevhash_to_internal("00" * 33)
    with pytest.raises(ValueError):
        internal_to_notify_prevhash(b"\x00" * 31)


# ---------------------------------------------------------------- version rolling


def test_version_rolling_cases(vectors: dict) -> None:
    section = vectors["version_rolling"]
    assert len(section["cases"]) >= 4
    for case in section["cases"]:
        version, mask, bits = (int(case[k], 16) for k in ("job_version", "mask", "version_bits"))
        if case["header_version"] is None:
            with pytest.raises(VersionRollingError):
                apply_version_rolling(version, bits, mask)
        else:
            assert apply_version_rolling(version, bits, mask) == int(case["header_version"], 16), case
    assert section["bip320_general_purpose_mask"].startswith("1fffe000")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_version_rolling_property(version: int, mask: int, raw_bits: int) -> None:
    bits = raw_bits & mask
    rolled = apply_version_rolling(version, bits, mask)
    assert rolled & ~mask & 0xFFFFFFFF == version & ~mask & 0xFFFFFFFF
    assert rolled & mask == bits
    if raw_bits & ~mask & 0xFFFFFFFF:
        with pytest.raises(VersionRollingError):
            apply_version_rolling(version, raw_bits, mask)


def test_version_rolling_refuses_non_u32() -> None:
    with pytest.raises(VersionRollingError):
        apply_version_rolling(-1, 0, 0x1FFFE000)
    with pytest.raises(VersionRollingError):
        apply_version_rolling(0x20000000, 0, 1 << 32)


# ---------------------------------------------------------------- witness commitment


def test_empty_template_witness_commitment(vectors: dict) -> None:
    script = vectors["empty_template_witness_commitment"]["script"]
    assert commitment_script_for_wtxids([]).hex() == script
    assert witness_merkle_root([]) == b"\x00" * 32
    assert witness_commitment_script(witness_commitment(b"\x00" * 32, WITNESS_RESERVED_VALUE)).hex() == script


def test_witness_commitment_index_takes_the_last() -> None:
    a = TxOut(0, witness_commitment_script(b"\x01" * 32))
    b = TxOut(0, witness_commitment_script(b"\x02" * 32) + b"\xff")  # longer scripts still count
    payout = TxOut(5000, b"\x51")
    short = TxOut(0, witness_commitment_script(b"\x03" * 32)[:37])
    assert witness_commitment_index([payout]) is None
    assert witness_commitment_index([a, payout, b, short]) == 2


# ---------------------------------------------------------------- the real segwit coinbase


def test_segwit_coinbase_574200_with_and_without_witness(vectors: dict) -> None:
    section = vectors["segwit_coinbase_574200"]
    with_witness = bytes.fromhex(section["with_witness_hex"])
    without = bytes.fromhex(section["without_witness_hex"])

    tx, end = deser_tx(with_witness)
    assert end == len(with_witness)
    assert tx.serialize() == with_witness
    assert tx.serialize(with_witness=False) == without
    assert internal_to_display(tx.txid) == section["txid_display"]
    assert internal_to_display(tx.wtxid) == section["wtxid_display"]
    assert tx.inputs[0].witness == (b"\x00" * 32,)

    plain, _ = deser_tx(without)
    assert not plain.has_witness
    assert plain.txid == tx.txid
    assert plain.serialize() == without

    index = witness_commitment_index(tx.outputs)
    assert index is not None
    assert tx.outputs[index].script_pubkey.hex() == section["witness_commitment_output_script"]

    theirs = bc.CTransaction.deserialize(with_witness)
    assert theirs.GetTxid() == tx.txid and theirs.GetHash() == tx.wtxid


def _rebuild(coinbase: Tx, height: int, extranonce_size: int, witness_script: bytes | None) -> tuple[bytes, bytes]:
    """Split a real coinbase's scriptSig as a pool would and rebuild it with build_coinbase."""
    script_sig = coinbase.inputs[0].script_sig
    push = bip34_height_push(height)
    assert script_sig.startswith(push)
    tag = script_sig[len(push) : len(script_sig) - extranonce_size]
    extranonce = script_sig[len(script_sig) - extranonce_size :]
    outputs = list(coinbase.outputs)
    if witness_script is not None:
        assert outputs[-1].script_pubkey == witness_script
        outputs = outputs[:-1]
    template = build_coinbase(
        height=height,
        outputs=outputs,
        extranonce_size=extranonce_size,
        tag=tag,
        witness_commitment_script=witness_script,
        version=coinbase.version,
        sequence=coinbase.inputs[0].sequence,
        locktime=coinbase.locktime,
    )
    assert template.coinb1 + extranonce + template.coinb2 == template.assemble(extranonce)
    return template.assemble(extranonce), template.assemble_for_block(extranonce)


def test_build_coinbase_reproduces_segwit_coinbase_574200(vectors: dict) -> None:
    section = vectors["segwit_coinbase_574200"]
    tx, _ = deser_tx(bytes.fromhex(section["with_witness_hex"]))
    commitment = bytes.fromhex(section["witness_commitment_output_script"])
    for extranonce_size in (0, 4, 8, 12):
        plain, for_block = _rebuild(tx, 574200, extranonce_size, commitment)
        assert plain.hex() == section["without_witness_hex"]
        assert for_block.hex() == section["with_witness_hex"]


def test_build_coinbase_reproduces_legacy_block_coinbases(shared: Path, vectors: dict) -> None:
    heights = {c["push_hex"]: c["height"] for c in vectors["bip34_height_push"]["real_coinbases"]}
    for entry in vectors["full_blocks"]:
        if entry["coinbase_has_witness"]:
            continue
        block = deser_block((shared / "vectors" / entry["file"]).read_bytes())
        coinbase = block.txs[0]
        height = next(h for p, h in heights.items() if entry["coinbase_scriptsig_hex"].startswith(p))
        plain, for_block = _rebuild(coinbase, height, 8, None)
        assert plain == for_block == coinbase.serialize()
        assert internal_to_display(block.txs[0].txid) == entry["coinbase_txid"]
        # A pool job for this block: the branch from the other txids folds the rebuilt coinbase to the root.
        branch = coinbase_branch([t.txid for t in block.txs[1:]])
        assert internal_to_display(fold_branch(sha256d(plain), branch)) == entry["merkle_root"]


def test_build_coinbase_refusals() -> None:
    payout = [TxOut(50, b"\x51")]
    with pytest.raises(CoinbaseError, match="2..100"):
        build_coinbase(height=1, outputs=payout, extranonce_size=0)  # scriptSig would be 1 byte
    with pytest.raises(CoinbaseError, match="2..100"):
        build_coinbase(height=800000, outputs=payout, extranonce_size=8, tag=b"x" * 93)
    with pytest.raises(CoinbaseError, match="at least one output"):
        build_coinbase(height=800000, outputs=[], extranonce_size=8)
    with pytest.raises(CoinbaseError, match="outside"):
        build_coinbase(height=800000, outputs=[TxOut(21_000_000 * 10**8 + 1, b"\x51")], extranonce_size=8)
    with pytest.raises(CoinbaseError, match="outside"):
        build_coinbase(height=800000, outputs=[TxOut(-1, b"\x51")], extranonce_size=8)
    template = build_coinbase(height=800000, outputs=payout, extranonce_size=8)
    with pytest.raises(CoinbaseError, match="reserves 8"):
        template.assemble(b"\x00" * 7)


def test_empty_template_job_root_is_the_coinbase_txid() -> None:
    """Reference §5.3: empty template -> empty branch, merkle root = coinbase txid."""
    template = build_coinbase(height=100, outputs=[TxOut(50, b"\x51")], extranonce_size=8)
    assert coinbase_branch([]) == []
    txid = template.txid(b"\x00" * 8)
    assert fold_branch(txid, []) == merkle_root([txid]) == txid
