"""Fixtures of the fault-injection tests: a private PostgreSQL, Redis and service processes.

These tests kill workers, empty the broker and restart the database, so they never use
the machine's shared servers (other test runs use those at the same time).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV
from tests.support.stack import Stack, running_stack

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `make test` (two xdist workers, --dist loadgroup) these tests run one after
    another on one worker, never two at once: each brings up its own servers and processes,
    and several wait out leases and deadlines that a doubly loaded machine would stretch."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("faults"))


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    """Private PostgreSQL and Redis with the schema migrated; start processes on it."""
    with running_stack(tmp_path, TEST_ENV) as private:
        yield private
