"""Block submission: a share that meets the network target becomes a block."""

from __future__ import annotations

import logging

import trio

from .bitcoin.serialize import internal_to_display
from .jobs import Job
from .metrics import PoolMetrics
from .node import NodeClient, NodeError, NodeUnavailable
from .shares import Verdict
from .storage.records import BlockRecord
from .storage.writer import ShareWriter, write_block

log = logging.getLogger(__name__)


class BlockSubmitter:
    def __init__(self, node: NodeClient, metrics: PoolMetrics, writer: ShareWriter) -> None:
        self.node = node
        self.metrics = metrics
        self.writer = writer
        self.blocks: list[BlockRecord] = []

    async def submit(self, job: Job, verdict: Verdict, extranonce: bytes, ntime: int, nonce: int, address: str, worker: str) -> BlockRecord:
        block_hash = internal_to_display(verdict.block_hash)
        self.metrics.blocks_found.inc()
        log.warning("block candidate %s at height %d from %s", block_hash, job.height, f"{address}.{worker}")
        raw = job.block(extranonce, ntime, nonce, int.from_bytes(verdict.header[:4], "little"))
        try:
            result = await self.node.submitblock(raw.hex())
        except NodeError as exc:
            result = f"rpc-error: {exc.message}"
        except NodeUnavailable as exc:
            result = "node-unavailable"
            log.error("block %s could not be submitted: %s", block_hash, exc)
        label = "accepted" if result is None else str(result)
        self.metrics.blocks_submitted.labels(label).inc()
        status = "pending" if result in (None, "duplicate", "inconclusive") else "rejected"
        log.warning("block %s submitted: %s", block_hash, label)
        record = BlockRecord(
            height=job.height,
            hash=block_hash,
            prevhash=internal_to_display(job.prevhash),
            address=address,
            worker=worker,
            reward=job.coinbase_value,
            status=status,
            submit_result=label,
        )
        self.blocks.append(record)
        await trio.to_thread.run_sync(write_block, self.writer.engine, self.writer.directory, record)
        return record


