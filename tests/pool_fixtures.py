"""Helpers to start a whole pool in-process on ephemeral ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pool.config import Settings, settings_from_mapping


def devnet_settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    """Embedded defaults on ephemeral ports, with difficulties a Python miner can reach."""
    data: dict[str, dict[str, Any]] = {
        "pool": {"data_dir": str(tmp_path / "data")},
        "devnet": {"port": 0, "difficulty": "0.0003"},
        "stratum": {"host": "127.0.0.1", "port": 0, "start_difficulty": "0.0001", "min_difficulty": "0.00001"},
        "metrics": {"port": 0},
        "node": {"poll_interval": 0.1},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return settings_from_mapping(data)
