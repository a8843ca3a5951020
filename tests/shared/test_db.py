"""The engine's pool (idle connections pinged, busy ones not) and the hot statements' commits."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

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


def _executions(engine, statement) -> int:
    """How many times this connection ran ``statement`` as its prepared statement."""
    name = db.prepared_statement(type(engine.dialect), statement).name
    rows = db.autocommit_rows(
        engine,
        text("SELECT generic_plans + custom_plans FROM pg_prepared_statements WHERE name = :n"),
        {"n": name},
    )
    return rows[0][0] if rows else 0


def test_a_hot_statement_is_prepared_once_and_then_only_executed(engine):
    statement = text("SELECT CAST(:n AS integer) * 2")
    results = [db.autocommit_rows(engine, statement, {"n": n}) for n in (1, 2, 3)]
    assert results == [[(2,)], [(4,)], [(6,)]]
    assert _executions(engine, statement) == 3


def test_a_statement_whose_table_changed_shape_is_prepared_again(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE prepared_probe (a integer)"))
        conn.execute(text("INSERT INTO prepared_probe VALUES (1)"))
    try:
        statement = text("SELECT * FROM prepared_probe")
        assert db.autocommit_rows(engine, statement, {}) == [(1,)]
        with engine.begin() as conn:  # a migration, from another connection
            conn.execute(text("ALTER TABLE prepared_probe ADD COLUMN b integer DEFAULT 2"))
        # PostgreSQL refuses the old plan ("cached plan must not change result type").
        assert db.autocommit_rows(engine, statement, {}) == [(1, 2)]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE prepared_probe"))


def test_a_connection_whose_prepared_statements_were_dropped_prepares_them_again(engine):
    statement = text("SELECT 7")
    assert db.autocommit_rows(engine, statement, {}) == [(7,)]
    with engine.connect() as conn:  # the pool's only connection, reset behind its back
        conn.exec_driver_sql("DEALLOCATE ALL")
        conn.commit()
    assert db.autocommit_rows(engine, statement, {}) == [(7,)]
    assert _executions(engine, statement) == 1


# ---- delivery writes that do not wait for the WAL flush -------------------------------------

_SYNCHRONOUS_COMMIT = text("SELECT current_setting('synchronous_commit')")


@pytest.fixture
def delivery_commit(monkeypatch):
    """Set WEBHOOKS_DELIVERY_COMMIT for one test."""

    def configure(value: str) -> None:
        monkeypatch.setenv("WEBHOOKS_DELIVERY_COMMIT", value)
        get_settings.cache_clear()

    yield configure
    monkeypatch.delenv("WEBHOOKS_DELIVERY_COMMIT", raising=False)
    get_settings.cache_clear()


def test_a_delivery_write_commits_without_waiting_for_the_flush_and_nothing_else_does(engine):
    assert db.autocommit_rows(engine, _SYNCHRONOUS_COMMIT, {}, flush=False) == [("off",)]
    # Only for that statement's own transaction: the pooled connection is back to normal.
    assert db.autocommit_rows(engine, _SYNCHRONOUS_COMMIT, {}) == [("on",)]


def test_a_fan_out_transaction_commits_without_waiting_for_the_flush(engine):
    with Session(engine) as session:
        db.commit_without_flush(session)
        assert session.execute(_SYNCHRONOUS_COMMIT).scalar() == "off"
        session.commit()
        assert session.execute(_SYNCHRONOUS_COMMIT).scalar() == "on"


def test_delivery_writes_wait_for_the_flush_when_configured_sync(engine, delivery_commit):
    delivery_commit("sync")
    assert db.autocommit_rows(engine, _SYNCHRONOUS_COMMIT, {}, flush=False) == [("on",)]
    with Session(engine) as session:
        db.commit_without_flush(session)
        assert session.execute(_SYNCHRONOUS_COMMIT).scalar() == "on"


def test_a_write_without_flush_is_still_committed_and_visible_at_once(engine):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE flush_probe (a integer)"))
    try:
        insert = text("INSERT INTO flush_probe VALUES (:a) RETURNING a")
        assert db.autocommit_rows(engine, insert, {"a": 5}, flush=False) == [(5,)]
        with engine.connect() as other:
            assert other.execute(text("SELECT a FROM flush_probe")).all() == [(5,)]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE flush_probe"))
