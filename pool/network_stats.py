"""Network hashrate concentration: who mined the node's last N blocks.

``NetworkTracker`` keeps a ``pool.attribution.NetworkWindow`` of the last
``[concentration] network_window`` blocks (default 1008, about a week),
attributed with mempool's rules over a ``pools-v2.json`` table, and exports the
per-pool block counts and the concentration figures through ``PoolMetrics``.

RPC use is deliberately light: on start it reads the window once
(``getblockhash`` + ``getblock <hash> 0`` per height), then, on each new tip
(the pool's job broadcast wakes it, and a slow poll backs that up), only the
heights it has not seen.  ``getblock`` verbosity 0 is used rather than 2:
the raw block is one JSON string, and only the coinbase transaction is
parsed from it, where verbosity 2 would decode every transaction of a
mainnet block into JSON (about 10x the bytes) just to read the first.

Reorgs: a block is added only if its ``previousblockhash`` is the hash held
for the height below; otherwise the held tip is dropped and the walk back
continues until the chains agree, then the new branch is read forward.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from .attribution import (
    Attribution,
    NetworkWindow,
    PoolTable,
    UnknownPolicy,
    attribute_coinbase,
)
from .bitcoin.block import deser_header
from .bitcoin.serialize import deser_compact_size, internal_to_display
from .bitcoin.tx import deser_tx
from .concentration import ConcentrationReport, Guideline
from .metrics import RPC, PoolMetrics
from .node import NodeError, NodeUnavailable

log = logging.getLogger(__name__)

UNKNOWN_POOL_LABEL = "unknown"
"""``pool`` label of unattributed blocks in the per-pool gauges (summed, to bound cardinality)."""

POLL_INTERVAL = 60.0
"""Seconds between tip checks when no new-tip notification arrives (a backstop, not the trigger)."""

PUBLISH_EVERY = 100
"""During the initial read, publish partial figures every this many blocks."""

EMBIT_NETWORKS = {
    "mainnet": "main",
    "testnet": "test",
    "testnet4": "test",
    "signet": "signet",
    "regtest": "regtest",
}
"""Pool network names to embit's, for decoding coinbase output addresses."""


@dataclass(frozen=True)
class BlockInfo:
    """What attribution needs from one block."""

    height: int
    hash: str
    """Display hex."""
    prevhash: str
    """Display hex."""
    attribution: Attribution


def parse_block(raw: bytes, table: PoolTable, *, height: int, block_hash: str, network: str) -> BlockInfo:
    """Attribute a raw block from its header and coinbase only (the rest is not parsed)."""
    header = deser_header(raw[:80])
    _count, pos = deser_compact_size(raw, 80)
    coinbase, _end = deser_tx(raw, pos)
    attribution = attribute_coinbase(table, coinbase, block_id=block_hash, network=network)
    return BlockInfo(height, block_hash, internal_to_display(header.prev_hash), attribution)


async def fetch_block(node: RPC, height: int, table: PoolTable, *, network: str) -> BlockInfo:
    """Read and attribute the active chain's block at ``height`` (two RPCs)."""
    block_hash = await node.call("getblockhash", height)
    raw_hex = await node.call("getblock", block_hash, 0)
    return parse_block(bytes.fromhex(raw_hex), table, height=height, block_hash=block_hash, network=network)


def pool_label(attribution: Attribution) -> str:
    """The per-pool gauge label: the pool's name, or ``unknown`` for any unattributed block."""
    return UNKNOWN_POOL_LABEL if attribution.is_unknown else attribution.entity


class NetworkTracker:
    """The last ``size`` blocks of the node's chain, attributed, refreshed incrementally."""

    def __init__(
        self,
        node: RPC,
        table: PoolTable,
        *,
        size: int = 1008,
        unknown_policy: UnknownPolicy = "each",
        network: str = "mainnet",
        guideline: Guideline = "2010",
        metrics: PoolMetrics | None = None,
    ) -> None:
        if network not in EMBIT_NETWORKS:
            raise ValueError(f"unknown network {network!r}; use one of {sorted(EMBIT_NETWORKS)}")
        self.node = node
        self.table = table
        self.network = EMBIT_NETWORKS[network]
        self.guideline: Guideline = guideline
        self.metrics = metrics
        self.window = NetworkWindow(size, unknown_policy=unknown_policy)
        self._hashes: dict[int, str] = {}
        self._labels: dict[int, str] = {}
        self._wake = trio.Event()
        self.fetched = 0
        """Blocks read from the node so far (the tests check the refresh is incremental)."""

    # --- state -----------------------------------------------------------------------
    @property
    def tip(self) -> int | None:
        return self.window.tip

    def report(self) -> ConcentrationReport:
        """Concentration of the window's block counts (unknown policy applied)."""
        return self.window.report(guideline=self.guideline)

    def blocks_by_pool(self) -> dict[str, int]:
        """Blocks per pool label, unattributed ones summed as ``unknown``."""
        return dict(Counter(self._labels.values()))

    def counts(self) -> dict[str, int]:
        """Blocks per entity as the concentration figures count them."""
        return self.window.counts()

    def _drop_from(self, height: int) -> None:
        self.window.disconnect_from(height)
        for h in [h for h in self._hashes if h >= height]:
            del self._hashes[h]
            del self._labels[h]

    def _add(self, block: BlockInfo) -> None:
        self.window.add(block.height, block.attribution)
        self._hashes[block.height] = block.hash
        self._labels[block.height] = pool_label(block.attribution)
        oldest = block.height - self.window.size
        for h in [h for h in self._hashes if h <= oldest]:
            del self._hashes[h]
            del self._labels[h]

    # --- refreshing --------------------------------------------------------------------
    async def sync(self) -> int:
        """Bring the window to the node's tip; return how many blocks were read."""
        read = 0
        while True:
            best = int(await self.node.call("getblockcount"))
            # Walk back while our tip is not on the node's active chain.
            while self.window.tip is not None:
                tip = self.window.tip
                if tip <= best and self._hashes.get(tip) == await self.node.call("getblockhash", tip):
                    break
                log.info("network window: block %d left the active chain", tip)
                self._drop_from(tip)
            start = max(0, best - self.window.size + 1)
            if self.window.tip is not None and self.window.tip + 1 < start:
                self._drop_from(0)  # too far behind to extend: re-read the window
            first = start if self.window.tip is None else self.window.tip + 1
            diverged = False
            for height in range(first, best + 1):
                block = await fetch_block(self.node, height, self.table, network=self.network)
                read += 1
                self.fetched += 1
                below = self._hashes.get(height - 1)
                if below is not None and below != block.prevhash:
                    diverged = True  # a reorg while we were reading: walk back and retry
                    self._drop_from(height - 1)
                    break
                self._add(block)
                if read % PUBLISH_EVERY == 0:
                    self.publish()
            if not diverged:
                self.publish()
                return read

    def publish(self) -> None:
        """Export the current figures (no-op without metrics)."""
        if self.metrics is None:
            return
        self.metrics.publish_network(self.blocks_by_pool(), window_blocks=len(self.window), tip_height=self.window.tip)
        self.metrics.publish_concentration("network", self.report())

    def wake(self) -> None:
        """A new tip is known: refresh soon (cheap; safe to call from any trio task)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the window, then follow the tip until cancelled; node failures are retried."""
        task_status.started()
        delay = 1.0
        while True:
            try:
                read = await self.sync()
            except (NodeError, NodeUnavailable, ValueError) as exc:
                log.warning("network concentration: refresh failed, retrying in %.0fs: %s", delay, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, POLL_INTERVAL)
                continue
            delay = 1.0
            if read:
                log.debug("network window: read %d blocks, tip %s", read, self.window.tip)
            with trio.move_on_after(POLL_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()


async def read_network_window(
    node: RPC,
    table: PoolTable,
    *,
    size: int,
    unknown_policy: UnknownPolicy,
    network: str,
) -> Mapping[str, int]:
    """One-shot read of the window (for ``stope stats concentration --network``)."""
    tracker = NetworkTracker(node, table, size=size, unknown_policy=unknown_policy, network=network)
    await tracker.sync()
    return tracker.counts()
