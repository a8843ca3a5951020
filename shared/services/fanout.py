"""Fan-out: one pending delivery per (message, matching endpoint), and its first try queued.

Made in the accepting request for small fan-outs (``shared.services.ingest``) and by the
fan-out task for the rest (``fan_out``).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import events, filters, metrics, tracing
from ..db import after_commit, commit_without_flush
from ..models import Delivery, Endpoint, Message, Ordering, new_id, utcnow
from ..queue import Task, enqueue, enqueue_many_after_commit
from . import ingest_statements, sequences

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as just written: the columns of ``Message``, without an ORM object.

    Building ORM instances for rows the request only answers with is a noticeable part of
    a single event's ingest, for objects no session ever needs.
    """

    id: str
    organization_id: str
    event_type: str
    event_id: str | None
    payload: dict
    timestamp: str
    custom: bool
    test: bool
    target_endpoint_id: str | None
    fanned_out_at: datetime | None
    created_at: datetime
    trace_parent: str | None = None


class EndpointTarget(NamedTuple):
    """What a fan-out reads of an endpoint (``ingest_statements.TARGET_COLUMNS``)."""

    id: str
    organization_id: str
    event_types: list[str]
    payload_format: str
    max_retries: int
    filter: str | None  # its payload filter as JSON text, or None
    resource_id: str | None = None
    ordering: str = "none"


def insert_skipping_conflicts(
    session: Session, model: type, rows: list[dict], *, unique: list[str]
) -> list[str]:
    """Insert rows, skipping those that clash on the ``unique`` columns; the ids inserted.

    The rows go as one executemany on the session's connection (SQLAlchemy Core: the
    ORM's bulk path cost a fifth of the ingest's CPU for rows it never needs as
    objects), so the statement is compiled once and cached; a multi-row VALUES literal
    would be compiled anew for every batch size.
    """
    if not rows:
        return []
    connection = session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    table = model.__table__
    stmt = insert(table).on_conflict_do_nothing(index_elements=unique).returning(table.c.id)
    # One row goes as a plain execute: the executemany machinery costs more than the row.
    return list(connection.execute(stmt, rows[0] if len(rows) == 1 else rows).scalars())


def endpoint_targets(message: StoredMessage | Row, endpoints: list) -> list[tuple[str, int, str]]:
    """Where a message goes: (endpoint id, its max_retries, the event name it carries there)."""
    names = events.resolve_names(message.event_type, message.payload)
    if message.test:
        return [
            (e.id, e.max_retries, events.delivery_name(list(names.all), names, e.payload_format))
            for e in endpoints
            if e.id == message.target_endpoint_id
        ]
    targets = []
    for endpoint in endpoints:
        if message.custom and endpoint.payload_format == "e2b":
            continue  # docs/api.md §4.2: custom events never go to the team hook
        if endpoint.resource_id is not None and endpoint.resource_id != message.payload.get("id"):
            continue  # docs/api.md §11.4: bound to another resource
        name = events.delivery_name(endpoint.event_types, names, endpoint.payload_format)
        if name is None:
            continue
        # docs/api.md §11.2: a filter the event fails makes no delivery (tests ignore it,
        # above; resends and recover do not come through here).
        matches = filters.stored_predicate(endpoint.filter)
        if matches is None or matches(message.payload):
            targets.append((endpoint.id, endpoint.max_retries, name))
    return targets


@tracing.traced("webhooks.fan_out")
def create_deliveries(
    session: Session,
    messages: Sequence[StoredMessage | Row],
    endpoints_by_org: dict[str, list],
    now: datetime,
) -> list[str]:
    """One pending delivery per (message, matching endpoint), enqueued after the commit.

    The messages are fanned out by this transaction: they are counted when it commits.
    """
    # One tuple per delivery, in the order of ingest_statements.DELIVERY_COLUMNS.
    rows = []
    for message in messages:
        targets = endpoint_targets(message, endpoints_by_org.get(message.organization_id, []))
        for endpoint_id, max_retries, name in targets:
            # docs/api.md §5: max_attempts is max_retries + 1 for every delivery. A test is one
            # attempt (trigger "test"), never retried (shared.services.deliveries).
            rows.append(
                (
                    new_id("whd"),
                    message.id,
                    endpoint_id,
                    message.organization_id,
                    name,
                    max_retries + 1,
                )
            )
    tracing.annotate_fan_out(messages, deliveries=len(rows))
    order, behind = _ordering_columns(session, messages, rows, endpoints_by_org, now)
    if not rows:
        created = []
    elif ingest_statements.postgresql_engine(session) is not None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        created = ingest_statements.insert_deliveries(session, columns + order, now=now)
    else:
        pending = {
            "status": "pending",
            "attempt_count": 0,
            "extra_attempt_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        created = insert_skipping_conflicts(
            session,
            Delivery,
            [
                {
                    **dict(zip(ingest_statements.DELIVERY_COLUMNS, row, strict=True)),
                    **dict(zip(ingest_statements.ORDER_COLUMNS, ordered, strict=True)),
                    **pending,
                }
                for row, ordered in zip(rows, zip(*order, strict=True), strict=True)
            ],
            unique=["message_id", "endpoint_id"],
        )
    # Last, so that the predecessors stay locked only for the end of this transaction (a
    # worker releasing one of them waits for the commit).
    made_due = _wait_in_line(session, rows, behind, now)
    # delivery id -> organization id (its lane); parked deliveries get no task
    owner = {
        row[0]: row[3]
        for i, (row, due) in enumerate(zip(rows, order[2], strict=True))
        if due is not None or i in made_due
    }
    due = [d for d in created if d in owner]
    enqueue_many_after_commit(session, Task.DELIVER, [(d, 1) for d in due], [owner[d] for d in due])
    metrics.count_fanned_out(session, messages)
    return created


def _ordering_columns(
    session: Session,
    messages: Sequence[StoredMessage | Row],
    rows: list[tuple],
    endpoints_by_org: dict[str, list],
    now: datetime,
) -> tuple[list[list], list[tuple[tuple[str, str, int], int]]]:
    """The ``ORDER_COLUMNS`` lists of a fan-out's delivery rows (docs/api.md §11.3), and
    the rows made parked behind a delivery made before: ((endpoint, resource, sequence
    before), row index), for ``_wait_in_line``.

    Deliveries to an ordered endpoint of an event with a resource get the resource and
    their sequence; every other one gets nulls. A delivery behind an earlier one of its
    resource (made before, or earlier in this fan-out) is made parked: no due time, no
    task, until the one before it ends (``deliveries.ordering``). The rest are due now.
    """
    resource_ids: list[str | None] = [None] * len(rows)
    numbers: list[int | None] = [None] * len(rows)
    due: list[datetime | None] = [now] * len(rows)
    ahead = [False] * len(rows)
    behind_earlier: list[tuple[tuple[str, str, int], int]] = []
    ordered = sequences.ordered_endpoints(endpoints_by_org)
    if ordered:
        resources = {m.id: sequences.resource_of(m) for m in messages}
        # rows are in the messages' order: a resource's deliveries are numbered that way.
        at = [i for i, row in enumerate(rows) if row[2] in ordered and resources[row[1]]]
        keys = [(rows[i][2], resources[rows[i][1]]) for i in at]
        numbered = sequences.assign_sequences(session, keys, now=now)
        last: dict[tuple[str, str], int] = {}  # each key's latest row in this fan-out
        # behind_earlier: the rows first of their key here, following deliveries made before
        for i, key, number in zip(at, keys, numbered, strict=True):
            resource_ids[i], numbers[i] = key[1], number
            if key in last:
                ahead[last[key]], due[i] = True, None
            elif number > 1:
                behind_earlier.append(((*key, number - 1), i))
                due[i] = None
            last[key] = i
    return [resource_ids, numbers, due, due, ahead], behind_earlier


def _wait_in_line(
    session: Session,
    rows: list[tuple],
    behind: list[tuple[tuple[str, str, int], int]],
    now: datetime,
) -> set[int]:
    """Mark the predecessors still pending of the rows made parked behind them; the rows
    whose predecessor has ended are made due instead. Returns those rows' indexes."""
    if not behind:
        return set()
    waiting = sequences.wait_in_line(session, [key for key, _ in behind])
    made_due = {
        i
        for (endpoint_id, resource_id, _), i in behind
        if (endpoint_id, resource_id) not in waiting
    }
    if made_due:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_([rows[i][0] for i in made_due]))
            .values(next_attempt_at=now, enqueued_at=now)
        )
    return made_due


# Advisory lock class of "fanning out this organization's messages" (PostgreSQL).
_FAN_OUT_LOCK = 0x57484B46
# Messages owed a fan-out per task sent for them (after a fan-out's commit, by the sweep).
OWED_PER_TASK = 100


def _cutoffs(connection: Connection, message_ids: list[str]) -> list[tuple[str, datetime]]:
    """Of the messages' organizations, those with an ordered endpoint: (org, latest message)."""
    table = Message.__table__
    endpoints = Endpoint.__table__
    ordered = (
        select(endpoints.c.id)
        .where(
            endpoints.c.organization_id == table.c.organization_id,
            endpoints.c.ordering == Ordering.RESOURCE,
            ingest_statements.RECEIVING,
        )
        .exists()
    )
    rows = connection.execute(
        select(table.c.organization_id, func.max(table.c.created_at))
        .where(table.c.id.in_(message_ids), ordered)
        .group_by(table.c.organization_id)
        .order_by(table.c.organization_id)
    ).all()
    return [(org, cutoff) for org, cutoff in rows]


def _drain_locks(connection: Connection, organizations: list[str]) -> bool:
    """Take each organization's fan-out lock until the commit; False if one is taken.

    On PostgreSQL only: elsewhere (SQLite) writers take turns anyway.
    """
    if connection.dialect.name != "postgresql":
        return True
    for organization in organizations:
        key = zlib.crc32(organization.encode()) - 2**31  # PostgreSQL's int4
        if not connection.scalar(select(func.pg_try_advisory_xact_lock(_FAN_OUT_LOCK, key))):
            return False
    return True


def _send_owed_on(engine: Engine, organizations: list[str]) -> None:
    """After a fan-out holding these organizations' locks committed: one fan-out task per
    organization for its oldest messages still owed one, if any.

    They include those of the tasks that found the lock taken meanwhile and ended. The
    task sent takes the lock in turn; if it finds it taken, the one holding it sends
    them on after its own commit. Should this fail (the database went away), beat's sweep
    sends owed fan-outs on.
    """
    table = Message.__table__
    owed: dict[str, list[str]] = {}
    try:
        with engine.connect() as connection:
            for organization in organizations:
                owed[organization] = list(
                    connection.scalars(
                        select(table.c.id)
                        .where(
                            table.c.fanned_out_at.is_(None),
                            table.c.organization_id == organization,
                        )
                        .order_by(table.c.created_at)
                        .limit(OWED_PER_TASK)
                    )
                )
    except SQLAlchemyError as exc:
        log.warning("could not look for fan-outs still owed (%s); the sweep will send them", exc)
        return
    for organization, message_ids in owed.items():
        if message_ids:
            enqueue(Task.FANOUT, message_ids, organization=organization)


def fan_out(session: Session, *, message_ids: list[str]) -> list[str]:
    """Create one delivery per matching active endpoint; returns the new delivery ids.

    The fan-out task's work, for messages accepted without one. Run twice, it creates
    nothing new: the first run marks the messages fanned out in the statement that reads
    them (two runs at once: the second waits for the first's row locks, then finds them
    marked), and (message, endpoint) is unique. Its commit does not wait for the WAL flush
    (``shared.db.ASYNC_COMMIT``): a crash that loses it leaves the messages owed a fan-out.

    docs/api.md §11.3: an ordered endpoint numbers a resource's deliveries in the order
    their messages were accepted, and fan-out tasks run in any order. So for an
    organization with an ordered endpoint, one task at a time fans out (a lock per
    organization until its commit), and it also fans out the earlier messages still owed
    one (their own task then finds nothing to do). A task that finds the lock taken ends
    at once: it neither holds a worker thread while it waits nor polls. The task holding
    the lock sends the organization's messages still owed a fan-out on once it has
    committed (``_send_owed_on``): its messages were committed before it ran, so before
    that commit. Other organizations' fan-outs stay independent of each other.
    """
    commit_without_flush(session)
    table = Message.__table__
    now = utcnow()
    connection = session.connection()
    cutoffs = _cutoffs(connection, message_ids)
    organizations = [org for org, _ in cutoffs]
    if not _drain_locks(connection, organizations):
        session.rollback()
        return []
    if organizations and connection.dialect.name == "postgresql":
        engine = connection.engine
        after_commit(session, lambda: _send_owed_on(engine, organizations))
    earlier = [
        and_(table.c.organization_id == org, table.c.created_at < cutoff) for org, cutoff in cutoffs
    ]
    claim = (
        update(table)
        .where(table.c.fanned_out_at.is_(None), or_(table.c.id.in_(message_ids), *earlier))
        .values(fanned_out_at=now)
        .returning(
            table.c.id,
            table.c.organization_id,
            table.c.event_type,
            table.c.payload,
            table.c.custom,
            table.c.test,
            table.c.target_endpoint_id,
            table.c.created_at,
        )
    )
    messages = connection.execute(claim).all()
    if not messages:
        return []
    # In the order they were accepted: an ordered endpoint's sequences follow it.
    messages.sort(key=lambda m: (m.created_at, m.id))
    org_ids = {m.organization_id for m in messages}
    endpoints_by_org: dict[str, list] = {org: [] for org in org_ids}
    query = select(*ingest_statements.TARGET_COLUMNS).where(
        Endpoint.organization_id.in_(org_ids), ingest_statements.RECEIVING
    )
    for endpoint in connection.execute(query):
        endpoints_by_org[endpoint.organization_id].append(endpoint)
    return create_deliveries(session, messages, endpoints_by_org, now)
