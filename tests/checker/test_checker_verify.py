"""verify_from_wire: a share recomputed from its logged notify and submit lines."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from pool.bitcoin.block import deser_header
from pool.bitcoin.serialize import deser_compact_size, display_to_internal
from pool.bitcoin.tx import deser_tx, ser_tx
from pool.checker import CheckerJob, notify_prevhash_to_internal
from pool.checker.job import internal_to_notify_prevhash
from pool.checker.verify import verify_from_wire

SCRIPT_SIG_START = 42


def _wire_lines(shared: Path, meta: dict, cut: int = 6) -> tuple[str, str, str, dict]:
    """notify line, extranonce1 hex and submit line for a real block, cut ``cut`` bytes into scriptSig."""
    raw = (shared / "vectors" / meta["file"]).read_bytes()
    _, pos = deser_compact_size(raw, 80)
    tx, _ = deser_tx(raw, pos)
    coinbase = ser_tx(tx, with_witness=False)
    h = deser_header(raw[:80])
    start = SCRIPT_SIG_START + cut
    coinb1, en1, en2, coinb2 = (
        coinbase[:start],
        coinbase[start : start + 4],
        coinbase[start + 4 : start + 12],
        coinbase[start + 12 :],
    )
    notify = json.dumps(
        {
            "id": None,
            "method": "mining.notify",
            "params": [
                "6a1f",
                internal_to_notify_prevhash(display_to_internal(meta["prevhash"])),
                coinb1.hex(),
                coinb2.hex(),
                meta["coinbase_merkle_branch_internal_hex"],
                f"{h.version:08x}",
                f"{h.bits:08x}",
                f"{h.time:08x}",
                True,
            ],
        }
    )
    submit = json.dumps(
        {
            "id": 7,
            "method": "mining.submit",
            "params": ["bc1qworker.rig1", "6a1f", en2.hex(), f"{h.time:08x}", f"{h.nonce:08x}", "00000000"],
        }
    )
    return notify, en1.hex(), submit, {"ntime": h.time, "nonce": h.nonce, "version": h.version}


def _meta(vectors: dict, name: str) -> dict:
    return next(b for b in vectors["full_blocks"] if b["file"] == name)


@pytest.mark.parametrize("name", ["block277647.raw", "block413567.raw", "block574200.blk"])
def test_real_block_from_wire(shared: Path, vectors: dict, name: str) -> None:
    meta = _meta(vectors, name)
    notify, en1, submit, _ = _wire_lines(shared, meta)
    out = verify_from_wire(notify, en1, submit, 0x1FFFE000, 1)
    assert out["block_hash"] == meta["block_hash"]
    assert out["header_hex"] == meta["header_hex"]
    assert out["merkle_root"] == meta["merkle_root"]
    assert out["coinbase_txid"] == meta["coinbase_txid"]
    assert out["verdict"] == "block" and out["error"] is None
    assert out["meets_share"] and out["meets_network"]
    assert out["share_difficulty"] > out["network_difficulty"] > 1
    assert Fraction(out["share_difficulty_exact"]) == Fraction(0xFFFF << 208, int(meta["block_hash"], 16))
    json.dumps(out)  # the CLI prints it as JSON


def test_backends_agree_from_wire(shared: Path, vectors: dict) -> None:
    meta = _meta(vectors, "block413567.raw")
    notify, en1, submit, _ = _wire_lines(shared, meta, cut=20)
    scalar = verify_from_wire(notify, en1, submit, None, "1000")
    vector = verify_from_wire(notify, en1, submit, None, "1000", backend="numba")
    assert {**scalar, "backend": "x"} == {**vector, "backend": "x"}
    assert scalar["block_hash"] == meta["block_hash"]


def test_low_difficulty_and_accepted(shared: Path, vectors: dict) -> None:
    meta = _meta(vectors, "block277647.raw")
    notify, en1, submit, fields = _wire_lines(shared, meta)
    msg = json.loads(submit)
    msg["params"][4] = f"{fields['nonce'] ^ 1:08x}"
    out = verify_from_wire(notify, en1, json.dumps(msg), 0x1FFFE000, Fraction(1, 1 << 40))
    assert out["verdict"] == "accepted" and not out["meets_network"]
    out = verify_from_wire(notify, en1, json.dumps(msg), 0x1FFFE000, 1)
    assert out["verdict"] == "low-difficulty" and out["error"][0] == 23


def test_version_bits_outside_mask(shared: Path, vectors: dict) -> None:
    meta = _meta(vectors, "block574200.blk")
    notify, en1, submit, _ = _wire_lines(shared, meta)
    msg = json.loads(submit)
    msg["params"][5] = "20000000"
    out = verify_from_wire(notify, en1, json.dumps(msg), 0x1FFFE000, 1)
    assert out["verdict"] == "invalid-version-bits" and out["error"][0] == 20
    assert out["version"] == "20000000"  # bits outside the mask never reach the header
    msg["params"][5] = "00002000"
    out = verify_from_wire(notify, en1, json.dumps(msg), None, 1)
    assert out["verdict"] == "invalid-version-bits"  # rolling never negotiated


def test_version_rolling_moves_the_hash(shared: Path, vectors: dict) -> None:
    meta = _meta(vectors, "block574200.blk")
    notify, en1, submit, _ = _wire_lines(shared, meta)
    msg = json.loads(submit)
    msg["params"][5] = "00002000"
    out = verify_from_wire(notify, en1, json.dumps(msg), 0x1FFFE000, Fraction(1, 1 << 40))
    assert out["version"] == "20002000"
    assert out["header_hex"].startswith("00200020")  # stratum-reference §4 step 6 example
    assert out["block_hash"] != meta["block_hash"] and out["verdict"] == "accepted"
    msg["params"].pop()  # no 6th param: version bits 0
    out = verify_from_wire(notify, en1, json.dumps(msg), None, 1)
    assert out["block_hash"] == meta["block_hash"]


def test_wire_field_encodings() -> None:
    """nonce "ed460d91" lands in the header as 91 0d 46 ed (stratum-reference §4 step 6)."""
    notify = json.dumps(
        {
            "id": None,
            "method": "mining.notify",
            "params": ["1", "00" * 32, "01" * 50, "02" * 60, [], "20000000", "207fffff", "64b3f3ec", False],
        }
    )
    submit = json.dumps({"id": 1, "method": "mining.submit", "params": ["w", "1", "0a0b0c0d", "64b3f3ed", "ed460d91"]})
    out = verify_from_wire(notify, "01020304", submit, None, 1)
    header = bytes.fromhex(out["header_hex"])
    assert header[76:80] == bytes.fromhex("910d46ed")
    assert header[68:72] == bytes.fromhex("edf3b364")
    assert header[72:76] == bytes.fromhex("ffff7f20")
    assert out["coinbase_hex"] == "01" * 50 + "01020304" + "0a0b0c0d" + "02" * 60


def test_mismatched_job_and_malformed_lines() -> None:
    notify = json.dumps(
        {
            "id": None,
            "method": "mining.notify",
            "params": ["1", "00" * 32, "", "", [], "20000000", "207fffff", "64b3f3ec", False],
        }
    )
    submit = json.dumps({"id": 1, "method": "mining.submit", "params": ["w", "2", "00000000", "64b3f3ec", "00000000"]})
    with pytest.raises(ValueError, match="job"):
        verify_from_wire(notify, "", submit, None, 1)
    with pytest.raises(ValueError):
        verify_from_wire(submit, "", submit, None, 1)
    bad_nonce = json.dumps(
        {"id": 1, "method": "mining.submit", "params": ["w", "1", "00000000", "64b3f3ec", "0x000000"]}
    )
    with pytest.raises(ValueError, match="nonce"):
        verify_from_wire(notify, "", bad_nonce, None, 1)


def test_notify_prevhash_vectors(vectors: dict) -> None:
    for case in vectors["notify_prevhash_encoding"]["examples"]:
        internal = display_to_internal(case["gbt_previousblockhash"])
        assert notify_prevhash_to_internal(case["notify_prevhash"]) == internal
        assert internal_to_notify_prevhash(internal) == case["notify_prevhash"]


def test_version_rolling_vectors(vectors: dict) -> None:
    for case in vectors["version_rolling"]["cases"]:
        if case["header_version"] is None:
            continue
        job = CheckerJob(b"", b"", [], int(case["job_version"], 16), bytes(32), 0x207FFFFF)
        rolled = job.rolled_version(int(case["version_bits"], 16), int(case["mask"], 16))
        assert f"{rolled:08x}" == case["header_version"]
