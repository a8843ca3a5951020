"""Writing a decided attempt: one place per storage backend.

``shared.transitions`` decides what an attempt leads to from the delivery's state as the
attempt began; the writer here applies that decision only if the delivery is still in
that state (its status and attempt counts), as a compare-and-set. When it is not (a
manual attempt or a cancellation came in meanwhile) the writer answers the delivery's
state as it is now, and the caller decides again on that. Each writer records the attempt
row, the delivery's changes, the endpoint's failure streak, the manual request it
fulfils and, on a 410, the endpoint's disabling, all or nothing.

- PostgreSQL: one statement in autocommit (a data-modifying WITH: update the delivery,
  insert the attempt from what the update returned, mark the streak, forget the request):
  a single round trip with no ORM unit of work on the service's hot path.
- Every other database (the embedded SQLite default): the ORM in one transaction, with
  the delivery row locked where the database can.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum, StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, bindparam, delete, exists, insert, null, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ... import metrics
from ...db import first_row, postgres_engine
from ...models import Attempt, Delivery, Endpoint, ManualRequest
from ...models.base import UTCDateTime
from ...queue import Task, enqueue
from ...transitions import Decision, DeliveryState, Health
from ..endpoints import disable_endpoint
from .claimed import Claimed
from .endings import follow_up, follows
from .ordering import ends_in_line, release_with_record

log = logging.getLogger(__name__)

_D = Delivery.__table__
_E = Endpoint.__table__
_A = Attempt.__table__
_R = ManualRequest.__table__


class Written(StrEnum):
    """How a write went, when the delivery was not simply somewhere else by now."""

    WRITTEN = "written"
    # Written, and a later delivery of its resource may be parked behind it: its end must
    # let the next one go (``ordering.release_next``).
    WRITTEN_AHEAD = "written ahead of a waiting delivery"
    GONE = "gone"  # the delivery was deleted (its message purged)
    DUPLICATE = "duplicate"  # this attempt (or this scheduled try) is recorded already


# A writer: the claimed try, the decision and the attempt's id in; Written, or the
# delivery's state now when it moved on from the state the decision was taken on.
Writer = Callable[[Claimed, Decision, str], "Written | DeliveryState"]

ATTEMPT_COLUMNS = (
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
)


def attempt_values(claimed: Claimed, decision: Decision, attempt_id: str) -> dict[str, Any]:
    """The attempt row of a decision, by column."""
    fields = decision.attempt
    return {
        "id": attempt_id,
        "delivery_id": claimed.delivery_id,
        "endpoint_id": claimed.endpoint_id,
        "message_id": claimed.message_id,
        "organization_id": claimed.organization_id,
        "url": claimed.url,
        "status": fields.status.value,
        "status_code": fields.status_code,
        "duration_ms": fields.duration_ms,
        "trigger": fields.trigger.value,
        "try_number": fields.try_number,
        "response_body": fields.response_body,
        "error": fields.error,
        "created_at": fields.created_at,
    }


def writer_for(factory: sessionmaker[Session]) -> Writer:
    """The writer of the factory's database."""
    engine = postgres_engine(factory)
    if engine is None:
        return lambda claimed, decision, attempt_id: write_with_orm(
            factory, claimed, decision, attempt_id
        )
    return lambda claimed, decision, attempt_id: write_in_one_statement(
        engine, factory, claimed, decision, attempt_id
    )


# ---- PostgreSQL -------------------------------------------------------------------------


@lru_cache(maxsize=64)
def record_statement(
    columns: tuple[str, ...], health: Health | None, manual: bool, release: bool = False
) -> Any:
    """The statement writing a decision that sets ``columns`` of the delivery.

    Returns one row when it wrote (the delivery's id, whether a later delivery of its
    resource may still wait on it, the delivery released), none when the delivery is no
    longer in the expected state. Parameters: ``d_<column>`` for the delivery's new
    values, ``g_*`` for the expected state, ``a_<column>`` for the attempt. (Core would
    take a parameter named like a column of the updated table for an extra SET value,
    hence the prefixes.)

    ``release``: the decision ends a delivery of an ordered resource. The statement then
    locks the delivery first (its newest version, whatever the snapshot shows), lets the
    next delivery of the resource go if it is parked (``ordering.release_with_record``)
    and clears the mark that said one may wait, unless the release found none to let go.
    """
    guard = (
        _D.c.id == bindparam("g_id"),
        _D.c.status == bindparam("g_status"),
        _D.c.attempt_count == bindparam("g_attempt_count"),
        _D.c.extra_attempt_count == bindparam("g_extra_attempt_count"),
    )
    values: dict[str, Any] = {
        name: bindparam(f"d_{name}", type_=_D.c[name].type) for name in columns
    }
    released: Any = None
    if release:
        marked = select(_D.c.id, _D.c.successor_waits).where(*guard).with_for_update()
        marked = marked.cte("marked")
        released = release_with_record(marked)
        values["successor_waits"] = _D.c.successor_waits & ~exists(select(released.c.id))
    recorded = (
        update(_D)
        .where(*guard)
        .values(values)
        .returning(_D.c.id, _D.c.successor_waits)
        .cte("recorded")
    )
    row = [
        recorded.c.id if name == "delivery_id" else bindparam(f"a_{name}", type_=_A.c[name].type)
        for name in ATTEMPT_COLUMNS
    ]
    ctes: list[Any] = [
        insert(_A)
        .from_select(list(ATTEMPT_COLUMNS), select(*row).select_from(recorded))
        .cte("inserted")
    ]
    if health is not None:
        failing = health == Health.FAILING
        ctes.append(
            update(_E)
            .where(
                _E.c.id == bindparam("a_endpoint_id"),
                _E.c.failing_since.is_(None) if failing else _E.c.failing_since.is_not(None),
                exists(select(recorded.c.id)),
            )
            .values(
                failing_since=bindparam("a_created_at", type_=UTCDateTime) if failing else None,
                # A new streak is reported anew (docs/api.md §11.5: once per streak).
                failing_notified_at=None,
            )
            .cte("streak")
        )
    if manual:
        ctes.append(
            delete(_R)
            .where(_R.c.id == bindparam("a_id"), exists(select(recorded.c.id)))
            .cte("fulfilled")
        )
    next_id = select(released.c.id).scalar_subquery() if release else null()
    return select(recorded.c.id, recorded.c.successor_waits, next_id).add_cte(*ctes)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


# The delivery's state now, read when a write found it moved on (in DeliveryState's order).
STATE_NOW = select(
    _D.c.status,
    _D.c.attempt_count,
    _D.c.extra_attempt_count,
    _D.c.max_attempts,
    _D.c.next_attempt_at,
    _D.c.lease_until,
    _D.c.sequence,
).where(_D.c.id == bindparam("g_id"))


def write_in_one_statement(
    engine: Engine,
    factory: sessionmaker[Session],
    claimed: Claimed,
    decision: Decision,
    attempt_id: str,
) -> Written | DeliveryState:
    """Write a decision on PostgreSQL: one statement, then the endpoint's disabling if any."""
    expected = decision.expected
    params: dict[str, Any] = {
        "g_id": claimed.delivery_id,
        "g_status": _plain(expected.status),
        "g_attempt_count": expected.attempt_count,
        "g_extra_attempt_count": expected.extra_attempt_count,
    }
    params.update({f"d_{k}": _plain(v) for k, v in decision.changes.items()})
    params.update({f"a_{k}": v for k, v in attempt_values(claimed, decision, attempt_id).items()})
    release = ends_in_line(claimed, decision)
    if release:
        params.update(
            ended_id=claimed.delivery_id,
            k_endpoint_id=claimed.endpoint_id,
            k_resource_id=claimed.resource_id,
            now=decision.attempt.created_at,
        )
    statement = record_statement(tuple(decision.changes), decision.health, decision.manual, release)
    try:
        written = first_row(engine, statement, params, flush=False)
    except IntegrityError:
        return Written.DUPLICATE
    if written is None:
        row = first_row(engine, STATE_NOW, {"g_id": claimed.delivery_id}, flush=False)
        return Written.GONE if row is None else DeliveryState(*row)
    metrics.count_attempt(
        decision.attempt.status_code,
        decision.attempt.trigger,
        decision.attempt.duration_ms,
        completed=decision.completed,
    )
    if decision.disable_reason or follows(claimed, decision):
        with factory() as session:
            if decision.disable_reason:
                disable_endpoint(
                    session, endpoint_id=claimed.endpoint_id, reason=decision.disable_reason
                )
            follow_up(session, claimed, decision)
            session.commit()
    if written[2] is not None:
        enqueue(Task.DELIVER, written[2], 1, organization=claimed.organization_id)
    return Written.WRITTEN_AHEAD if release and written[1] else Written.WRITTEN


# ---- any other database -------------------------------------------------------------------


def write_with_orm(
    factory: sessionmaker[Session], claimed: Claimed, decision: Decision, attempt_id: str
) -> Written | DeliveryState:
    """Write a decision through the ORM, in one transaction (metrics count it on commit)."""
    with factory() as session:
        delivery = session.scalars(
            select(Delivery).where(Delivery.id == claimed.delivery_id).with_for_update()
        ).first()
        if delivery is None:
            return Written.GONE
        now = DeliveryState.of(delivery)
        if now.guard != decision.expected.guard:
            session.rollback()
            return now
        for name, value in decision.changes.items():
            setattr(delivery, name, _plain(value))
        session.add(Attempt(**attempt_values(claimed, decision, attempt_id)))
        if decision.health is not None:
            failing = decision.health == Health.FAILING
            session.execute(
                update(Endpoint)
                .where(
                    Endpoint.id == claimed.endpoint_id,
                    Endpoint.failing_since.is_(None)
                    if failing
                    else Endpoint.failing_since.is_not(None),
                )
                .values(
                    failing_since=decision.attempt.created_at if failing else None,
                    failing_notified_at=None,
                )
            )
        if decision.manual:
            session.execute(delete(ManualRequest).where(ManualRequest.id == attempt_id))
        try:
            # Inside the guard: their queries flush the attempt row, where a duplicate shows.
            if decision.disable_reason:
                disable_endpoint(
                    session, endpoint_id=claimed.endpoint_id, reason=decision.disable_reason
                )
            follow_up(session, claimed, decision)
            # Read after the writes above: the transaction holds the database's write lock
            # by now, so a fan-out's mark (``ordering.wait_in_line``) is in or waits.
            ahead = ends_in_line(claimed, decision) and bool(
                session.scalar(
                    select(Delivery.successor_waits).where(Delivery.id == claimed.delivery_id)
                )
            )
            session.commit()
        except IntegrityError:
            session.rollback()
            return Written.DUPLICATE
    return Written.WRITTEN_AHEAD if ahead else Written.WRITTEN
