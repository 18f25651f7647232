"""`stats concentration` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pool.stats_cli import StatsProviders, make_stats_group, stats


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "weights.json"
    path.write_text(text, encoding="utf-8")
    return path


def run(args: list[str], group: click.Group = stats) -> tuple[int, str]:
    result = CliRunner().invoke(group, args)
    return result.exit_code, result.output


def test_json_equal_four(tmp_path: Path) -> None:
    path = write(tmp_path, '{"a": 1, "b": 1, "c": 1, "d": 1}')
    code, out = run(["concentration", "--weights", str(path), "--json"])
    assert code == 0, out
    data = json.loads(out)
    assert data["source"] == "weights"
    assert data["hhi"] == 2500
    assert data["hhi_guideline"] == "2010"
    assert data["hhi_band"] == "moderately concentrated"
    assert data["nakamoto"] == 3
    assert data["gini"] == 0
    assert data["entropy_bits"] == pytest.approx(2.0)
    assert data["effective_entities_hhi"] == 4
    assert (data["top1"], data["top2"], data["top5"]) == (0.25, 0.5, 1)
    assert [r["entity"] for r in data["ranking"]] == ["a", "b", "c", "d"]


def test_decimal_weights_stay_exact(tmp_path: Path) -> None:
    # reference §4 illustrative vector: HHI 2835.5, NC 2
    path = write(
        tmp_path, '{"AntPool": 40, "Foundry": 30, "ViaBTC": 14.5, "F2Pool": 10, "MARA": 5, "other": 0.5}'
    )
    code, out = run(["concentration", "--weights", str(path), "--json", "--guideline", "2023"])
    assert code == 0, out
    data = json.loads(out)
    assert data["hhi"] == 2835.5
    assert data["nakamoto"] == 2
    assert data["hhi_band"] == "highly concentrated"
    assert data["ranking"][0] == {"entity": "AntPool", "weight": 40, "share": 0.4}


def test_table_output(tmp_path: Path) -> None:
    path = write(tmp_path, '{"A": 3, "B": 2, "C": 1}')
    code, out = run(["concentration", "--weights", str(path)])
    assert code == 0, out
    assert "HHI" in out and "3888.9" in out  # 35000/9
    assert "Nakamoto" in out
    assert "50.00 %" in out  # top-1
    assert "A" in out and "83.33 %" in out  # top-2 = 5/6


def test_empty_object(tmp_path: Path) -> None:
    code, out = run(["concentration", "--weights", str(write(tmp_path, "{}")), "--json"])
    assert code == 0, out
    data = json.loads(out)
    assert (data["nakamoto"], data["hhi"], data["hhi_band"]) == (0, 0, "no data")
    code, out = run(["concentration", "--weights", str(write(tmp_path, "{}"))])
    assert code == 0, out


def test_no_source_is_a_usage_error() -> None:
    code, out = run(["concentration"])
    assert code == 2
    assert "--weights" in out


@pytest.mark.parametrize("flag", ["--network", "--pool"])
def test_unwired_provider_is_a_usage_error(flag: str) -> None:
    code, out = run(["concentration", flag, "--json"])
    assert code == 2
    assert "no " + flag[2:] + " data source" in out


def test_weights_and_provider_are_exclusive(tmp_path: Path) -> None:
    code, out = run(["concentration", "--weights", str(write(tmp_path, '{"a": 1}')), "--network"])
    assert code == 2
    assert "alternatives" in out


def test_wired_providers(tmp_path: Path) -> None:
    seen: list[click.Context] = []

    def network(ctx: click.Context) -> dict[str, int]:
        seen.append(ctx)
        return {"Foundry USA": 3, "AntPool": 3}

    group = make_stats_group(StatsProviders(network=network, pool=lambda ctx: {"alice": 1}))
    code, out = run(["concentration", "--network", "--json"], group)
    assert code == 0, out
    data = json.loads(out)
    assert data["source"] == "network"
    assert (data["hhi"], data["nakamoto"]) == (5000, 2)
    assert len(seen) == 1
    code, out = run(["concentration", "--pool", "--json"], group)
    assert json.loads(out)["hhi"] == 10000


def test_provider_with_bad_data_is_a_clean_error() -> None:
    group = make_stats_group(StatsProviders(pool=lambda ctx: {"alice": -1}))
    code, out = run(["concentration", "--pool"], group)
    assert code == 1
    assert "non-negative" in out


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"a": -1}', '{"a": "3"}', '{"a": true}', '{"a": NaN}', '{"a": null}', "not json"],
)
def test_bad_weights_files(tmp_path: Path, text: str) -> None:
    code, out = run(["concentration", "--weights", str(write(tmp_path, text))])
    assert code == 2, out
    assert "--weights" in out


def test_missing_file(tmp_path: Path) -> None:
    code, _ = run(["concentration", "--weights", str(tmp_path / "nope.json")])
    assert code == 2


def test_network_and_pool_are_exclusive() -> None:
    group = make_stats_group(StatsProviders(network=lambda ctx: {"a": 1}, pool=lambda ctx: {"b": 1}))
    code, out = run(["concentration", "--network", "--pool"], group)
    assert code == 2
    assert "alternatives" in out
