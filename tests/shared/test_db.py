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


def test_a_pinged_connection_is_handed_out_outside_a_transaction(engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    backend_pid(engine)  # used once, so that the next checkout pings
    # An autocommit statement on the driver connection cannot start inside a transaction.
    assert db.autocommit_rows(engine, text("SELECT 41 + 1"), {}) == [(42,)]


def test_a_database_that_is_down_raises_sqlalchemy_s_operational_error():
    # Nothing listens on port 9: connecting fails as it does while PostgreSQL restarts.
    engine = db.make_engine("postgresql+psycopg2://postgres@127.0.0.1:9/none", pool_size=1)
    try:
        with pytest.raises(OperationalError):
            db.autocommit_rows(engine, text("SELECT 1"), {})
    finally:
        engine.dispose()
