"""A single reported event's ingest on PostgreSQL: two autocommit round trips.

One event per request is how a platform usually reports. In the request's own ORM
transaction it cost five round trips (BEGIN, the organization and its endpoints, the
message, its deliveries, COMMIT) and SQLAlchemy's per-statement bookkeeping, more CPU
than the HTTP request around it. Here it is one read, then one
statement that writes the message and its deliveries together: both writes commit or
neither does, and a repeated eventId writes nothing at all.

Arrays, custom sends, tests and organizations with many endpoints keep the
transactional path in ``ingest`` (so does the embedded SQLite default).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    DateTime,
    Engine,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..db import autocommit_rows
from ..models import Delivery, Endpoint, Message, Organization
from ..models.base import UTCDateTime

_O = Organization.__table__
_E = Endpoint.__table__
_M = Message.__table__
_D = Delivery.__table__

# What a fan-out reads of an endpoint, in the order of ``fanout.EndpointTarget``.
TARGET_COLUMNS = (
    _E.c.id,
    _E.c.organization_id,
    _E.c.event_types,
    _E.c.payload_format,
    _E.c.max_retries,
    # As JSON text: fan-out compiles each distinct filter once (``filters.stored_predicate``).
    cast(_E.c.filter, Text).label("filter"),
    _E.c.resource_id,
    _E.c.ordering,
)

# An endpoint that receives new messages: not deleted, not disabled.
RECEIVING = and_(_E.c.deleted_at.is_(None), _E.c.is_active.is_(True))


def organizations_with_targets(organizations: ColumnElement[bool]) -> Select:
    """The organizations ``organizations`` selects, each left-joined to its receiving endpoints.

    One row per endpoint, or one row of Nones beside an organization without any; at
    most ``cap`` rows (a bind parameter). An organization that does not exist has no row.
    """
    return (
        select(_O.c.id.label("org"), *TARGET_COLUMNS)
        .select_from(_O.outerjoin(_E, and_(_E.c.organization_id == _O.c.id, RECEIVING)))
        .where(organizations)
        .limit(bindparam("cap"))
    )


PLAN = organizations_with_targets(_O.c.id == bindparam("org"))

_NOW = bindparam("now", type_=UTCDateTime)

_MESSAGE = (
    insert(_M)
    .values(
        id=bindparam("id"),
        organization_id=bindparam("org"),
        event_type=bindparam("event_type"),
        event_id=bindparam("event_id"),
        payload=bindparam("payload"),  # JSON text, made by the caller
        timestamp=bindparam("timestamp"),
        trace_parent=bindparam("trace_parent"),
        custom=False,
        test=False,
        target_endpoint_id=None,
        fanned_out_at=_NOW,
        created_at=_NOW,
    )
    .on_conflict_do_nothing(index_elements=[_M.c.organization_id, _M.c.event_id])
    .returning(_M.c.id)
    .cte("message")
)


def _unnest(name: str, item_type: Any) -> Any:
    return func.unnest(cast(bindparam(name), ARRAY(item_type)))


# The columns of new deliveries that differ from row to row, in this order...
DELIVERY_COLUMNS = (
    "id",
    "message_id",
    "endpoint_id",
    "organization_id",
    "event_type",
    "max_attempts",
)
# ...the ordering columns of a fan-out's deliveries: resource and sequence (null for
# unordered ones), the due time (null: parked behind an earlier delivery of the resource)
# and whether a later delivery of this fan-out is parked behind this one...
ORDER_COLUMNS = ("resource_id", "sequence", "next_attempt_at", "enqueued_at", "successor_waits")
_ORDER_TYPES = {
    "sequence": Integer,
    "next_attempt_at": DateTime(timezone=True),
    "enqueued_at": DateTime(timezone=True),
    "successor_waits": Boolean,
}
# ...and those every new delivery starts with: pending, nothing tried, due now.
_PENDING_COLUMNS = (
    "status",
    "attempt_count",
    "extra_attempt_count",
    "next_attempt_at",
    "enqueued_at",
    "created_at",
    "updated_at",
)
_PENDING_VALUES = (literal("pending"), literal(0), literal(0), _NOW, _NOW, _NOW, _NOW)

# One delivery per target, each row joined to the message just written: when the
# eventId was a repeat, the message CTE is empty and so is this insert.
_DELIVERIES = (
    insert(_D)
    .from_select(
        [*DELIVERY_COLUMNS, *_PENDING_COLUMNS],
        select(
            _unnest("delivery_ids", String),
            _MESSAGE.c.id,
            _unnest("endpoint_ids", String),
            bindparam("org"),
            _unnest("event_types", String),
            _unnest("max_attempts", Integer),
            *_PENDING_VALUES,
        ).select_from(_MESSAGE),
    )
    .returning(_D.c.id)
    .cte("deliveries")
)

STORE = select(_MESSAGE.c.id).add_cte(_DELIVERIES)

# What a fan-out's rows all start with; their due time is one of the ORDER_COLUMNS.
_FIXED_COLUMNS, _FIXED_VALUES = zip(
    *(
        (name, value)
        for name, value in zip(_PENDING_COLUMNS, _PENDING_VALUES, strict=True)
        if name not in ORDER_COLUMNS
    ),
    strict=True,
)

# The deliveries of a fan-out of any size, in one statement of a dozen parameters: each
# column's values as one array. A multi-row VALUES list (SQLAlchemy's executemany) makes
# the process build and bind every parameter of every row, and PostgreSQL parse a statement
# of thousands of parameters per batch: a large fan-out took several times longer.
_FAN_OUT = (
    insert(_D)
    .from_select(
        [*DELIVERY_COLUMNS, *ORDER_COLUMNS, *_FIXED_COLUMNS],
        select(
            *(
                _unnest(f"p_{name}", Integer if name == "max_attempts" else String)
                for name in DELIVERY_COLUMNS
            ),
            *(_unnest(f"p_{name}", _ORDER_TYPES.get(name, String)) for name in ORDER_COLUMNS),
            *_FIXED_VALUES,
        ),
    )
    .on_conflict_do_nothing(index_elements=[_D.c.message_id, _D.c.endpoint_id])
    .returning(_D.c.id)
)


def postgresql_engine(session: Session) -> Engine | None:
    """The session's engine when it is PostgreSQL (these statements), else None."""
    engine = session.get_bind()
    if not isinstance(engine, Engine) or engine.dialect.name != "postgresql":
        return None
    return engine


def plan(engine: Engine, *, organization_id: str, cap: int) -> list[Any]:
    """The organization's rows: (org id, endpoint columns or Nones), at most ``cap``."""
    return autocommit_rows(engine, PLAN, {"org": organization_id, "cap": cap})


def store(engine: Engine, params: dict[str, Any]) -> bool:
    """Write the message and its deliveries; False (nothing written) for a repeated eventId.

    Not repeated after a dropped connection: the write may have committed, and the
    caller's client, told 503, reports again (an eventId makes that a duplicate).
    """
    return bool(autocommit_rows(engine, STORE, params, repeatable=False))


def insert_deliveries(session: Session, columns: list[list[Any]], *, now: Any) -> list[str]:
    """Insert pending deliveries, one per index of the ``DELIVERY_COLUMNS`` and then
    ``ORDER_COLUMNS`` lists; the ids inserted (a (message, endpoint) pair that already has
    one is skipped)."""
    # Named p_<column>: Core would take a parameter named like a column as a value for it.
    names = (*DELIVERY_COLUMNS, *ORDER_COLUMNS)
    params: dict[str, Any] = {
        f"p_{name}": values for name, values in zip(names, columns, strict=True)
    }
    params["now"] = now
    return list(session.connection().execute(_FAN_OUT, params).scalars())
