"""Fixtures of the security tests: a private PostgreSQL and Redis for processes started
with settings of their own (an SSRF allow list switched off, a small body limit)."""

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
