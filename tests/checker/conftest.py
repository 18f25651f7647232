"""Fixtures for the share-checker tests: one warmed vectorised checker per session."""

from __future__ import annotations

import pytest

from pool.checker import Checker


@pytest.fixture(scope="session")
def vector_checker() -> Checker:
    """The Numba backend with the scalar shortcut for tiny batches turned off.

    Warmed once: the first session compiles (or loads from Numba's cache).
    """
    checker = Checker("numba", min_vector_batch=0)
    checker.warm_up()
    return checker


@pytest.fixture(scope="session")
def scalar_checker() -> Checker:
    return Checker("scalar")
