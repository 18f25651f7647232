"""A running pool exports the new metrics, and ``stope stats concentration`` reads its data.

No Prometheus server here (see test_prometheus.py for that): the pool's own
/metrics endpoint is scraped while a CPU miner mines on the devnet.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from pool.cli import main
from pool.cpuminer import CPUMiner
from pool.service import run_pool
from tests.pool_fixtures import devnet_settings

MINER = "bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew"

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def pools_file(tmp_path: Path) -> Path:
    """A pools-v2.json with one pool identified by the devnet pool's coinbase tag."""
    path = tmp_path / "pools.json"
    path.write_text(json.dumps([{"id": 1, "name": "Stope devnet", "addresses": [], "tags": ["/stope/"], "link": ""}]))
    return path


async def test_running_pool_exports_hashrate_latency_and_concentration(tmp_path: Path) -> None:
    table = pools_file(tmp_path)
    settings = devnet_settings(
        tmp_path,
        metrics={"port": 0, "update_interval": 0.2, "node_status_interval": 0.2},
        node={"refresh_interval": 0.5},
        concentration={"pools_file": str(table)},
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_pool, settings)
        devnet = running.devnet
        start = devnet.height
        async with trio.open_nursery() as mining:
            mining.start_soon(CPUMiner("127.0.0.1", running.stratum_port, f"{MINER}.rig1").run)
            with trio.fail_after(120):
                while True:
                    samples = await trio.to_thread.run_sync(scrape, running.metrics_port)
                    blocks = get(samples, "stope_network_pool_blocks", pool="Stope devnet") or 0
                    if devnet.height > start and blocks >= 1 and (get(samples, "stope_last_round_effort") or 0) > 0:
                        break
                    await trio.sleep(0.2)
            mining.cancel_scope.cancel()
        # The chain must hold still while the CLI reads it: every block candidate
        # the miner sent before it stopped is submitted and recorded first.
        pool = running.pool
        with trio.fail_after(30):
            while len(pool.submitter.submissions) < pool.metrics.blocks_found._value.get():
                await trio.sleep(0.05)
        # The CLI reads the same data: the database for --pool, the devnet node for --network.
        config = tmp_path / "stope.toml"
        config.write_text(
            f'[pool]\ndata_dir = "{settings.pool.data_dir}"\n'
            f'[devnet]\nport = {running.node_url.rsplit(":", 1)[1].strip("/")}\n'
            f'[concentration]\npools_file = "{table}"\n'
        )
        await running.pool.writer.drained()
        pool_cli = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(main, ["stats", "concentration", "--pool", "--json", "--config", str(config)])
        )
        network_cli = await trio.to_thread.run_sync(
            lambda: CliRunner().invoke(main, ["stats", "concentration", "--network", "--json", "--config", str(config)])
        )
        height = devnet.height
        nursery.cancel_scope.cancel()

    for window in ("1m", "5m", "1h"):
        assert (get(samples, "stope_worker_hashrate", miner=MINER, worker="rig1", window=window) or 0) > 0
        assert (get(samples, "stope_miner_hashrate", miner=MINER, window=window) or 0) > 0
        assert (get(samples, "stope_pool_hashrate", window=window) or 0) > 0
    assert get(samples, "stope_subscriptions") == 1.0
    assert get(samples, "stope_node_up") == 1.0
    assert (get(samples, "stope_node_blocks") or 0) >= 0
    assert (get(samples, "stope_template_fetch_seconds_count") or 0) >= 2
    assert (get(samples, "stope_work_propagation_seconds_count") or 0) >= 2  # first job + our block
    assert (get(samples, "stope_block_submit_seconds_count") or 0) >= 1
    assert get(samples, "stope_concentration_top_share", view="pool", k="1") == 1.0
    ours = get(samples, "stope_network_pool_blocks", pool="Stope devnet")
    assert ours is not None and ours >= 1
    assert get(samples, "stope_network_pool_blocks", pool="unknown") == 1.0  # the devnet genesis
    assert get(samples, "stope_network_window_blocks") == ours + 1
    assert get(samples, "stope_concentration_top_share", view="network", k="1") == ours / (ours + 1)
    assert get(samples, "stope_concentration_above_threshold", view="pool") == 1.0

    assert pool_cli.exit_code == 0, pool_cli.output
    pool_view = json.loads(pool_cli.output)
    assert pool_view["source"] == "pool"
    assert [r["entity"] for r in pool_view["ranking"]] == [MINER]
    assert network_cli.exit_code == 0, network_cli.output
    network_view = json.loads(network_cli.output)
    weights = {r["entity"]: r["weight"] for r in network_view["ranking"]}
    assert weights["Stope devnet"] == height - start
    assert network_view["total"] == height + 1  # genesis (unknown) included
