"""How new work reaches the pool: ZMQ hashblock, long-poll, polling, the refresh timer.

Each test switches the other paths off (30 s polls, no long-poll) so the one
under test is the only way the job could have arrived in time.
"""

from __future__ import annotations

import trio

from pool.bitcoin.serialize import internal_to_display
from pool.devnet.node import DevnetNode
from pool.node import NodeClient, NodePool
from tests.node.helpers import SLOW, easy_chain, start_jobs, wait_until


async def test_zmq_hashblock_brings_a_clean_job() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain, zmq_hashblock="tcp://127.0.0.1:*").run)
        nodes = NodePool([NodeClient(node.url, timeout=5)], zmq_hashblock=[node.zmq_endpoint], poll_interval=SLOW)
        manager, jobs = await start_jobs(nursery, nodes)
        # PUB/SUB loses what is sent before the subscription lands: mine until one arrives.
        with trio.fail_after(5):
            while nodes.nodes[0].zmq_messages == 0:
                chain.generate(1)
                await trio.sleep(0.05)
        await wait_until(lambda: manager.current is not None and manager.current.height == chain.height + 1, 2)
        before = len(jobs)
        chain.generate(1)
        await wait_until(lambda: len(jobs) > before, 1.0)
        job = jobs[-1]
        assert job.clean_jobs and job.height == chain.height + 1
        assert internal_to_display(job.prevhash) == internal_to_display(chain.tip.hash)
        nursery.cancel_scope.cancel()


async def test_longpoll_brings_new_tips_clean_and_new_transactions_not_clean() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain).run)
        nodes = NodePool([NodeClient(node.url, timeout=5)], poll_interval=SLOW)
        _manager, jobs = await start_jobs(nursery, nodes, longpoll=True)
        await trio.sleep(0.1)  # the long-poll is in flight
        chain.generate(1)
        await wait_until(lambda: len(jobs) == 2, 1.0)
        assert jobs[1].clean_jobs and jobs[1].height == 2
        chain.add_synthetic_transaction()
        await wait_until(lambda: len(jobs) == 3, 1.0)
        assert not jobs[2].clean_jobs
        assert jobs[2].prevhash == jobs[1].prevhash and len(jobs[2].tx_data) == len(jobs[1].tx_data) + 1
        assert jobs[2].generation == jobs[1].generation  # jobs[1] stays valid
        await trio.sleep(0.2)
        assert len(jobs) == 3  # nothing changed: no duplicate notifications
        nursery.cancel_scope.cancel()


async def test_polling_alone_finds_new_tips() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain).run)
        nodes = NodePool([NodeClient(node.url, timeout=5)], poll_interval=0.1)
        _manager, jobs = await start_jobs(nursery, nodes)
        chain.generate(1)
        await wait_until(lambda: len(jobs) == 2, 1.0)
        assert jobs[1].clean_jobs and jobs[1].height == 2
        nursery.cancel_scope.cancel()


async def test_timer_refresh_picks_up_transactions_without_clean_jobs() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain).run)
        nodes = NodePool([NodeClient(node.url, timeout=5)], poll_interval=SLOW)
        manager, jobs = await start_jobs(nursery, nodes, refresh_interval=0.3)
        chain.add_synthetic_transaction()
        await wait_until(lambda: len(jobs) == 2, 1.5)
        assert not jobs[1].clean_jobs
        assert len(jobs[1].tx_data) == len(jobs[0].tx_data) + 1
        assert manager.get(jobs[0].job_id) is not None
        nursery.cancel_scope.cancel()


async def test_work_on_a_new_tip_waits_for_the_pools_own_block_submission() -> None:
    chain = easy_chain()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(DevnetNode(chain).run)
        nodes = NodePool([NodeClient(node.url, timeout=5)], poll_interval=0.05)
        manager, jobs = await start_jobs(nursery, nodes, longpoll=True, own_block_hold=5.0)
        with manager.own_block_in_flight():
            chain.generate(1)
            await trio.sleep(0.3)
            assert len(jobs) == 1  # the new tip waits for our submission to be recorded
        await wait_until(lambda: len(jobs) == 2, 1.0)
        assert jobs[1].clean_jobs

        # A submission that hangs holds the switch back only ``own_block_hold`` seconds.
        manager.own_block_hold = 0.2
        with manager.own_block_in_flight():
            chain.generate(1)
            await wait_until(lambda: len(jobs) == 3, 1.0)
        nursery.cancel_scope.cancel()
