"""Fixtures of the fault-injection tests: a private PostgreSQL, Redis and service processes.

These tests kill workers, empty the broker and restart the database, so they never use
the machine's shared servers (other test runs use those at the same time).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import TEST_ENV
from tests.support.stack import Stack, running_stack


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    """Private PostgreSQL and Redis with the schema migrated; start processes on it."""
    with running_stack(tmp_path, TEST_ENV) as private:
        yield private
