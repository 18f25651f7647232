"""The [metrics] and [concentration] configuration sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from pool.config import ConfigError, load_settings, settings_from_mapping


def test_defaults() -> None:
    s = load_settings(None)
    assert s.metrics.update_interval == 5.0
    assert s.metrics.max_worker_series == s.metrics.max_miner_series == 500
    c = s.concentration
    assert c.pool_window == 86400.0  # 24 h, the default
    assert c.network_window == 1008  # about a week of blocks
    assert c.pools_file is None and c.unknown_policy == "each" and c.guideline == "2010"


def test_pools_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="concentration.pools_file"):
        settings_from_mapping({"concentration": {"pools_file": str(tmp_path / "missing.json")}})


def test_shared_pools_file_is_accepted(shared: Path) -> None:
    s = settings_from_mapping({"concentration": {"pools_file": str(shared / "data" / "pools-v2.json")}})
    assert s.concentration.pools_file is not None


@pytest.mark.parametrize(
    ("section", "values", "field"),
    [
        ("metrics", {"max_worker_series": -1}, "metrics.max_worker_series"),
        ("metrics", {"update_interval": 0}, "metrics.update_interval"),
        ("concentration", {"pool_max_share": 1.5}, "concentration.pool_max_share"),
        ("concentration", {"network_window": 0}, "concentration.network_window"),
        ("concentration", {"unknown_policy": "merge"}, "concentration.unknown_policy"),
        ("concentration", {"guideline": "1984"}, "concentration.guideline"),
    ],
)
def test_bad_values_are_refused_with_the_field(section: str, values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        settings_from_mapping({section: values})
