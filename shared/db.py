"""Engine and session factory, one per process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from .config import get_settings

# Whether pooled connections are pinged at checkout (see skip_pre_ping).
_pre_ping = True


def skip_pre_ping() -> None:
    """Stop pinging pooled connections at checkout, for this process's next engine.

    The api pings connections that sat idle (see ``PING_AFTER_IDLE_SECONDS``). The worker
    does not: a ping is a round trip on its hottest path, its tasks retry on a database
    error, and its hot statements retry once on a fresh connection
    (shared.services.try_statements); the first failure empties the pool.
    """
    global _pre_ping
    _pre_ping = False
    reset()


# A pooled connection idle for longer than this is pinged before it is handed out, so
# that a request after a quiet spell never meets a connection a restarted PostgreSQL
# closed. One busy in the last seconds is not: under load a ping per checkout was a
# round trip per request (7% of the single-event ingest's time, benchmark scenario 6),
# and a restart under load fails the statements already in flight anyway. The first
# disconnect seen empties the whole pool (SQLAlchemy invalidates every older
# connection), so a restart costs at most the requests already holding a connection.
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _used(_dbapi_conn, record) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (PoolEvents.checkout).
            raise DisconnectionError(str(exc)) from exc


def make_engine(url: str, *, pool_size: int = 16, pre_ping: bool = True) -> Engine:
    """An engine for PostgreSQL (pooled) or SQLite (WAL, shared between threads).

    ``pre_ping``: ping PostgreSQL connections that were idle before handing them out.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            # WAL lets the api read while the worker writes; busy_timeout waits instead of failing.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=4,
        # Recycle before common proxies and firewalls drop idle connections.
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
    if pre_ping:
        _ping_idle_connections(engine)
    return engine


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine."""
    settings = get_settings()
    # Threads hold a connection only around their short transactions (never during an
    # HTTP request), so a pool far smaller than the thread count serves them; several
    # processes x pool_size must stay under PostgreSQL's max_connections (100 by default).
    return make_engine(
        settings.database_url,
        pool_size=min(settings.worker_concurrency, 16),
        pre_ping=_pre_ping,
    )


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    """The process-wide session factory."""
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def reset() -> None:
    """Drop the cached engine (tests, and after a fork)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has committed (never on rollback).

    The broker only carries ids, so work is enqueued after the rows it names exist.
    """
    session.info.setdefault("after_commit", []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)
