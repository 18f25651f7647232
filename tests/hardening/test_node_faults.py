"""Node faults: miners keep the last valid work for a bounded time, then shares stop being credited.

A whole pool in-process on the embedded devnet, one real (hashlib) miner.
The node goes away (connection refused), then hangs (slow: every call times
out) while the chain moves on without the pool; the pool must keep the miner
working through the first ``max_work_age`` seconds, then judge its shares as
stale (code 21, not credited), say so in metrics and to the miner, and
recover by itself when the node answers again, moving miners to the new tip.
"""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import trio

from pool.hardening import OUTDATED_MESSAGE, RESTORED_MESSAGE, WorkFreshness
from pool.service import run_pool
from tests.hardening.realminer import Miner
from tests.pool_fixtures import devnet_settings

MAX_AGE = 2.0


def outdated_gauge(running) -> float:
    return running.pool.metrics.registry.get_sample_value("stope_work_outdated")


async def wait_for(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_node_down_then_hung_bounded_stale_work(tmp_path):
    settings = devnet_settings(
        tmp_path,
        stratum={
            "start_difficulty": "0.00002",
            "target_share_interval": 0.3,
            "max_share_rate": 40,
            "faults": {"max_work_age": MAX_AGE},
        },
        node={"poll_interval": 0.1, "timeout": 0.3, "failover_holdoff": 0.2},
        devnet={"difficulty": 1},
        checker={"backend": "scalar"},
        metrics={"enabled": False},
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_pool, settings)
        server = running.pool.stratum
        miner = Miner(running.stratum_port, "rig")
        nursery.start_soon(miner.run)
        await wait_for(lambda: len(miner.accepted) >= 3, 30)
        assert outdated_gauge(running) == 0

        # 1. The node goes away: miners keep the last valid work for MAX_AGE seconds...
        running.devnet_node.stop()
        await running.devnet_node.stopped()
        down_at = trio.current_time()
        accepted = len(miner.accepted)
        await wait_for(lambda: server.work_outdated, MAX_AGE + 3)
        # (counted from the last confirmation, up to one poll before the node went away)
        assert trio.current_time() - down_at >= MAX_AGE - 0.6
        assert len(miner.accepted) > accepted, "shares stopped being credited before the bound"
        # ...then shares are refused as stale (code 21), the miner is told, metrics show it.
        outdated_at = trio.current_time()
        await wait_for(lambda: any(t > outdated_at + 0.2 and a is not True for t, a in miner.answers), 15)
        late = [a for t, a in miner.answers if t > outdated_at + 0.2]
        assert late and all(a is not True and a[0] == 21 for a in late), late
        assert OUTDATED_MESSAGE in miner.messages
        assert outdated_gauge(running) == 1
        assert running.pool.metrics.registry.get_sample_value("stope_work_age_seconds") > MAX_AGE

        # 2. The node is back on the same tip: the same work is credited again.
        await nursery.start(running.devnet_node.run)
        await wait_for(lambda: not server.work_outdated, 5)
        back_at = trio.current_time()
        await wait_for(lambda: any(t > back_at + 0.2 and a is True for t, a in miner.answers), 15)
        assert RESTORED_MESSAGE in miner.messages and outdated_gauge(running) == 0

        # 3. The node hangs (slow: every call times out) while the chain moves on without us.
        tip_before = miner.notifies[-1][1]
        running.devnet_node.hang()
        chain = running.devnet
        chain.set_difficulty(Fraction(1, 100000))  # someone else finds a block (quickly, for the test)
        chain.generate(1)
        chain.set_difficulty(Fraction(1))
        await wait_for(lambda: server.work_outdated, MAX_AGE + 5)
        hung_at = trio.current_time()
        await wait_for(lambda: any(t > hung_at + 0.2 for t, _ in miner.answers), 15)
        assert all(a is not True for t, a in miner.answers if t > hung_at + 0.2)
        # Back: a clean job on the new tip reaches the miner, and its shares count again.
        running.devnet_node.resume()
        await wait_for(lambda: any(n[8] and n[1] != tip_before for n in miner.notifies), 10)
        await wait_for(lambda: not server.work_outdated, 5)
        resumed_at = trio.current_time()
        await wait_for(lambda: any(t > resumed_at + 0.2 and a is True for t, a in miner.answers), 15)
        nursery.cancel_scope.cancel()


def _job(prev: bytes, height: int) -> SimpleNamespace:
    return SimpleNamespace(prevhash=prev, height=height, job_id="1")


def _node(healthy: bool, best_hash: str, height: int, checked_at: float) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(healthy=healthy, best_hash=best_hash, height=height, checked_at=checked_at))


class _Server:
    def __init__(self) -> None:
        self.work_outdated = False
        self.messages: list[str] = []

    def show_message(self, text: str) -> int:
        self.messages.append(text)
        return 1


def test_freshness_policy_rules():
    prev = bytes(range(32))
    tip = prev[::-1].hex()
    jobs = SimpleNamespace(current=_job(prev, 101))
    node = _node(True, tip, 100, 0.0)
    nodes = SimpleNamespace(nodes=[node])
    server = _Server()
    watch = WorkFreshness(jobs, nodes, server, max_age=10.0)  # type: ignore[arg-type]
    assert not watch.update(0.0)
    # Confirmed by every healthy check: never outdated however long it runs.
    node.state.checked_at = 50.0
    assert not watch.update(50.0)
    # Unhealthy (down, slow, erroring): outdated once the last confirmation is max_age old.
    node.state.healthy = False
    assert not watch.update(59.0)
    assert watch.update(60.5) and server.work_outdated and server.messages == [watch_message(True)]
    # Healthy again on our tip: fresh.
    node.state.healthy, node.state.checked_at = True, 61.0
    assert not watch.update(61.0) and not server.work_outdated
    # A healthy node past our tip (we could not fetch a template for it): outdated after 5 s.
    node.state.best_hash, node.state.height, node.state.checked_at = "ff" * 32, 101, 62.0
    assert not watch.update(62.0)
    assert not watch.update(66.0)
    assert watch.update(67.5)
    # A lagging node (behind our tip) contradicts nothing (and the last confirmation is 7 s old).
    node.state.height = 99
    assert not watch.update(68.0)
    # A new job (template fetched) is confirmation by itself.
    jobs.current = _job(bytes(32), 102)
    node.state.healthy = False
    assert not watch.update(80.0)
    # max_age 0: the policy is off.
    off = WorkFreshness(jobs, SimpleNamespace(nodes=[]), _Server(), max_age=0)  # type: ignore[arg-type]
    assert not off.update(1e9)


def watch_message(outdated: bool) -> str:
    return OUTDATED_MESSAGE if outdated else RESTORED_MESSAGE

