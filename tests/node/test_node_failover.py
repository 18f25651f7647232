"""Several nodes: template source selection, fail-over, fail-back, submit to all.

Two devnet nodes are peers (``spawn_peer`` + ``DevnetRelay``): separate chains
that relay blocks and transactions, each behind its own RPC server that can
be stopped, wedged or cut off from the other on its own.
"""

from __future__ import annotations

import trio

from pool.bitcoin.serialize import internal_to_display
from pool.blocks import decisive_result
from pool.devnet.chain import DevnetRelay
from pool.devnet.node import DevnetNode
from pool.node import NodeClient, NodePool
from tests.node.helpers import easy_chain, job_from, mine_job, start_jobs, wait_until


async def test_fail_over_to_a_node_ahead_and_back_when_the_first_catches_up() -> None:
    a = easy_chain()
    b = a.spawn_peer()
    relay = DevnetRelay(a, b)
    async with trio.open_nursery() as nursery:
        node_a = await nursery.start(DevnetNode(a).run)
        node_b = await nursery.start(DevnetNode(b).run)
        nodes = NodePool([NodeClient(node_a.url, timeout=2), NodeClient(node_b.url, timeout=2)], poll_interval=0.05)
        manager, jobs = await start_jobs(nursery, nodes, longpoll=True)
        assert jobs[0].source == nodes.nodes[0].name

        relay.pause()
        b.generate(1)  # A falls behind
        await wait_until(lambda: len(jobs) >= 2, 2)
        assert jobs[1].source == nodes.nodes[1].name
        assert jobs[1].clean_jobs and jobs[1].height == b.height + 1

        relay.resume()  # A catches up: templates come from it again, on the same tip
        await wait_until(lambda: manager.source is nodes.nodes[0], 2)
        assert not jobs[-1].clean_jobs and jobs[-1].prevhash == jobs[1].prevhash
        nursery.cancel_scope.cancel()


async def test_fail_over_from_a_wedged_node_keeps_the_jobs() -> None:
    a = easy_chain()
    b = a.spawn_peer()
    DevnetRelay(a, b)
    async with trio.open_nursery() as nursery:
        node_a = await nursery.start(DevnetNode(a).run)
        node_b = await nursery.start(DevnetNode(b).run)
        nodes = NodePool(
            [NodeClient(node_a.url, timeout=0.3), NodeClient(node_b.url, timeout=0.3)], poll_interval=0.05
        )
        manager, jobs = await start_jobs(nursery, nodes, longpoll=True)
        node_a.hang()
        await wait_until(lambda: manager.source is nodes.nodes[1], 3)
        assert not jobs[-1].clean_jobs  # same tip: the miners' current work stays valid
        assert manager.get(jobs[0].job_id) is not None
        # New tips now come from B, even though A is still wedged.
        b.generate(1)
        await wait_until(lambda: manager.current is not None and manager.current.height == b.height + 1, 2)
        assert manager.current.clean_jobs and manager.current.source == nodes.nodes[1].name
        nursery.cancel_scope.cancel()


async def test_every_block_goes_to_every_node_and_is_confirmed() -> None:
    a = easy_chain()
    b = a.spawn_peer()  # not relayed: each node must get the block from the pool
    async with trio.open_nursery() as nursery:
        node_a = await nursery.start(DevnetNode(a).run)
        node_b = await nursery.start(DevnetNode(b).run)
        nodes = NodePool([NodeClient(node_a.url, timeout=2), NodeClient(node_b.url, timeout=2)])
        job = job_from(a.block_template())
        raw = mine_job(job)
        results = await nodes.submit_block(raw.hex())
        assert [r.label for r in results] == ["accepted", "accepted"]
        block_hash = internal_to_display(a.tip.hash)
        assert b.tip.hash == a.tip.hash
        assert await nodes.block_in_chain(job.height, block_hash) is True

        # With A down the next block still reaches B.
        node_a.stop()
        await node_a.stopped()
        job = job_from(b.block_template())
        results = await nodes.submit_block(mine_job(job).hex())
        assert [r.label for r in results] == ["node-unavailable", "accepted"]
        assert decisive_result(results) == "accepted"
        assert await nodes.block_in_chain(job.height, internal_to_display(b.tip.hash)) is True
        assert b.height == 2 and a.height == 1
        nursery.cancel_scope.cancel()
