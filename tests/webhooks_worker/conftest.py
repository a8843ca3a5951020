"""Fixtures of the worker tests that need several real worker processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import _start_worker


@pytest.fixture
def two_workers(database, tmp_path) -> Iterator[list[subprocess.Popen]]:
    """Two worker processes, as on two machines, killed at the end."""
    procs = [_start_worker(tmp_path / f"worker-{i}.log") for i in range(2)]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=20)
