"""The Prometheus configuration and alert rules, checked and unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.metrics.conftest import PROMETHEUS_DIR

pytestmark = pytest.mark.prometheus


def run(promtool: Path, *args: str) -> str:
    done = subprocess.run(
        [str(promtool), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_check_rules(promtool: Path) -> None:
    out = run(promtool, "check", "rules", "alerts.yml")
    assert "SUCCESS: 10 rules found" in out


def test_alert_rule_unit_tests(promtool: Path) -> None:
    out = run(promtool, "test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out


def test_check_scrape_config(promtool: Path) -> None:
    out = run(promtool, "check", "config", "prometheus.yml")
    assert "is valid prometheus config file syntax" in out


def firing_cases(test_yaml: str) -> set[str]:
    """Alert names with at least one case expecting it to fire (exp_alerts not ``[]``).

    A line-based reading (no YAML library is a dependency); it relies on each
    case writing ``alertname:`` before its ``exp_alerts:``, as alerts_test.yml does.
    """
    firing: set[str] = set()
    current: str | None = None
    for line in test_yaml.splitlines():
        name = re.match(r"\s*alertname:\s*(\w+)", line)
        if name:
            current = name.group(1)
            continue
        expected = re.match(r"\s*exp_alerts:\s*(\S*)", line)
        if expected and current is not None:
            if not expected.group(1).startswith("[]"):
                firing.add(current)
            current = None
    return firing


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert:\s*(\w+)", (PROMETHEUS_DIR / "alerts.yml").read_text(), re.MULTILINE))
    firing = firing_cases((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    assert alerts == firing, f"alerts without a firing test: {sorted(alerts - firing)}"
    # The list: pool down, hashrate drop, reject ratio, worker offline,
    # spool growing, node behind, concentration above threshold.
    for name in (
        "StopePoolDown",
        "StopeHashrateDrop",
        "StopeRejectRatioHigh",
        "StopeWorkerOffline",
        "StopeSpoolGrowing",
        "StopeNodeBehind",
        "StopeConcentrationAboveThreshold",
        "StopeDatabaseDown",
        "StopeSpoolFull",
    ):
        assert name in alerts
