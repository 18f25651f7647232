"""PoolMetrics: registry per pool, event hooks, sampler, concentration warnings, timed RPCs."""

from __future__ import annotations

import logging
import socket
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest

from pool.bitcoin.serialize import internal_to_display
from pool.concentration import concentration_report
from pool.config import ConcentrationSection, MetricsSection
from pool.devnet.chain import DevnetChain
from pool.devnet.rpc import DevnetRPC
from pool.devnet.server import DevnetHTTPServer
from pool.metrics import (
    InstrumentedNodeClient,
    PayoutFigures,
    PoolMetrics,
    PropagationClock,
    SamplerSources,
    known_reject_reasons,
)
from pool.node import NodeError


def scrape(metrics: PoolMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def value(metrics: PoolMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_pool_has_its_own_registry() -> None:
    a, b = PoolMetrics(), PoolMetrics()
    a.shares_accepted.inc()
    assert value(a, "stope_shares_accepted_total") == 1.0
    assert value(b, "stope_shares_accepted_total") == 0.0


def test_known_reject_reasons_start_at_zero() -> None:
    reasons = known_reject_reasons()
    assert {"stale", "duplicate", "low-difficulty", "unknown-job"} <= set(reasons)
    m = PoolMetrics()
    for reason in reasons:
        assert value(m, "stope_shares_rejected_total", reason=reason) == 0.0
    assert value(m, "stope_blocks_submitted_total", result="accepted") == 0.0
    for name in ("stope_blocks_confirmed_total", "stope_blocks_orphaned_total"):
        assert value(m, name) == 0.0
    m.block_confirmed()
    m.block_orphaned()
    assert value(m, "stope_blocks_confirmed_total") == value(m, "stope_blocks_orphaned_total") == 1.0


def test_propagation_clock_measures_from_the_first_sighting() -> None:
    clock = PropagationClock()
    clock.template_fetched("aa", 1.0)  # first job: measured from the template request
    assert clock.broadcast("aa", 1.5) == pytest.approx(0.5)
    assert clock.broadcast("aa", 9.0) is None  # a refresh on the same tip is not propagation
    clock.tip_seen("aa", 10.0)  # the current tip, polled again: ignored
    clock.tip_seen("bb", 20.0)
    clock.tip_seen("bb", 20.4)  # later polls do not move the start
    clock.template_fetched("bb", 20.5)
    assert clock.broadcast("bb", 20.75) == pytest.approx(0.75)
    assert clock.broadcast("cc", 30.0) is None  # never learned: no invented figure


def job(prevhash: bytes) -> Any:
    return SimpleNamespace(prevhash=prevhash)


def test_job_broadcast_observes_new_tips_and_wakes_listeners() -> None:
    m = PoolMetrics()
    woken: list[int] = []
    m.on_new_tip(lambda: woken.append(1))
    tip = b"\x01" * 32
    m.propagation.tip_seen(internal_to_display(tip), 100.0)
    m.job_broadcast(job(tip), now=100.25)
    m.job_broadcast(job(tip), now=130.0)  # same tip refreshed
    assert value(m, "stope_work_propagation_seconds_count") == 1.0
    assert value(m, "stope_work_propagation_seconds_sum") == pytest.approx(0.25)
    assert woken == [1]


def test_share_accepted_feeds_hashrate_effort_and_pool_concentration() -> None:
    m = PoolMetrics(settings=MetricsSection(max_worker_series=1, max_miner_series=10))
    for t in range(60):
        m.share_accepted("A", "rig1", Fraction(2), Fraction(100), is_block=False, now=float(t))
        m.share_accepted("A", "rig2", Fraction(1), Fraction(100), is_block=False, now=float(t))
        m.share_accepted("B", "rig1", Fraction(1), Fraction(100), is_block=t == 59, now=float(t))
    m.update(60.0)
    text = scrape(m)
    assert 'stope_worker_hashrate{miner="A",window="1m",worker="rig1"}' in text
    assert 'stope_worker_hashrate{miner="A",window="1m",worker="_other"}' in text
    assert 'stope_worker_hashrate{miner="B",window="1m",worker="_other"}' in text
    assert value(m, "stope_workers_rolled_up") == 2.0
    a = value(m, "stope_miner_hashrate", miner="A", window="5m")
    b = value(m, "stope_miner_hashrate", miner="B", window="5m")
    assert a is not None and b is not None and a == pytest.approx(3 * b)
    assert value(m, "stope_active_workers", window="1m") == 3.0
    assert value(m, "stope_last_round_effort") == pytest.approx(240 / 100)
    assert value(m, "stope_round_effort") == 0.0
    assert value(m, "stope_concentration_top_share", view="pool", k="1") == pytest.approx(0.75)
    assert value(m, "stope_concentration_nakamoto", view="pool") == 1.0


def test_concentration_warning_logs_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    m = PoolMetrics(concentration=ConcentrationSection(pool_max_share=0.5))
    caplog.set_level(logging.INFO, logger="pool.metrics")
    high = concentration_report({"bc1qbig": 6, "bc1qsmall": 4})
    low = concentration_report({"bc1qbig": 1, "bc1qsmall": 1})
    m.publish_concentration("pool", high)
    m.publish_concentration("pool", high)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bc1qbig has 60.0%" in warnings[0].getMessage()
    assert value(m, "stope_concentration_above_threshold", view="pool") == 1.0
    m.publish_concentration("pool", low)
    assert value(m, "stope_concentration_above_threshold", view="pool") == 0.0
    assert any("back below" in r.getMessage() for r in caplog.records)
    m.publish_concentration("pool", high)
    assert value(m, "stope_concentration_warnings_total", view="pool") == 2.0
    assert value(m, "stope_concentration_threshold", view="pool") == 0.5
    with pytest.raises(ValueError):
        m.publish_concentration("galaxy", high)


def test_empty_pool_view_is_not_above_threshold() -> None:
    m = PoolMetrics()
    assert value(m, "stope_concentration_above_threshold", view="pool") == 0.0
    assert value(m, "stope_concentration_entities", view="pool") == 0.0


async def test_sampler_polls_its_sources() -> None:
    m = PoolMetrics()

    async def ledger() -> PayoutFigures:
        return PayoutFigures(pps_liability_sats=12_345, unpaid_balances_sats=67_890)

    await m.sample(SamplerSources(subscriptions=lambda: 3, db_queue_depth=lambda: 7, spool_bytes=lambda: 4096, payouts=ledger))
    assert value(m, "stope_subscriptions") == 3.0
    assert value(m, "stope_db_queue_depth") == 7.0
    assert value(m, "stope_spool_bytes") == 4096.0
    assert value(m, "stope_pps_liability_sats") == 12_345.0
    assert value(m, "stope_unpaid_balances_sats") == 67_890.0
    assert value(m, "stope_payout_ledger_up") == 1.0

    async def broken() -> PayoutFigures:
        raise RuntimeError("ledger database down")

    await m.sample(SamplerSources(payouts=broken))
    assert value(m, "stope_payout_ledger_up") == 0.0


async def test_instrumented_node_times_rpcs_and_polls_status() -> None:
    chain = DevnetChain(difficulty=Fraction(1, 10**9), synthetic_txs=1)
    m = PoolMetrics(settings=MetricsSection(node_status_interval=0.05))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(DevnetHTTPServer(DevnetRPC(chain)).serve, "127.0.0.1", 0)
        node = InstrumentedNodeClient(f"http://127.0.0.1:{port}/", metrics=m, timeout=5)
        template = await node.getblocktemplate()
        best = await node.getbestblockhash()
        assert template["previousblockhash"] == best
        with pytest.raises(NodeError):
            await node.submitblock("00")
        assert value(m, "stope_template_fetch_seconds_count") == 1.0
        assert value(m, "stope_block_submit_seconds_count") == 1.0  # failures are timed too
        nursery.start_soon(m.run_node_status, node)
        with trio.fail_after(5):
            while value(m, "stope_node_up") != 1.0:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert value(m, "stope_node_blocks") == chain.height
    assert value(m, "stope_node_headers") == chain.height
    assert value(m, "stope_node_initial_block_download") == 0.0


async def test_node_status_reports_an_unreachable_node() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    m = PoolMetrics(settings=MetricsSection(node_status_interval=0.05))
    m.node_up.set(1)
    node = InstrumentedNodeClient(f"http://127.0.0.1:{port}/", metrics=m, timeout=1)
    with trio.move_on_after(0.5):
        await m.run_node_status(node)
    assert value(m, "stope_node_up") == 0.0
