"""Engine and session factory, one per process."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from .config import get_settings

# Whether pooled connections are pinged at checkout (see skip_pre_ping).
_pre_ping = True


def skip_pre_ping() -> None:
    """Stop pinging pooled connections at checkout, for this process's next engine.

    The api pings connections that sat idle (see ``PING_AFTER_IDLE_SECONDS``). The worker
    does not: a ping is a round trip on its hottest path, its tasks retry on a database
    error, and its hot statements retry once on a fresh connection
    (shared.services.deliveries.records); the first failure empties the pool.
    """
    global _pre_ping
    _pre_ping = False
    reset()


# A pooled connection idle for longer than this is pinged before it is handed out, so
# that a request after a quiet spell never meets a connection a restarted PostgreSQL
# closed. One busy in the last seconds is not: under load a ping per checkout was a
# round trip per request, a large share of a single event's ingest,
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
            # The ping opened a transaction; hand the connection out idle, as the pool
            # keeps it (the autocommit statements below cannot start inside one).
            dbapi_conn.rollback()
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


# ---- commits that need not wait for the disk -----------------------------------------------

# The worker's delivery writes (a try's claim and record, a fan-out) are rebuilt from rows
# committed before them if a crash of PostgreSQL loses them: a lost claim is a lost lease,
# a lost fan-out leaves its messages owed a fan-out (beat's sweep makes it), a lost record
# leaves the try due, so it is made again (same webhook-id) and recorded then. So they may
# commit without waiting for the WAL flush, which is a large part of PostgreSQL's work per
# delivery. What a crash of
# PostgreSQL (not of a worker) can lose is the last few hundred milliseconds of such writes
# (3 x wal_writer_delay). Messages, endpoints and everything a client is answered about
# commit as usual. WEBHOOKS_DELIVERY_COMMIT=sync makes these wait too.
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off"


def delivery_commits_async() -> bool:
    """Whether the worker's delivery writes skip waiting for the WAL flush (see above)."""
    return get_settings().delivery_commit == "async"


def commit_without_flush(session: Session) -> None:
    """Let the session's current transaction commit without waiting for the WAL flush.

    For the delivery writes above only, and only on PostgreSQL when so configured.
    """
    if delivery_commits_async() and session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql(ASYNC_COMMIT)


# ---- statements handed to the driver -------------------------------------------------------


class PreparedStatement(NamedTuple):
    """A statement as PostgreSQL prepares it once per connection, and how it is run."""

    name: str
    prepare: str  # PREPARE <name> AS <the statement with $1, $2, ... parameters>
    execute: str  # EXECUTE <name>(%s, ...), for the driver
    order: tuple[str, ...]  # the parameters' names, by position
    literals: dict[str, Any]  # values the statement carries itself


@lru_cache(maxsize=64)
def prepared_statement(dialect_class: type, statement: Any) -> PreparedStatement:
    """A PostgreSQL statement in the form ``autocommit_rows`` prepares and executes it.

    Parameter types are left for PostgreSQL to infer from the columns they meet, so a
    value is checked against its column exactly as in a plain statement.
    """
    compiled = statement.compile(dialect=dialect_class(paramstyle="numeric_dollar"))
    order = tuple(compiled.positiontup or ())
    name = "wh_" + hashlib.sha1(compiled.string.encode()).hexdigest()[:20]
    arguments = ", ".join("%s" for _ in order)
    return PreparedStatement(
        name=name,
        prepare=f"PREPARE {name} AS {compiled.string}",
        execute=f"EXECUTE {name}({arguments})" if order else f"EXECUTE {name}",
        order=order,
        literals=dict(compiled.params),
    )


# Why a prepared statement could not run, though the statement itself is fine: it is not
# prepared on this connection (26000, a connection reset behind the pool's back), or a
# migration changed a table under it so its result would change shape (0A000, "cached plan
# must not change result type"). Nothing ran: a fresh connection prepares it anew.
_PREPARED_STATE_LOST = {"26000", "0A000"}


def autocommit_rows(
    engine: Engine,
    statement: Any,
    params: dict[str, Any],
    *,
    repeatable: bool = True,
    flush: bool = True,
) -> list[Any]:
    """Run one statement in autocommit on a pooled PostgreSQL connection; the rows it returns.

    For the hottest paths (a delivery's claim and record, a single event's ingest): one
    round trip with no BEGIN or COMMIT, and the statement handed to the driver as it is.
    SQLAlchemy's Connection (execution context, result wrapping, events) cost more CPU
    per call than the driver and the round trip together. On PostgreSQL each connection
    prepares the statement the first time it runs it: parsing and planning it every time
    was about half of the server's time for these statements. This needs
    connections that are PostgreSQL sessions of their own (a PgBouncer in session mode, not
    transaction mode). Errors are raised as SQLAlchemy's (IntegrityError,
    OperationalError), as elsewhere.

    After a database restart the first statement on an old connection fails (the worker's
    pool does not ping at checkout, the api's pings only idle connections); a
    ``repeatable`` statement (one that, run twice, does its work once) is then run once
    more on a fresh connection, and the pool is emptied.

    ``flush=False``: a delivery write whose commit need not wait for the WAL flush (see
    ``ASYNC_COMMIT``). The SET LOCAL travels in the same query string, so it is still
    one round trip, and it lasts only for this statement's own transaction.
    """
    prepared = prepared_statement(type(engine.dialect), statement)
    values = {**prepared.literals, **params}
    sql, arguments = prepared.execute, [values[name] for name in prepared.order]
    if not flush and delivery_commits_async():
        sql = f"{ASYNC_COMMIT}; {sql}"
    dbapi = engine.dialect.loaded_dbapi
    for attempt in (1, 2):
        try:
            pooled = engine.raw_connection()
        except dbapi.Error as exc:
            # raw_connection() hands the driver's error on unwrapped (the database is
            # down): raise it as SQLAlchemy's, which callers map to 503 or a task retry.
            raise DBAPIError.instance(sql, values, exc, dbapi.Error) from exc
        try:
            connection = pooled.driver_connection
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    ready = pooled.info.setdefault("prepared_statements", set())
                    if prepared.name not in ready:
                        cursor.execute(prepared.prepare)
                        ready.add(prepared.name)
                    cursor.execute(sql, arguments)
                    return cursor.fetchall() if cursor.description else []
            finally:
                if not connection.closed:
                    connection.autocommit = False
        except dbapi.Error as exc:
            gone = engine.dialect.is_disconnect(exc, connection, None)
            lost = getattr(exc, "pgcode", None) in _PREPARED_STATE_LOST
            if gone or lost:
                pooled.invalidate(exc)
            if gone:
                # The database went away (a restart): the other pooled connections are
                # stale too. A new pool replaces them; connections in use finish as they are.
                engine.dispose()
            if attempt == 1 and (lost or (gone and repeatable)):
                continue
            raise DBAPIError.instance(
                sql, values, exc, dbapi.Error, connection_invalidated=gone
            ) from exc
        finally:
            pooled.close()
    return []  # pragma: no cover - the loop returns or raises


def first_row(engine: Engine, statement: Any, params: dict[str, Any], *, flush: bool = True) -> Any:
    """``autocommit_rows`` for a repeatable statement of at most one row: that row or None."""
    rows = autocommit_rows(engine, statement, params, flush=flush)
    return rows[0] if rows else None


def postgres_engine(factory: sessionmaker[Session]) -> Engine | None:
    """The factory's engine when it is PostgreSQL (one-statement writes), else None."""
    engine = factory.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql":
        return None
    return engine
