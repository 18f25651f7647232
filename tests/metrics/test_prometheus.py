"""A real Prometheus scrapes a running pool, and every dashboard query returns data.

The pool runs in-process on the devnet with two CPU miners; Debian's
``prometheus`` is started as a subprocess with the shipped scrape config
(config/prometheus/prometheus.yml, pointed at the pool's ephemeral metrics
port, 1 s scrapes) and the shipped alert rules.  Then every PromQL expression
in config/grafana/stope.json goes through Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from pool.cpuminer import CPUMiner
from pool.service import run_pool
from tests.metrics.conftest import DASHBOARD, PROMETHEUS_DIR
from tests.pool_fixtures import devnet_settings

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

MINERS = ("bcrt1qp2zew4jzqeyarjhlke68z4zdx3fg8n7usphzew", "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")

GRAFANA_VARIABLES = {
    "__rate_interval": "1m",  # Grafana: max(4 x scrape interval, step + scrape interval)
    "miner": ".*",  # the "All" value of the dashboard's miner variable
}

# Panels whose every query must return a positive value once miners have found a
# block: the core figures, which must come from real events, never `or vector(0)`.
CORE_PANELS = {
    "Pool hashrate",
    "Connections",
    "Active workers (5m)",
    "Blocks found (24h)",
    "Miner hashrate (5m, top 10)",
    "Worker hashrate (5m, top 20)",
    "Share validation",
    "Block template fetch",
    "Work propagation",
    "Block submission",
    "Chain height",
    "Network window",
}

DEADLINE = 50.0
"""Seconds to wait for every query to return data (typically 10-20 s)."""


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana variables substituted) for every target."""
    board = json.loads(DASHBOARD.read_text())

    def substitute(expr: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in GRAFANA_VARIABLES:
                raise AssertionError(f"dashboard uses ${name}; add it to GRAFANA_VARIABLES")
            return GRAFANA_VARIABLES[name]

        return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)

    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], substitute(target["expr"])))
    return queries


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def values(result: dict[str, Any]) -> list[float]:
    data = result["data"]
    if data["resultType"] == "vector":
        return [float(s["value"][1]) for s in data["result"]]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    raise AssertionError(f"unexpected result type {data['resultType']}")


def judge(title: str, expr: str, result: dict[str, Any]) -> str | None:
    """Why this query's answer is not good enough yet (None: it is)."""
    if result.get("status") != "success":
        return f"error {result.get('error')}"
    found = values(result)
    finite = [v for v in found if math.isfinite(v)]
    if not found:
        return "empty result"
    if not finite:
        return f"no finite value in {found}"
    if title in CORE_PANELS and not any(v > 0 for v in finite):
        return f"core panel, but no positive value in {finite}"
    return None


def scrape_config(metrics_port: int) -> str:
    """The shipped prometheus.yml, pointed at this pool and scraping every second."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert '"127.0.0.1:9333"' in text and "- alerts.yml" in text
    text = text.replace('"127.0.0.1:9333"', f'"127.0.0.1:{metrics_port}"')
    text = text.replace("- alerts.yml", f"- {PROMETHEUS_DIR / 'alerts.yml'}")
    return re.sub(r"(scrape_interval|evaluation_interval): 15s", r"\1: 1s", text)


def test_dashboard_parses_and_has_core_panels() -> None:
    queries = dashboard_queries()
    titles = {title for title, _ in queries}
    assert CORE_PANELS <= titles, sorted(CORE_PANELS - titles)
    assert len(queries) >= 40


async def test_every_dashboard_query_returns_data(tmp_path: Path, prometheus_bin: Path, shared: Path) -> None:
    queries = dashboard_queries()
    settings = devnet_settings(
        tmp_path,
        metrics={"port": 0, "update_interval": 1.0, "node_status_interval": 1.0},
        node={"refresh_interval": 1.0},
        concentration={"pools_file": str(shared / "data" / "pools-v2.json")},
    )
    web_port = free_port()
    config = tmp_path / "prometheus.yml"
    log_path = tmp_path / "prometheus.log"
    problems: dict[tuple[str, str], str] = {}
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_pool, settings)
        assert running.metrics_port
        for n, address in enumerate(MINERS):
            nursery.start_soon(CPUMiner("127.0.0.1", running.stratum_port, f"{address}.rig{n}").run)
        config.write_text(scrape_config(running.metrics_port))
        with log_path.open("wb") as log:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    [
                        str(prometheus_bin),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{web_port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
            with trio.move_on_after(DEADLINE) as waiting:
                while True:
                    await trio.sleep(1.0)
                    if process.returncode is not None:
                        pytest.fail(f"prometheus exited with {process.returncode}: {log_path.read_text()[-2000:]}")
                    try:
                        answers = await trio.to_thread.run_sync(
                            lambda: [api(web_port, "/api/v1/query", query=expr) for _, expr in queries]
                        )
                    except OSError:
                        continue  # not listening yet
                    problems = {}
                    for (title, expr), answer in zip(queries, answers, strict=True):
                        why = judge(title, expr, answer)
                        if why is not None:
                            problems[(title, expr)] = why
                    if not problems:
                        break
            targets = await trio.to_thread.run_sync(api, web_port, "/api/v1/targets")
            rules = await trio.to_thread.run_sync(api, web_port, "/api/v1/rules")
            nursery.cancel_scope.cancel()

    missing = "\n".join(f"  [{title}] {expr}: {why}" for (title, expr), why in problems.items())
    assert not waiting.cancelled_caught, f"queries without data after {DEADLINE:.0f}s:\n{missing}"
    (target,) = targets["data"]["activeTargets"]
    assert target["labels"]["job"] == "stope" and target["health"] == "up"
    loaded = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
    assert "StopeConcentrationAboveThreshold" in loaded and len(loaded) == 10
