"""Engine and session factory, one per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .config import get_settings

# Whether pooled connections are pinged at checkout (see skip_pre_ping).
_pre_ping = True


def skip_pre_ping() -> None:
    """Stop pinging pooled connections at checkout, for this process's next engine.

    The api pings, so that no request fails on a connection a restarted database closed.
    The worker does not: a ping is a round trip per transaction on its hottest path, its
    tasks retry on a database error, and its hot statements retry once on a fresh
    connection (shared.services.try_statements); the first failure empties the pool.
    """
    global _pre_ping
    _pre_ping = False
    reset()


def make_engine(url: str, *, pool_size: int = 16, pre_ping: bool = True) -> Engine:
    """An engine for PostgreSQL (pooled) or SQLite (WAL, shared between threads)."""
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
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=4,
        # A connection a restarted PostgreSQL closed is replaced, not handed to a request.
        pool_pre_ping=pre_ping,
        # Recycle before common proxies and firewalls drop idle connections.
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )


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
