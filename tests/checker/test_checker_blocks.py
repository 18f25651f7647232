"""Real mainnet blocks validate through the checker: coinbase + branch + header -> the known hash.

The real coinbase is cut into coinb1 / extranonce1 / extranonce2 / coinb2 at
every point inside its scriptSig, as a pool's job would have it, and every
cut must reproduce the block's hash and meet the block's own nBits on both
backends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pool.bitcoin.block import deser_header
from pool.bitcoin.serialize import deser_compact_size, display_to_internal, hash_to_int, sha256d
from pool.bitcoin.target import bits_to_target
from pool.bitcoin.tx import deser_tx, ser_tx
from pool.checker import Checker, CheckerJob, Share, ShareBatch, check_batch_scalar, check_share_scalar

BLOCK_FILES = ("block277647.raw", "block413567.raw", "block574200.blk")
SCRIPT_SIG_START = 4 + 1 + 36 + 1  # version, input count, prevout, 1-byte script length (scriptSig <= 100)


def _coinbase_and_header(raw: bytes) -> tuple[bytes, bytes]:
    """Non-witness coinbase serialisation (what the txid hashes) and the 80-byte header."""
    _, pos = deser_compact_size(raw, 80)
    tx, _ = deser_tx(raw, pos)
    return ser_tx(tx, with_witness=False), raw[:80]


def _splits(coinbase: bytes, script_len: int, e1: int, e2: int) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """Every (coinb1, en1, en2, coinb2) cut with the extranonce wholly inside the scriptSig."""
    out = []
    for start in range(SCRIPT_SIG_START, SCRIPT_SIG_START + script_len - (e1 + e2) + 1):
        mid = start + e1
        end = mid + e2
        out.append((coinbase[:start], coinbase[start:mid], coinbase[mid:end], coinbase[end:]))
    return out


def _cases(shared: Path, vectors: dict) -> list[tuple[dict, bytes, bytes]]:
    by_file = {b["file"]: b for b in vectors["full_blocks"]}
    cases = []
    for name in BLOCK_FILES:
        meta = by_file[name]
        coinbase, header = _coinbase_and_header((shared / "vectors" / name).read_bytes())
        assert sha256d(coinbase)[::-1].hex() == meta["coinbase_txid"]
        cases.append((meta, coinbase, header))
    return cases


def _job_and_shares(
    meta: dict, coinbase: bytes, header: bytes, e1: int, e2: int
) -> tuple[list[CheckerJob], list[Share]]:
    h = deser_header(header)
    script_len = coinbase[SCRIPT_SIG_START - 1]
    assert coinbase[SCRIPT_SIG_START : SCRIPT_SIG_START + script_len].hex() == meta["coinbase_scriptsig_hex"]
    branch = [bytes.fromhex(x) for x in meta["coinbase_merkle_branch_internal_hex"]]
    jobs, shares = [], []
    for coinb1, en1, en2, coinb2 in _splits(coinbase, script_len, e1, e2):
        jobs.append(CheckerJob(coinb1, coinb2, branch, h.version, display_to_internal(meta["prevhash"]), h.bits))
        # version rolling negotiated with the BIP320 mask: the miner sends the job's own bits back
        shares.append(
            Share(len(jobs) - 1, en1, en2, h.time, h.nonce, h.version & 0x1FFFE000, 0x1FFFE000, bits_to_target(h.bits))
        )
    return jobs, shares


@pytest.mark.parametrize("e2", [4, 8])
def test_real_blocks_through_both_backends(shared: Path, vectors: dict, vector_checker: Checker, e2: int) -> None:
    for meta, coinbase, header in _cases(shared, vectors):
        jobs, shares = _job_and_shares(meta, coinbase, header, 4, e2)
        assert len(shares) > 20
        batch = ShareBatch.from_shares(shares)
        want_hash = display_to_internal(meta["block_hash"])
        for result in (vector_checker.check(batch, jobs), check_batch_scalar(batch, jobs)):
            for i in range(len(shares)):
                assert result.block_hash[i].tobytes() == want_hash, (meta["file"], i)
            assert result.meets_network.all(), meta["file"]
            assert result.meets_share.all()


def test_real_block_header_and_root_exact(shared: Path, vectors: dict) -> None:
    """The reference rebuilds the exact header bytes (so the merkle root too)."""
    for meta, coinbase, header in _cases(shared, vectors):
        jobs, shares = _job_and_shares(meta, coinbase, header, 4, 8)
        s = shares[len(shares) // 2]
        verdict = check_share_scalar(
            jobs[s.job_index], s.extranonce1, s.extranonce2, s.ntime, s.nonce, s.version_bits, s.mask, s.share_target
        )
        assert verdict.header == header == bytes.fromhex(meta["header_hex"])
        assert verdict.header[36:68][::-1].hex() == meta["merkle_root"]
        assert verdict.display_hash == meta["block_hash"]
        assert verdict.meets_network


def test_real_block_share_target_boundary(shared: Path, vectors: dict, vector_checker: Checker) -> None:
    """At the real hash: target = hash accepts, target = hash - 1 rejects; both backends."""
    for meta, coinbase, header in _cases(shared, vectors):
        jobs, shares = _job_and_shares(meta, coinbase, header, 4, 4)
        value = hash_to_int(display_to_internal(meta["block_hash"]))
        bounded = [s._replace(share_target=value - (i % 2)) for i, s in enumerate(shares)]
        batch = ShareBatch.from_shares(bounded)
        for result in (vector_checker.check(batch, jobs), check_batch_scalar(batch, jobs)):
            assert [bool(x) for x in result.meets_share] == [i % 2 == 0 for i in range(len(bounded))]


def test_real_block_one_bit_off_misses(shared: Path, vectors: dict, vector_checker: Checker) -> None:
    """Flip one extranonce bit (or nonce) and the hash no longer meets the block's target."""
    meta, coinbase, header = _cases(shared, vectors)[1]
    jobs, shares = _job_and_shares(meta, coinbase, header, 4, 8)
    s = shares[0]
    bad = [
        s._replace(extranonce2=bytes([s.extranonce2[0] ^ 1]) + s.extranonce2[1:]),
        s._replace(nonce=s.nonce ^ 1),
        s._replace(version_bits=s.version_bits ^ 0x2000),
        s._replace(ntime=s.ntime + 1),
    ]
    batch = ShareBatch.from_shares(bad)
    result = vector_checker.check(batch, jobs)
    assert result.equals(check_batch_scalar(batch, jobs))
    assert not result.meets_network.any()


def test_genesis_block_zero_step_branch(vectors: dict, vector_checker: Checker) -> None:
    """Genesis: a single transaction, so the merkle root is the coinbase txid (0 branch steps)."""
    genesis = vectors["block_headers"][0]
    raw = bytes.fromhex(genesis["raw_block_hex"])
    coinbase, header = _coinbase_and_header(raw)
    h = deser_header(header)
    script_len = coinbase[SCRIPT_SIG_START - 1]
    shares, jobs = [], []
    for coinb1, en1, en2, coinb2 in _splits(coinbase, script_len, 4, 4):
        jobs.append(CheckerJob(coinb1, coinb2, [], h.version, h.prev_hash, h.bits))
        shares.append(Share(len(jobs) - 1, en1, en2, h.time, h.nonce, 0, 0, bits_to_target(h.bits)))
    batch = ShareBatch.from_shares(shares)
    want = display_to_internal(genesis["hash"])
    for result in (vector_checker.check(batch, jobs), check_batch_scalar(batch, jobs)):
        assert all(result.block_hash[i].tobytes() == want for i in range(len(shares)))
        assert result.meets_network.all()
