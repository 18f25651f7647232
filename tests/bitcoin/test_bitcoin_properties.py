"""Hypothesis: what we serialise, python-bitcoinlib parses back identically (and vice versa)."""

from __future__ import annotations

import bitcoin.core as bc
import pytest
from bitcoin.core.script import CScript
from bitcoin.core.serialize import VarIntSerializer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pool.bitcoin.block import Block, BlockHeader, deser_block
from pool.bitcoin.coinbase import (
    MAX_MONEY,
    WITNESS_RESERVED_VALUE,
    CoinbaseError,
    build_coinbase,
    commitment_script_for_wtxids,
)
from pool.bitcoin.merkle import coinbase_branch, fold_branch, merkle_root, witness_merkle_root
from pool.bitcoin.script import bip34_height_push
from pool.bitcoin.serialize import deser_compact_size, ser_compact_size
from pool.bitcoin.tx import Tx, TxIn, TxOut, deser_tx

u32 = st.integers(0, 2**32 - 1)
scripts = st.binary(min_size=0, max_size=80)
txouts = st.builds(TxOut, st.integers(0, MAX_MONEY), scripts)
witness_stacks = st.lists(st.binary(min_size=0, max_size=80), min_size=0, max_size=4).map(tuple)
txins = st.builds(TxIn, st.binary(min_size=32, max_size=32), u32, scripts, u32, witness_stacks)
txs = st.builds(
    Tx,
    st.integers(-(2**31), 2**31 - 1),
    st.lists(txins, min_size=1, max_size=4).map(tuple),
    st.lists(txouts, min_size=1, max_size=4).map(tuple),
    u32,
)

SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same_tx(ours: Tx, theirs: bc.CTransaction) -> None:
    """Field-by-field agreement with python-bitcoinlib's parse."""
    assert theirs.nVersion == ours.version
    assert theirs.nLockTime == ours.locktime
    assert len(theirs.vin) == len(ours.inputs)
    for i, (txin, other) in enumerate(zip(ours.inputs, theirs.vin)):
        assert other.prevout.hash == txin.prev_txid
        assert other.prevout.n == txin.prev_index
        assert bytes(other.scriptSig) == txin.script_sig
        assert other.nSequence == txin.sequence
        stack = theirs.wit.vtxinwit[i].scriptWitness.stack if theirs.has_witness() else []
        assert [bytes(item) for item in stack] == list(txin.witness)
    assert [(o.nValue, bytes(o.scriptPubKey)) for o in theirs.vout] == [(o.value, o.script_pubkey) for o in ours.outputs]
    assert theirs.GetTxid() == ours.txid
    assert theirs.GetHash() == ours.wtxid


# ---------------------------------------------------------------- coinbase


@SLOW
@given(
    height=st.integers(0, 2**31 - 1),
    tag=st.binary(min_size=0, max_size=60),
    aux=st.binary(min_size=0, max_size=8),
    extranonce=st.binary(min_size=0, max_size=16),
    outputs=st.lists(txouts, min_size=0, max_size=5),
    commit_wtxids=st.none() | st.lists(st.binary(min_size=32, max_size=32), max_size=5),
    version=st.sampled_from([1, 2]),
    sequence=st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0]),
    locktime=u32,
)
def test_coinbase_parses_with_python_bitcoinlib(
    height: int,
    tag: bytes,
    aux: bytes,
    extranonce: bytes,
    outputs: list[TxOut],
    commit_wtxids: list[bytes] | None,
    version: int,
    sequence: int,
    locktime: int,
) -> None:
    commitment = None if commit_wtxids is None else commitment_script_for_wtxids(commit_wtxids)
    script_len = len(bip34_height_push(height)) + len(aux) + len(tag) + len(extranonce)
    expected_outputs = outputs + ([TxOut(0, commitment)] if commitment is not None else [])
    kwargs = dict(
        height=height,
        outputs=outputs,
        extranonce_size=len(extranonce),
        tag=tag,
        aux=aux,
        witness_commitment_script=commitment,
        version=version,
        sequence=sequence,
        locktime=locktime,
    )
    if not 2 <= script_len <= 100 or not expected_outputs:
        event("refused by consensus limits")
        with pytest.raises(CoinbaseError):
            build_coinbase(**kwargs)  # type: ignore[arg-type]
        return
    template = build_coinbase(**kwargs)  # type: ignore[arg-type]

    raw = template.assemble(extranonce)
    theirs = bc.CTransaction.deserialize(raw)
    assert theirs.serialize() == raw
    assert theirs.is_coinbase() and not theirs.has_witness()
    assert theirs.nVersion == version and theirs.nLockTime == locktime
    assert theirs.vin[0].nSequence == sequence
    script_sig = bytes(theirs.vin[0].scriptSig)
    assert script_sig == bip34_height_push(height) + aux + tag + extranonce
    # BIP34: Core's expectation is CScript() << height at the very start.
    assert script_sig.startswith(bytes(CScript([height])))
    assert [(o.nValue, bytes(o.scriptPubKey)) for o in theirs.vout] == [(o.value, o.script_pubkey) for o in expected_outputs]
    assert theirs.GetTxid() == template.txid(extranonce)
    # The split sits exactly around the extranonce.
    assert raw.startswith(template.coinb1) and raw.endswith(template.coinb2)
    assert len(template.coinb1) + len(extranonce) + len(template.coinb2) == len(raw)

    block_form = template.assemble_for_block(extranonce)
    if commitment is None:
        assert block_form == raw
    else:
        full = bc.CTransaction.deserialize(block_form)
        assert full.serialize() == block_form
        assert [bytes(i) for i in full.wit.vtxinwit[0].scriptWitness.stack] == [WITNESS_RESERVED_VALUE]
        assert full.GetTxid() == template.txid(extranonce)
        ours, _ = deser_tx(block_form)
        assert ours.inputs[0].witness == (WITNESS_RESERVED_VALUE,)
        assert ours.serialize(with_witness=False) == raw


# ---------------------------------------------------------------- transactions and blocks


@SLOW
@given(txs)
def test_tx_roundtrips_with_python_bitcoinlib(tx: Tx) -> None:
    raw = tx.serialize()
    theirs = bc.CTransaction.deserialize(raw)
    assert theirs.serialize() == raw
    _same_tx(tx, theirs)
    ours, end = deser_tx(raw)
    assert end == len(raw) and ours == tx


@SLOW
@given(txs, st.data())
def test_truncated_tx_refused(tx: Tx, data: st.DataObject) -> None:
    raw = tx.serialize()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ValueError):
        deser_tx(raw[:cut])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(txs, min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=32, max_size=32),
    u32,
    u32,
    u32,
)
def test_block_parses_with_python_bitcoinlib(
    tx_list: list[Tx], version: int, prev: bytes, time: int, bits: int, nonce: int
) -> None:
    txids = [tx.txid for tx in tx_list]
    header = BlockHeader(version, prev, merkle_root(txids), time, bits, nonce)
    block = Block(header, tuple(tx_list))
    raw = block.serialize()

    theirs = bc.CBlock.deserialize(raw)
    assert theirs.serialize() == raw
    assert theirs.calc_merkle_root() == header.merkle_root
    assert theirs.GetHash() == header.hash
    assert len(theirs.vtx) == len(tx_list)
    for ours, other in zip(tx_list, theirs.vtx):
        _same_tx(ours, other)
    if any(tx.has_witness for tx in tx_list):
        assert theirs.calc_witness_merkle_root() == witness_merkle_root([tx.wtxid for tx in tx_list[1:]])

    # Stratum path: the coinbase branch folds leaf 0 to the same root.
    assert fold_branch(txids[0], coinbase_branch(txids[1:])) == header.merkle_root
    assert deser_block(raw) == block


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_compact_size_roundtrip(n: int) -> None:
    raw = ser_compact_size(n)
    assert raw == VarIntSerializer.serialize(n)
    assert deser_compact_size(raw, 0) == (n, len(raw))


@pytest.mark.parametrize("raw", ["fdfc00", "feffff0000", "ffffffffff00000000", "fd", "fe0000", ""])
def test_compact_size_refuses_noncanonical_and_truncated(raw: str) -> None:
    with pytest.raises(ValueError):
        deser_compact_size(bytes.fromhex(raw), 0)


def test_witness_marker_without_witness_is_refused() -> None:
    """Core: "Superfluous witness record"; accepting it would break byte-identical re-serialisation."""
    tx = Tx(2, (TxIn(b"\x11" * 32, 0, b"", 0xFFFFFFFF, (b"\x01",)),), (TxOut(1, b"\x51"),), 0)
    raw = tx.serialize()
    assert raw[-7:-4] == b"\x01\x01\x01"  # one stack of one 1-byte item, then locktime
    stripped = raw[:-7] + b"\x00" + raw[-4:]
    with pytest.raises(ValueError, match="superfluous"):
        deser_tx(stripped)


def test_unknown_segwit_flag_is_refused() -> None:
    tx = Tx(2, (TxIn(b"\x11" * 32, 0, b"", 0xFFFFFFFF, (b"\x01",)),), (TxOut(1, b"\x51"),), 0)
    raw = bytearray(tx.serialize())
    raw[5] = 0x02
    with pytest.raises(ValueError, match="flag"):
        deser_tx(bytes(raw))
