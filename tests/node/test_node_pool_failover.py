"""The whole pool on two devnet nodes, with a CPU miner on Stratum.

The nodes are peers (``spawn_peer`` + ``DevnetRelay``) configured as
``[node] urls``, so the pool uses its production path (python-bitcoinrpc over
HTTP) and does not know they are devnets.
"""

from __future__ import annotations

from fractions import Fraction

import trio
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pool.cpuminer import CPUMiner
from pool.devnet.chain import DevnetChain, DevnetRelay
from pool.devnet.node import DevnetNode
from pool.service import run_pool
from pool.storage.db import make_engine
from pool.storage.models import Share
from tests.node.helpers import block_rows, wait_until
from tests.pool_fixtures import devnet_settings

MINER = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"


def _settings(tmp_path, node_a: DevnetNode, node_b: DevnetNode, start_difficulty: str):
    return devnet_settings(
        tmp_path,
        node={"urls": [node_a.url, node_b.url], "poll_interval": 0.05, "timeout": 0.5, "failover_holdoff": 0.5},
        # Pinned share difficulty: a few shares a second from the Python miner.
        stratum={"start_difficulty": start_difficulty, "min_difficulty": "0.000001", "max_difficulty": start_difficulty},
    )


def _db_shares(settings) -> int:
    engine = make_engine(settings.database_url)
    try:
        with Session(engine) as session:
            return int(session.scalar(select(func.count()).select_from(Share)) or 0)
    finally:
        engine.dispose()


async def test_first_node_goes_down_mining_continues_on_the_second_without_losing_shares(tmp_path) -> None:
    a = DevnetChain(difficulty=Fraction(1))  # no block in reach of a CPU: one tip throughout
    b = a.spawn_peer()
    DevnetRelay(a, b)
    async with trio.open_nursery() as nursery:
        node_a = await nursery.start(DevnetNode(a).run)
        node_b = await nursery.start(DevnetNode(b).run)
        settings = _settings(tmp_path, node_a, node_b, "0.00001")
        running = await nursery.start(run_pool, settings)
        pool = running.pool
        first, second = pool.nodes.nodes
        assert pool.jobs.source is first

        miner = CPUMiner("127.0.0.1", running.stratum_port, f"{MINER}.rig1")
        with trio.CancelScope() as mining:
            nursery.start_soon(miner.run)
            await wait_until(lambda: miner.stats.accepted >= 3, 30)

            node_a.stop()
            await wait_until(lambda: pool.jobs.source is second, 5)
            failover_job = pool.jobs.current
            assert failover_job is not None and not failover_job.clean_jobs
            # The miner gets B's job and keeps getting shares accepted.
            await wait_until(lambda: any(n[0] == failover_job.job_id for n in miner.stats.notifies), 5)
            after = miner.stats.accepted
            await wait_until(lambda: miner.stats.accepted >= after + 3, 30)
            mining.cancel()
        await pool.writer.drained()
        await wait_until(lambda: pool.writer.pending == 0, 10)  # every acknowledged share committed
        stats = pool.writer.stats()
        jobs_used = {pool.jobs.get(j) for j in pool.jobs.jobs}
        nursery.cancel_scope.cancel()

    assert miner.stats.rejected == 0, miner.stats.errors
    # Every acknowledged share is stored.
    assert _db_shares(settings) >= miner.stats.accepted, (stats, miner.stats.accepted)
    assert {j.source for j in jobs_used if j is not None} == {first.name, second.name}


async def test_a_block_found_while_the_first_node_is_down_reaches_the_second(tmp_path) -> None:
    a = DevnetChain(difficulty=Fraction(1, 50_000))  # a block every ~86 k hashes
    b = a.spawn_peer()
    DevnetRelay(a, b)
    async with trio.open_nursery() as nursery:
        node_a = await nursery.start(DevnetNode(a).run)
        node_b = await nursery.start(DevnetNode(b).run)
        settings = _settings(tmp_path, node_a, node_b, "0.000005")
        running = await nursery.start(run_pool, settings)
        pool = running.pool
        node_a.stop()
        await wait_until(lambda: pool.jobs.source is pool.nodes.nodes[1], 5)

        miner = CPUMiner("127.0.0.1", running.stratum_port, f"{MINER}.rig1")
        with trio.CancelScope() as mining:
            nursery.start_soon(miner.run)
            await wait_until(lambda: b.height >= 1, 60)
            # The new tip reaches the miner as a clean job (templates from B).
            await wait_until(lambda: pool.jobs.current is not None and pool.jobs.current.height >= 2, 5)
            new_job = pool.jobs.current
            await wait_until(lambda: any(n[0] == new_job.job_id and n[8] for n in miner.stats.notifies), 5)
            mining.cancel()
        await wait_until(lambda: bool(pool.submitter.submissions), 5)  # confirmed and recorded
        await pool.writer.drained()
        submission = pool.submitter.submissions[0]
        nursery.cancel_scope.cancel()

    assert [r.label for r in submission.results] == ["node-unavailable", "accepted"]
    assert submission.in_chain is True
    block_hash = b.active[1][::-1].hex()
    assert submission.record.hash == block_hash
    engine = make_engine(settings.database_url)
    assert block_rows(engine)[block_hash] == ("pending", "accepted")
    engine.dispose()
    assert a.active[1] == b.active[1]  # and the peer got it by relay, as a real network would
