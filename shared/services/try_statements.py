"""A scheduled try's two database round trips on PostgreSQL: claim it, then record it.

A delivery attempt is the hot path of the whole service: every event becomes one per
endpoint. On PostgreSQL each of its two writes is one SQLAlchemy Core statement run in
autocommit, so it is a single round trip with no BEGIN, no COMMIT and no ORM unit of
work (profiles showed the ORM's flush and commit bookkeeping costing more CPU than the
HTTP post itself). Both statements are atomic on their own: the claim is one UPDATE,
the record is one statement whose parts (the delivery's update, the attempt's insert and
the endpoint's health mark) commit or fail together. Neither waits for the WAL flush at
its commit (``shared.db.ASYNC_COMMIT`` says why that loses nothing).

Anything unusual falls back to the ORM code in ``deliveries``: other databases (the
embedded SQLite default), a try that is not plainly due, a delivery that stopped being
pending while its post was in flight, and 410 answers (which disable the endpoint).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, bindparam, exists, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db import first_row
from ..models import Attempt, Delivery, Endpoint, Message
from ..models.base import UTCDateTime

_D = Delivery.__table__
_E = Endpoint.__table__
_M = Message.__table__
_A = Attempt.__table__

# What the post needs, read by the claim itself, by group: (group, column) in order.
CLAIM_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("delivery", _D.c.event_type),
    ("delivery", _D.c.organization_id),
    ("delivery", _D.c.max_attempts),
    ("endpoint", _E.c.id),
    ("endpoint", _E.c.url),
    ("endpoint", _E.c.payload_format),
    ("endpoint", _E.c.timeout_seconds),
    ("endpoint", _E.c.secret_encrypted),
    ("endpoint", _E.c.previous_secret_encrypted),
    ("endpoint", _E.c.previous_secret_expires_at),
    ("endpoint", _E.c.failing_since),
    ("endpoint", _E.c.scope),
    ("endpoint", _E.c.user_id),
    ("message", _M.c.id),
    ("message", _M.c.event_type),
    ("message", _M.c.payload),
    ("message", _M.c.timestamp),
    ("message", _M.c.custom),
    ("message", _M.c.test),
)

CLAIM = (
    update(_D)
    .where(
        _D.c.id == bindparam("delivery_id"),
        _D.c.status == "pending",
        _D.c.attempt_count == bindparam("previous"),
        or_(_D.c.lease_until.is_(None), _D.c.lease_until <= bindparam("now", type_=UTCDateTime)),
        or_(
            _D.c.next_attempt_at.is_(None),
            _D.c.next_attempt_at <= bindparam("due_by", type_=UTCDateTime),
        ),
        _E.c.id == _D.c.endpoint_id,
        _E.c.is_active.is_(True),
        _E.c.deleted_at.is_(None),
        _M.c.id == _D.c.message_id,
    )
    .values(lease_until=bindparam("lease", type_=UTCDateTime))
    .returning(*(column for _, column in CLAIM_COLUMNS))
)

# The fields a recorded try sets on its delivery, by what the try led to.
_OUTCOME_VALUES: dict[str, tuple[str, ...]] = {
    "delivered": ("delivered_at",),
    "retry": ("next_attempt_at", "enqueued_at", "last_failure_at"),
    "failed": ("failed_at", "last_failure_at"),
}


@lru_cache(maxsize=16)
def record_statement(outcome: str, health: str | None) -> Any:
    """The statement recording a try that led to ``outcome`` (delivered, retry, failed).

    ``health`` adds the endpoint's failure-streak mark: "failing" starts a streak,
    "healthy" ends one, None leaves the endpoint alone (the common case: no write).
    Returns one row (the delivery's manual-attempt count) when the try was recorded, none
    when the delivery had moved on (another try recorded it, or it is no longer pending).
    Parameters are named ``p_<field>``: Core would take a parameter named like a column
    of the updated table for an extra SET value.
    """
    now = bindparam("p_now", type_=UTCDateTime)
    values: dict[str, Any] = {
        "attempt_count": bindparam("p_try_number"),
        "lease_until": None,
        "last_attempt_at": now,
        "updated_at": now,
        "http_status_code": bindparam("p_status_code"),
        "error_message": bindparam("p_error_message"),
        "status": "pending" if outcome == "retry" else outcome,
    }
    for field in _OUTCOME_VALUES[outcome]:
        values[field] = bindparam(f"p_{field}", type_=UTCDateTime)
    if outcome != "retry":
        values["next_attempt_at"] = None
    recorded = (
        update(_D)
        .where(
            _D.c.id == bindparam("p_delivery_id"),
            _D.c.attempt_count == bindparam("p_previous"),
            _D.c.status == "pending",
        )
        .values(**values)
        .returning(_D.c.id, _D.c.extra_attempt_count)
        .cte("recorded")
    )
    attempt_columns = [
        "id",
        "delivery_id",
        "endpoint_id",
        "message_id",
        "organization_id",
        "url",
        "status",
        "status_code",
        "duration_ms",
        "trigger",
        "try_number",
        "response_body",
        "error",
        "created_at",
    ]
    attempt_values = [
        bindparam("p_attempt_id"),
        recorded.c.id,
        bindparam("p_endpoint_id"),
        bindparam("p_message_id"),
        bindparam("p_organization_id"),
        bindparam("p_url"),
        bindparam("p_attempt_status"),
        bindparam("p_status_code"),
        bindparam("p_duration_ms"),
        bindparam("p_trigger"),
        bindparam("p_try_number"),
        bindparam("p_response_body"),
        bindparam("p_error"),
        now,
    ]
    inserted = (
        insert(_A)
        .from_select(attempt_columns, select(*attempt_values).select_from(recorded))
        .cte("inserted")
    )
    ctes = [inserted]
    if health is not None:
        streak = (
            update(_E)
            .where(
                _E.c.id == bindparam("p_endpoint_id"),
                _E.c.failing_since.is_(None)
                if health == "failing"
                else _E.c.failing_since.is_not(None),
                exists(select(recorded.c.id)),
            )
            .values(failing_since=now if health == "failing" else None)
            .cte("streak")
        )
        ctes.append(streak)
    return select(recorded.c.extra_attempt_count).add_cte(*ctes)


def autocommit_engine(factory: sessionmaker[Session]) -> Engine | None:
    """The factory's engine when it is PostgreSQL (these statements), else None (the ORM)."""
    engine = factory.kw.get("bind")
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql":
        return None
    return engine


def claim(engine: Engine, params: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Run the claim; the post's columns by group, or None when the try was not claimed."""
    row = first_row(engine, CLAIM, params, flush=False)
    if row is None:
        return None
    parts: dict[str, dict[str, Any]] = {"delivery": {}, "endpoint": {}, "message": {}}
    for (group, column), value in zip(CLAIM_COLUMNS, row, strict=True):
        if isinstance(value, datetime):
            value = value.astimezone(UTC)  # the driver answers in the session's time zone
        parts[group][column.key] = value
    return parts


def record(engine: Engine, outcome: str, health: str | None, params: dict[str, Any]) -> int | None:
    """Run the record statement; the delivery's manual-attempt count, or None if not recorded."""
    row = first_row(engine, record_statement(outcome, health), params, flush=False)
    return None if row is None else int(row[0])
