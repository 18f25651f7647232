"""Fixtures for the metrics tests: the Prometheus binaries and the config files.

``prometheus`` and ``promtool`` come from Debian's ``prometheus`` package.
Without them the tests that need them skip, or fail when
``STOPE_REQUIRE_SERVICES`` is set (CI installs the package and sets it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "config" / "prometheus"
DASHBOARD = REPO_ROOT / "config" / "grafana" / "stope.json"


def _binary(name: str) -> Path:
    found = shutil.which(name)
    if found:
        return Path(found)
    reason = f"{name} not found on PATH (Debian: apt-get install prometheus)"
    if os.environ.get("STOPE_REQUIRE_SERVICES", "") not in ("", "0"):
        pytest.fail(f"{reason}; required because STOPE_REQUIRE_SERVICES is set")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    return _binary("prometheus")
