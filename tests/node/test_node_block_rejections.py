"""Corrupted blocks through the pool's own submit path: the devnet refuses each with
bitcoind's reason, and the pool writes exactly that reason to the blocks table.

Every block starts as a real pool job (``build_job`` from a devnet template,
mined at the regtest proof-of-work limit so a nonce takes a few hashes); one
field is then corrupted, the proof of work redone where the corruption would
otherwise hide behind ``high-hash``, and the bytes go through
``BlockSubmitter.submit_raw`` over JSON-RPC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import trio

from pool.bitcoin.block import Block, deser_block
from pool.bitcoin.serialize import internal_to_display, sha256d
from pool.bitcoin.target import bits_to_target
from pool.bitcoin.tx import TxOut
from pool.blocks import BlockSubmitter
from pool.devnet.chain import DevnetChain
from pool.devnet.node import DevnetNode
from pool.jobs import Job
from pool.metrics import PoolMetrics
from pool.node import NodeClient, NodePool
from tests.node.helpers import (
    POOL_ADDRESS,
    block_rows,
    easy_chain,
    job_from,
    mine_job,
    reseal,
    start_block_store,
)


def _replace_coinbase(block: Block, **changes: Any) -> Block:
    cb = block.txs[0]
    inp = dataclasses.replace(cb.inputs[0], **{k: v for k, v in changes.items() if k in ("script_sig", "sequence", "witness")})
    tx_changes = {k: v for k, v in changes.items() if k in ("outputs", "locktime")}
    return Block(block.header, (dataclasses.replace(cb, inputs=(inp,), **tx_changes), *block.txs[1:]))


def _valid(chain: DevnetChain) -> tuple[Job, Block]:
    job = job_from(chain.block_template())
    return job, deser_block(mine_job(job))


# Each case: (bitcoind's answer, how to make the block from the chain's state).
Case = Callable[[DevnetChain], tuple[Job, bytes]]


def high_hash(chain: DevnetChain) -> tuple[Job, bytes]:
    job = job_from(chain.block_template())
    return job, mine_job(job, valid=False)


def bad_merkle_root(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    root = bytearray(block.header.merkle_root)
    root[0] ^= 1
    return job, reseal(block, job.network_target, recompute_root=False, merkle_root=bytes(root))


def bad_cb_height(chain: DevnetChain) -> tuple[Job, bytes]:
    template = chain.block_template()
    job = job_from({**template, "height": template["height"] + 1})
    return job, mine_job(job)


def bad_cb_amount(chain: DevnetChain) -> tuple[Job, bytes]:
    template = chain.block_template()
    job = job_from({**template, "coinbasevalue": template["coinbasevalue"] + 1})
    return job, mine_job(job)


def bad_witness_commitment(chain: DevnetChain) -> tuple[Job, bytes]:
    template = chain.block_template()
    commitment = bytearray.fromhex(template["default_witness_commitment"])
    commitment[-1] ^= 1
    job = job_from({**template, "default_witness_commitment": commitment.hex()})
    return job, mine_job(job)


def bad_witness_nonce_size(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    # A 31-byte reserved value (Core only fills in a missing one, never fixes a wrong one).
    return job, reseal(_replace_coinbase(block, witness=(b"\x00" * 31,)), job.network_target)


def unexpected_witness(chain: DevnetChain) -> tuple[Job, bytes]:
    template = dict(chain.block_template())
    del template["default_witness_commitment"]
    job = job_from(template)
    assert not job.coinbase.has_witness_commitment
    return job, mine_job(job)


def time_too_old(chain: DevnetChain) -> tuple[Job, bytes]:
    job = job_from(chain.block_template())
    return job, mine_job(job, ntime=job.mintime - 1)


def time_too_new(chain: DevnetChain) -> tuple[Job, bytes]:
    job = job_from(chain.block_template())
    return job, mine_job(job, ntime=int(chain.clock()) + 7200 + 600)


def bad_cb_length(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    script = block.txs[0].inputs[0].script_sig
    return job, reseal(_replace_coinbase(block, script_sig=script + b"\x00" * (101 - len(script))), job.network_target)


def bad_diffbits(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    bits = job.bits - 1  # a slightly harder, still valid, but wrong target
    return job, reseal(block, bits_to_target(bits), recompute_root=False, bits=bits)


def bad_version(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    return job, reseal(block, job.network_target, recompute_root=False, version=2)


def prev_blk_not_found(chain: DevnetChain) -> tuple[Job, bytes]:
    template = chain.block_template()
    job = job_from({**template, "previousblockhash": sha256d(b"nowhere").hex()})
    return job, mine_job(job)


def inconclusive(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    chain.generate(1)  # someone else's block takes the height first
    return job, block.serialize()


def bad_blk_sigops(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    outputs = (TxOut(0, b"\xac" * 20_001), *block.txs[0].outputs)
    return job, reseal(_replace_coinbase(block, outputs=outputs), job.network_target)


def bad_blk_length(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    outputs = (TxOut(0, b"\x6a" + b"\x00" * 1_000_000), *block.txs[0].outputs)
    return job, reseal(_replace_coinbase(block, outputs=outputs), job.network_target)


def bad_txns_nonfinal(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    return job, reseal(_replace_coinbase(block, sequence=0xFFFFFFFE, locktime=0xFFFFFFFF), job.network_target)


def bad_cb_missing(chain: DevnetChain) -> tuple[Job, bytes]:
    job, block = _valid(chain)
    return job, reseal(Block(block.header, block.txs[1:]), job.network_target)


CASES: list[tuple[str, Case]] = [
    ("high-hash", high_hash),
    ("bad-txnmrklroot", bad_merkle_root),
    ("bad-cb-height", bad_cb_height),
    ("bad-cb-amount", bad_cb_amount),
    ("bad-witness-merkle-match", bad_witness_commitment),
    ("bad-witness-nonce-size", bad_witness_nonce_size),
    ("unexpected-witness", unexpected_witness),
    ("time-too-old", time_too_old),
    ("time-too-new", time_too_new),
    ("bad-cb-length", bad_cb_length),
    ("bad-diffbits", bad_diffbits),
    ("bad-version(0x00000002)", bad_version),
    ("prev-blk-not-found", prev_blk_not_found),
    ("inconclusive", inconclusive),
    ("bad-blk-sigops", bad_blk_sigops),
    ("bad-blk-length", bad_blk_length),
    ("bad-txns-nonfinal", bad_txns_nonfinal),
    ("bad-cb-missing", bad_cb_missing),
]


async def _submit(submitter: BlockSubmitter, job: Job, raw: bytes):
    return await submitter.submit_raw(
        raw, height=job.height, prevhash=internal_to_display(job.prevhash), reward=job.coinbase_value,
        address=POOL_ADDRESS, worker="rig",
    )


async def test_devnet_refuses_each_corruption_and_the_pool_records_why(tmp_path) -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        writer, engine = await start_block_store(nursery, tmp_path)
        node = await nursery.start(DevnetNode(chain).run)
        nodes = NodePool([NodeClient(node.url, timeout=5)])
        submitter = BlockSubmitter(nodes, PoolMetrics(), writer)

        expected: dict[str, tuple[str, str]] = {}
        answers: dict[str, str] = {}
        for reason, make in CASES:
            job, raw = make(chain)
            submission = await _submit(submitter, job, raw)
            answers[reason] = submission.record.submit_result or ""
            status = "orphaned" if reason == "inconclusive" else "rejected"
            expected[submission.record.hash] = (status, reason)

        # A good block is accepted and confirmed in the chain; sending it again is a duplicate.
        job = job_from(chain.block_template())
        raw = mine_job(job)
        accepted = await _submit(submitter, job, raw)
        assert accepted.record.submit_result == "accepted"
        assert accepted.in_chain is True and accepted.record.status == "pending"
        again = await _submit(submitter, job, raw)
        assert again.record.submit_result == "duplicate" and again.record.status == "pending"
        expected[accepted.record.hash] = ("pending", "duplicate")  # the row holds the latest answer

        # A block the node already found invalid is remembered as such.
        job, raw = bad_cb_amount(chain)
        first = await _submit(submitter, job, raw)
        second = await _submit(submitter, job, raw)
        assert (first.record.submit_result, second.record.submit_result) == ("bad-cb-amount", "duplicate-invalid")
        expected[first.record.hash] = ("rejected", "duplicate-invalid")

        # Bytes that do not parse come back as bitcoind's RPC error.
        garbage = b"\x00" * 80 + b"\xff"
        decode = await submitter.submit_raw(garbage, height=1, prevhash="00" * 32, reward=0, address=POOL_ADDRESS, worker="rig")
        assert decode.record.submit_result == "rpc-error: Block decode failed"
        expected[decode.record.hash] = ("rejected", "rpc-error: Block decode failed")

        await writer.drained()
        rows = block_rows(engine)
        nursery.cancel_scope.cancel()
    engine.dispose()

    assert answers == {reason: reason for reason, _ in CASES}
    assert rows == expected


async def test_no_node_reachable_is_recorded(tmp_path) -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        writer, engine = await start_block_store(nursery, tmp_path)
        node = await nursery.start(DevnetNode(chain).run)
        url = node.url
        node.stop()
        await node.stopped()
        metrics = PoolMetrics()
        submitter = BlockSubmitter(NodePool([NodeClient(url, timeout=1)]), metrics, writer, retry_delays=(0.01, 0.02))
        job, block = _valid(chain)
        submission = await _submit(submitter, job, block.serialize())
        assert metrics.block_submit_retries._value.get() == 2  # sent three times in all
        await writer.drained()
        rows = block_rows(engine)
        nursery.cancel_scope.cancel()
    engine.dispose()
    assert submission.record.submit_result == "node-unavailable"
    assert submission.in_chain is None
    assert [r.label for r in submission.results] == ["node-unavailable"]
    assert rows == {submission.record.hash: ("rejected", "node-unavailable")}
    assert chain.height == 0


async def test_a_block_that_reached_no_node_is_sent_again_until_one_answers(tmp_path) -> None:
    """The only node restarts just as the pool finds a block: the block still gets in."""
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        writer, engine = await start_block_store(nursery, tmp_path)
        node = DevnetNode(chain)
        await nursery.start(node.run)
        url = node.url
        node.stop()
        await node.stopped()
        submitter = BlockSubmitter(NodePool([NodeClient(url, timeout=1)]), PoolMetrics(), writer, retry_delays=(0.2,) * 20)
        job, block = _valid(chain)

        async def restart_later() -> None:
            await trio.sleep(0.5)
            await nursery.start(node.run)  # the same port again

        nursery.start_soon(restart_later)
        submission = await _submit(submitter, job, block.serialize())
        await writer.drained()
        rows = block_rows(engine)
        nursery.cancel_scope.cancel()
    engine.dispose()
    assert submission.record.submit_result == "accepted"
    assert submission.in_chain is True and submission.record.status == "pending"
    assert chain.height == 1 and internal_to_display(chain.tip.hash) == submission.record.hash
    assert rows == {submission.record.hash: ("pending", "accepted")}
