"""Block submission: a share that meets the network target becomes a block.

The block goes to every configured node at once (any one of them may be the
one that gets it to the network), then ``getblockhash(height)`` tells
whether it is in the active chain. The blocks table gets the decisive
answer:

* ``submit_result``: ``accepted`` if any node took it (bitcoind's null),
  else ``duplicate`` / ``inconclusive`` if any node said so, else the first
  node's rejection reason in bitcoind's words (``high-hash``,
  ``bad-cb-amount``, ...), else ``rpc-error: ...`` / ``node-unavailable``.
* ``status``: ``pending`` (awaiting maturity) when a node took it or knows
  it and it is (or may be) in the chain, ``orphaned`` when taken but another
  block holds that height, ``rejected`` otherwise.

Every node's own answer stays in ``BlockSubmission.results`` and the log.

A block that reached no node at all (every node down or unreachable) is sent
again with back-off (``retry_delays``, about a minute in all by default),
until some node answers: a found block is worth more than anything else the
pool does, and a node restart must not cost it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import trio

from .bitcoin.serialize import internal_to_display, sha256d
from .jobs import Job
from .metrics import PoolMetrics
from .node import NodePool, NodeSubmitResult
from .shares import Verdict
from .storage.records import BlockRecord
from .storage.writer import ShareWriter, SpoolError, write_block

log = logging.getLogger(__name__)

#: Seconds between sending a block again while no node answers (about a minute in all).
RETRY_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)

# bitcoind answers that mean the node has the block (and found it valid, or
# could not decide yet): the block is not refused.
_KNOWN = ("duplicate", "inconclusive")


@dataclass(frozen=True)
class BlockSubmission:
    """What happened to one found block, node by node."""

    record: BlockRecord
    results: tuple[NodeSubmitResult, ...]
    in_chain: bool | None  # None: no node answered getblockhash


def _unreachable(result: NodeSubmitResult) -> bool:
    return result.error is not None and not result.error.startswith("rpc-error")


def decisive_result(results: list[NodeSubmitResult] | tuple[NodeSubmitResult, ...]) -> str:
    """The one answer that describes the block (see the module docstring)."""
    answered = [r for r in results if r.answered]
    if any(r.result is None for r in answered):
        return "accepted"
    for known in _KNOWN:
        if any(r.result == known for r in answered):
            return known
    if answered:
        return str(answered[0].result)
    failures = [r.error for r in results if r.error]
    rpc_errors = [e for e in failures if e.startswith("rpc-error")]
    return rpc_errors[0] if rpc_errors else "node-unavailable"


def block_status(result: str, in_chain: bool | None) -> str:
    if in_chain:
        return "pending"
    if result == "accepted" or result in _KNOWN:
        return "orphaned" if in_chain is False else "pending"
    return "rejected"


class BlockSubmitter:
    """Submits found blocks; ``in_flight`` wraps each submission (``JobManager.own_block_in_flight``)."""

    def __init__(
        self,
        nodes: NodePool,
        metrics: PoolMetrics,
        writer: ShareWriter,
        *,
        in_flight: Callable[[], AbstractContextManager[None]] = nullcontext,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.nodes = nodes
        self.retry_delays = tuple(retry_delays)
        self.metrics = metrics
        self.writer = writer
        self.in_flight = in_flight
        self.blocks: list[BlockRecord] = []
        self.submissions: list[BlockSubmission] = []

    async def submit(self, job: Job, verdict: Verdict, extranonce: bytes, ntime: int, nonce: int, address: str, worker: str) -> BlockRecord:
        """Build the block for a winning share, submit it everywhere and record the outcome."""
        self.metrics.blocks_found.inc()
        log.warning(
            "block candidate %s at height %d from %s",
            internal_to_display(verdict.block_hash), job.height, f"{address}.{worker}",
        )
        raw = job.block(extranonce, ntime, nonce, int.from_bytes(verdict.header[:4], "little"))
        with self.in_flight():
            submission = await self.submit_raw(
                raw,
                height=job.height,
                prevhash=internal_to_display(job.prevhash),
                reward=job.coinbase_value,
                address=address,
                worker=worker,
            )
        return submission.record

    async def submit_raw(self, raw: bytes, *, height: int, prevhash: str, reward: int, address: str, worker: str) -> BlockSubmission:
        """Submit block bytes to every node, confirm, and write the blocks row.

        Shielded from cancellation: a pool shutting down (or a caller giving
        up) must not drop a found block half-way; every step has a deadline.
        """
        with trio.CancelScope(shield=True):
            return await self._submit_raw(raw, height, prevhash, reward, address, worker)

    async def _submit_raw(self, raw: bytes, height: int, prevhash: str, reward: int, address: str, worker: str) -> BlockSubmission:
        block_hash = internal_to_display(sha256d(raw[:80]))
        block_hex = raw.hex()
        results = tuple(await self.nodes.submit_block(block_hex))
        for delay in self.retry_delays:
            if not all(_unreachable(r) for r in results):
                break  # some node answered (an RPC error is an answer: sending again will not change it)
            self.metrics.block_submit_retries.inc()
            log.error(
                "block %s at height %d reached no node (%s); sending it again in %.2gs",
                block_hash, height, "; ".join(r.label for r in results), delay,
            )
            await trio.sleep(delay)
            results = tuple(await self.nodes.submit_block(block_hex))
        for r in results:
            log.warning("block %s on %s: %s", block_hash, r.node, r.label)
        result = decisive_result(results)
        in_chain = await self.nodes.block_in_chain(height, block_hash)
        status = block_status(result, in_chain)
        self.metrics.blocks_submitted.labels(result.partition(":")[0]).inc()
        log.warning("block %s submitted: %s (in chain: %s, status %s)", block_hash, result, in_chain, status)
        record = BlockRecord(
            height=height,
            hash=block_hash,
            prevhash=prevhash,
            address=address,
            worker=worker,
            reward=reward,
            status=status,
            submit_result=result[:128],  # the column's width
        )
        submission = BlockSubmission(record, results, in_chain)
        self.blocks.append(record)
        self.submissions.append(submission)
        try:
            await self.writer.record_block(record)
        except SpoolError as exc:
            # A found block must not be lost to a full or failing spool: write it directly.
            log.error("block %s not spooled (%s); writing it to the database directly", block_hash, exc)
            await trio.to_thread.run_sync(write_block, self.writer.engine, self.writer.directory, record)
        return submission
