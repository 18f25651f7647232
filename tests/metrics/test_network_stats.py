"""NetworkTracker: attribution of the node's last N blocks, incremental and reorg-safe."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest

from pool.attribution import PoolTable, load_pool_table
from pool.bitcoin.block import deser_header
from pool.bitcoin.script import address_to_script
from pool.bitcoin.serialize import internal_to_display
from pool.devnet.chain import DevnetChain, RPCError
from pool.devnet.rpc import DevnetRPC
from pool.metrics import PoolMetrics
from pool.network_stats import NetworkTracker, parse_block, read_network_window
from pool.node import NodeError

FOUNDRY = address_to_script("bc1qxhmdufsvnuaaaer4ynz88fspdsxq2h9e9cetdj", "mainnet")
ANTPOOL = address_to_script("12dRugNcdxK39288NjcDV4GX7rMsKCGn6B", "mainnet")
ANYONE = b"\x51"  # OP_TRUE: no address, so the block is unknown


class ChainRPC:
    """``NodeClient.call`` answered in-process by a devnet chain, counting calls."""

    def __init__(self, chain: DevnetChain) -> None:
        self.rpc = DevnetRPC(chain)
        self.calls: Counter[str] = Counter()
        self.before_getblock: list[Any] = []

    async def call(self, method: str, *params: Any) -> Any:
        self.calls[method] += 1
        if method == "getblock" and self.before_getblock:
            self.before_getblock.pop(0)()
        try:
            return self.rpc.call(method, list(params))
        except RPCError as exc:
            raise NodeError(exc.code, exc.message) from exc


@pytest.fixture(scope="module")
def table(shared: Path) -> PoolTable:
    return load_pool_table(shared / "data" / "pools-v2.json")


def easy_chain() -> DevnetChain:
    return DevnetChain(difficulty=Fraction(1, 10**9), synthetic_txs=1)


async def read_fresh(chain: DevnetChain, table: PoolTable, size: int) -> NetworkTracker:
    tracker = NetworkTracker(ChainRPC(chain), table, size=size, network="mainnet")
    await tracker.sync()
    return tracker


@pytest.mark.parametrize(
    ("name", "pool"),
    [("block413567.raw", "F2Pool"), ("block574200.blk", "BTC.com"), ("block277647.raw", "BTC Guild")],
)
def test_parse_real_mainnet_blocks(shared: Path, table: PoolTable, name: str, pool: str) -> None:
    raw = (shared / "vectors" / name).read_bytes()
    info = parse_block(raw, table, height=1, block_hash="ab" * 32, network="main")
    assert info.attribution.entity == pool
    assert info.prevhash == internal_to_display(deser_header(raw[:80]).prev_hash)


async def test_initial_read_fills_the_window_and_attributes(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(4, ANYONE)
    chain.generate(3, FOUNDRY)
    chain.generate(2, ANTPOOL)  # heights 1..9 beside genesis
    rpc = ChainRPC(chain)
    tracker = NetworkTracker(rpc, table, size=6, network="mainnet")
    assert await tracker.sync() == 6
    assert tracker.tip == 9 and len(tracker.window) == 6
    assert rpc.calls["getblock"] == 6
    unknown = [e for e in tracker.counts() if e.startswith("unknown:")]
    assert len(unknown) == 1  # height 4: each unknown block is its own entity
    assert tracker.counts()["Foundry USA"] == 3 and tracker.counts()["AntPool"] == 2
    assert tracker.blocks_by_pool() == {"unknown": 1, "Foundry USA": 3, "AntPool": 2}
    report = tracker.report()
    assert report.nakamoto == 2 and report.top1 == Fraction(1, 2)


async def test_refresh_reads_only_new_blocks(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(5, FOUNDRY)
    rpc = ChainRPC(chain)
    tracker = NetworkTracker(rpc, table, size=1008, network="mainnet")
    assert await tracker.sync() == 6  # genesis + 5
    chain.generate(2, ANTPOOL)
    assert await tracker.sync() == 2
    assert await tracker.sync() == 0
    assert rpc.calls["getblock"] == 8
    assert tracker.counts()["AntPool"] == 2


async def test_far_behind_rereads_just_the_window(table: PoolTable) -> None:
    chain = easy_chain()
    tracker = NetworkTracker(ChainRPC(chain), table, size=4, network="mainnet")
    await tracker.sync()
    chain.generate(20, FOUNDRY)
    assert await tracker.sync() == 4
    assert tracker.window.blocks()[0][0] == 17
    assert tracker.counts() == {"Foundry USA": 4}


async def test_reorg_replaces_the_stale_branch(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(3, ANYONE)
    peer = chain.spawn_peer()
    chain.generate(2, ANTPOOL)  # our node's branch: heights 4, 5
    peer.generate(3, FOUNDRY)  # a longer competing branch: heights 4, 5, 6
    tracker = NetworkTracker(ChainRPC(chain), table, size=10, network="mainnet")
    await tracker.sync()
    assert tracker.counts().get("AntPool") == 2
    for h in peer.active[4:]:
        assert chain.submit_block(peer.blocks[h].block.serialize()) in (None, "inconclusive")
    assert chain.tip.hash == peer.tip.hash
    assert await tracker.sync() == 3
    fresh = await read_fresh(chain, table, 10)
    assert tracker.window.blocks() == fresh.window.blocks()
    assert tracker.counts() == fresh.counts()
    assert "AntPool" not in tracker.counts()


async def test_reorg_while_reading_is_caught_by_the_prevhash_link(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(3, ANYONE)
    peer = chain.spawn_peer()
    chain.generate(3, ANTPOOL)
    peer.generate(4, FOUNDRY)
    rpc = ChainRPC(chain)

    def reorg() -> None:
        for h in peer.active[4:]:
            chain.submit_block(peer.blocks[h].block.serialize())

    # Let heights 0..4 be read from the old branch, then switch under the tracker.
    rpc.before_getblock = [lambda: None] * 5 + [reorg]
    tracker = NetworkTracker(rpc, table, size=20, network="mainnet")
    await tracker.sync()
    # 0..4 read; the old 5 (its hash was asked before the switch) still links;
    # the new 6 does not link to it, so 5 is dropped, the tip check drops the
    # old 4, and 4..7 are read again from the new branch.
    assert rpc.calls["getblock"] == 5 + 2 + 4
    fresh = await read_fresh(chain, table, 20)
    assert tracker.window.blocks() == fresh.window.blocks()
    assert tracker.counts()["Foundry USA"] == 4 and "AntPool" not in tracker.counts()


async def test_publishes_per_pool_gauges_and_concentration(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(3, FOUNDRY)
    chain.generate(1, ANTPOOL)
    metrics = PoolMetrics()
    tracker = NetworkTracker(ChainRPC(chain), table, size=5, network="mainnet", metrics=metrics)
    await tracker.sync()
    text = generate_latest(metrics.registry).decode()
    assert 'stope_network_pool_blocks{pool="Foundry USA"} 3.0' in text
    assert 'stope_network_pool_share{pool="unknown"} 0.2' in text
    assert "stope_network_window_blocks 5.0" in text
    assert "stope_network_window_tip_height 4.0" in text
    assert 'stope_concentration_top_share{k="1",view="network"} 0.6' in text
    assert 'stope_concentration_above_threshold{view="network"} 1.0' in text  # 60 % > 40 %
    assert 'stope_concentration_warnings_total{view="network"} 1.0' in text
    report = metrics.report("network")
    assert report is not None and report.nakamoto == 1


async def test_run_follows_the_tip_when_woken(table: PoolTable) -> None:
    chain = easy_chain()
    rpc = ChainRPC(chain)
    tracker = NetworkTracker(rpc, table, size=100, network="mainnet")
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.run)
        with trio.fail_after(10):
            while tracker.tip != 0:
                await trio.sleep(0.01)
            chain.generate(2, FOUNDRY)
            tracker.wake()
            while tracker.tip != 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert tracker.counts()["Foundry USA"] == 2


async def test_read_network_window_applies_the_unknown_policy(table: PoolTable) -> None:
    chain = easy_chain()
    chain.generate(3, ANYONE)
    chain.generate(1, FOUNDRY)
    counts = await read_network_window(ChainRPC(chain), table, size=10, unknown_policy="one", network="mainnet")
    assert counts == {"unknown": 4, "Foundry USA": 1}


def test_unknown_network_is_refused(table: PoolTable) -> None:
    with pytest.raises(ValueError):
        NetworkTracker(ChainRPC(easy_chain()), table, network="litecoin")
