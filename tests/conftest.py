"""Shared fixtures: where the reference data lives."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$STOPE_SHARED``."""
    if "STOPE_SHARED" in os.environ:
        return Path(os.environ["STOPE_SHARED"]).resolve()
    # ../shared beside the checkout; a clean CI clone elsewhere falls back to
    # the workplace's copy of the same directory.
    for candidate in (REPO_ROOT.parent / "shared", Path("/work/shared")):
        if (candidate / "vectors" / "expected.json").exists():
            return candidate.resolve()
    return (REPO_ROOT.parent / "shared").resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "vectors" / "expected.json").exists():
        pytest.fail(f"reference data not found at {path}; set STOPE_SHARED")
    return path


@pytest.fixture(scope="session")
def vectors(shared: Path) -> dict:
    return json.loads((shared / "vectors" / "expected.json").read_text())
