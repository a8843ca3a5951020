"""The engine's pool: connections that sat idle are pinged, busy ones are not."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared import db
from shared.config import get_settings
from tests.support.backends import backend_pid, terminate_backend


@pytest.fixture
def engine():
    engine = db.make_engine(get_settings().database_url, pool_size=1)
    yield engine
    engine.dispose()


def test_an_idle_connection_a_restart_closed_is_replaced_before_use(engine, monkeypatch):
    doomed = backend_pid(engine)
    terminate_backend(doomed)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # it has sat idle long enough
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != doomed


def test_a_connection_in_steady_use_is_not_pinged(engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    doomed = backend_pid(engine)
    terminate_backend(doomed)
    # No ping: the statement meets the closed connection, and fails...
    with pytest.raises(OperationalError), engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    # ...which empties the pool, so the next one gets a fresh connection.
    assert backend_pid(engine) != doomed
