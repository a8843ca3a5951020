"""Messages: accepting events and custom sends, fanning them out, and reading them back."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Engine, Select, and_, bindparam, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from .. import events, metrics, payloads, tracing
from ..config import get_settings
from ..db import commit_without_flush
from ..errors import Conflict, Invalid, NotFound, PayloadTooLarge
from ..event_catalog import STATE_FIELDS
from ..models import Attempt, Delivery, Endpoint, Message, Organization, new_id, utcnow
from ..queue import Task, enqueue_after_commit, enqueue_many, enqueue_many_after_commit
from . import ingest_statements
from .auth import Principal
from .endpoints import get_endpoint

MAX_BATCH = 1000
EVENT_ID_MAX = 256
# A fan-out this small is made in the accepting transaction itself: a Celery task per
# message cost the workers about 3 ms of CPU and a queue hop before the first delivery
# (benchmark scenarios 2 and 6). Larger ones (an array to many endpoints, an
# organization with many endpoints) go to a fan-out task so that the request stays
# short (scenario 3: 1,000 endpoints). The bound is on endpoints and on deliveries
# (messages x endpoints), so that an array to an organization with no endpoints, or few,
# costs no task either.
INLINE_FANOUT_ENDPOINTS = 50
INLINE_FANOUT_DELIVERIES = 500


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as just written: the columns of ``Message``, without an ORM object.

    Building ORM instances for rows the request only answers with cost 8% of the
    single-event ingest's CPU (benchmark scenario 6).
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


@dataclass
class Accepted:
    """The outcome of accepting one event: its message, and whether it was a repeat."""

    message: Message | StoredMessage
    duplicate: bool


@dataclass(frozen=True, slots=True)
class MessageWithDeliveries:
    """A message with its deliveries to the endpoints the reader can see."""

    message: Message
    deliveries: list[Delivery]


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    """An ISO 8601 time as aware UTC; Invalid otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{field} must be an ISO 8601 date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(f"{field} must be an ISO 8601 date-time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 at +14:00, year 9999 at -14:00: beyond datetime's range
        raise Invalid(f"{field} is out of range, got {value!r}") from None


def _check_event_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > EVENT_ID_MAX:
        raise Invalid(f"eventId must be a non-empty string of at most {EVENT_ID_MAX} characters")
    return value


@dataclass
class _Draft:
    organization_id: str
    event_type: str
    event_id: str | None
    payload: dict
    timestamp: str
    custom: bool = False
    test: bool = False
    target_endpoint_id: str | None = None


def _required_string(value: object, name: str) -> str:
    """A required non-empty string field of an event, or Invalid saying what is wrong."""
    if value is None:
        raise Invalid(f"{name} is required")
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if not value:
        raise Invalid(f"{name} must not be empty")
    return value


def _validate_platform_event(raw: object, max_bytes: int | None) -> _Draft:
    """A draft of one reported event; ``max_bytes`` None when its body was measured already."""
    if not isinstance(raw, dict):
        raise Invalid("an event must be a JSON object")
    fields = dict(raw)
    event_type = _required_string(fields.pop("event", None), "event")
    if event_type not in events.CATALOG:
        raise Invalid(f"Invalid event type: {event_type}")
    org_id = _required_string(fields.get("organizationId"), "organizationId")
    _required_string(fields.get("id"), "id")
    state_field = STATE_FIELDS.get(event_type)
    if state_field is not None:
        _required_string(fields.get(state_field), state_field)
    event_id = _check_event_id(fields.pop("eventId", None))
    timestamp = fields.pop("timestamp", None)
    stamp = payloads.format_timestamp(
        parse_timestamp(timestamp) if timestamp is not None else utcnow()
    )
    # Counted as UTF-8 bytes of the compact JSON (SPEC 10: each event of an array within
    # the limit); json's default ASCII escapes would count an "é" as six bytes.
    if max_bytes is not None:
        size = len(json.dumps(raw, ensure_ascii=False, separators=(",", ":")).encode())
        if size > max_bytes:
            raise PayloadTooLarge(f"event is larger than {max_bytes} bytes")
    return _Draft(org_id, event_type, event_id, fields, stamp)


def ingest_events(session: Session, *, raw_events: list[object], single: bool) -> list[Accepted]:
    """Accept platform events all-or-nothing, de-duplicated by (organization, eventId)."""
    if not single and not 1 <= len(raw_events) <= MAX_BATCH:
        raise Invalid(f"an array must hold 1 to {MAX_BATCH} events")
    # One event alone is its request body, which the api has held to the limit already.
    max_bytes = None if single else get_settings().max_payload_bytes
    drafts = []
    for index, raw in enumerate(raw_events):
        try:
            drafts.append(_validate_platform_event(raw, max_bytes))
        except (Invalid, PayloadTooLarge) as exc:
            if single:
                raise
            raise type(exc)(f"event {index}: {exc.message}") from None
    if single and (engine := ingest_statements.postgresql_engine(session)) is not None:
        accepted = _accept_one(session, engine, drafts[0])
        if accepted is not None:
            return [accepted]
    plan = _plan_fan_out(session, drafts)
    for index, draft in enumerate(drafts):
        if draft.organization_id not in plan.organizations:
            if single:
                raise NotFound(f"Organization {draft.organization_id} not found")
            raise Invalid(f"event {index}: organization {draft.organization_id} not found")
    return _store(session, drafts, plan)


class EndpointTarget(NamedTuple):
    """What a fan-out reads of an endpoint (``ingest_statements.TARGET_COLUMNS``)."""

    id: str
    organization_id: str
    event_types: list[str]
    payload_format: str
    max_retries: int


@tracing.traced("webhooks.fan_out")
def _accept_one(session: Session, engine: Engine, draft: _Draft) -> Accepted | None:
    """Accept one event in two autocommit round trips (``ingest_statements``).

    None when the organization has more endpoints than a request fans out itself: the
    caller then takes the transactional path, which leaves the fan-out to a task.
    """
    cap = INLINE_FANOUT_ENDPOINTS + 2  # past the limit, and past the organization's own row
    rows = ingest_statements.plan(engine, organization_id=draft.organization_id, cap=cap)
    if not rows:
        raise NotFound(f"Organization {draft.organization_id} not found")
    if len(rows) > INLINE_FANOUT_ENDPOINTS:
        return None
    endpoints = [EndpointTarget(*row[1:]) for row in rows if row[1] is not None]
    now = utcnow()
    message = StoredMessage(
        id=new_id("evt"),
        organization_id=draft.organization_id,
        event_type=draft.event_type,
        event_id=draft.event_id,
        payload=draft.payload,
        timestamp=draft.timestamp,
        custom=False,
        test=False,
        target_endpoint_id=None,
        fanned_out_at=now,
        created_at=now,
        trace_parent=tracing.current_parent(),
    )
    targets = _endpoint_targets(message, endpoints)
    delivery_ids = [new_id("whd") for _ in targets]
    tracing.annotate_fan_out([message], deliveries=len(delivery_ids))
    written = ingest_statements.store(
        engine,
        {
            "id": message.id,
            "org": message.organization_id,
            "event_type": message.event_type,
            "event_id": message.event_id,
            "payload": json.dumps(message.payload, separators=(",", ":")),
            "timestamp": message.timestamp,
            "trace_parent": message.trace_parent,
            "now": now,
            "delivery_ids": delivery_ids,
            "endpoint_ids": [endpoint_id for endpoint_id, _, _ in targets],
            "event_types": [name for _, _, name in targets],
            # SPEC 5: max_retries + 1 for every delivery.
            "max_attempts": [max_retries + 1 for _, max_retries, _ in targets],
        },
    )
    if not written:  # a repeated eventId: the first message answers
        first = session.scalars(
            select(Message).where(
                Message.organization_id == draft.organization_id,
                Message.event_id == draft.event_id,
            )
        ).one()
        return Accepted(first, duplicate=True)
    enqueue_many(Task.DELIVER, [(d, 1) for d in delivery_ids])
    metrics.count_committed_messages([message])
    return Accepted(message, duplicate=False)


def send_custom(
    session: Session,
    *,
    principal: Principal,
    organization_id: str,
    event_type: object,
    payload: object,
    event_id: object = None,
) -> Accepted:
    """Accept a custom message from an organization member (SPEC 6.2 send)."""
    principal.check_organization(organization_id)
    if not isinstance(event_type, str) or not event_type:
        raise Invalid("eventType is required")
    if not events.is_custom_event_name(event_type):
        if event_type in events.CATALOG_NAMES:
            raise Invalid(
                f"eventType {event_type} is a platform event; send only custom event types"
            )
        raise Invalid(f"Invalid event type: {event_type}")
    if not isinstance(payload, dict):
        raise Invalid("payload must be a JSON object")
    stamp = payloads.format_timestamp(utcnow())
    draft = _Draft(
        principal.organization_id,
        event_type,
        _check_event_id(event_id),
        payload,
        stamp,
        custom=True,
    )
    return _store(session, [draft], _plan_fan_out(session, [draft]))[0]


def send_test(
    session: Session,
    *,
    principal: Principal,
    endpoint_id: str,
    event_type: object,
    extra_fields: dict[str, Any] | None = None,
) -> Message | StoredMessage:
    """Send a catalog type's example (plus ``extra_fields``) to one endpoint, whatever it
    subscribes to."""
    endpoint = get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not endpoint.is_active:
        raise Conflict(f"Webhook endpoint {endpoint_id} is disabled")
    if not isinstance(event_type, str) or not event_type:
        raise Invalid("eventType is required")
    canonical, fields = events.example_event(event_type, organization_id=principal.organization_id)
    now = utcnow()
    fields = {k: v for k, v in fields.items() if k not in ("event", "timestamp")}
    fields.update(extra_fields or {})
    draft = _Draft(
        principal.organization_id,
        canonical,
        None,
        fields,
        payloads.format_timestamp(now),
        test=True,
        target_endpoint_id=endpoint.id,
    )
    return _store(session, [draft], _plan_fan_out(session, [draft]))[0].message


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


@dataclass
class _Plan:
    """What accepting a set of messages found out before writing them."""

    organizations: set[str]  # those of the messages' organizations that exist
    # Active endpoints by organization when the fan-out is made in the accepting
    # transaction; None when a fan-out task makes it.
    endpoints: dict[str, list] | None


def _plan_fan_out(session: Session, drafts: list[_Draft]) -> _Plan:
    """Which organizations exist and, for a small fan-out, their active endpoints.

    One statement: the organizations left-joined to their active endpoints, cut just
    past the inline limits, which also tells whether the fan-out is small enough to make
    now. When it was cut, the organizations are read alone and a task fans out.
    """
    org_ids = sorted({d.organization_id for d in drafts})
    connection = session.connection()
    limit = min(INLINE_FANOUT_ENDPOINTS, INLINE_FANOUT_DELIVERIES // len(drafts))
    cap = limit + len(org_ids) + 1  # each organization is one row even with no endpoint
    rows = connection.execute(_organizations_and_endpoints(), {"orgs": org_ids, "cap": cap}).all()
    if len(rows) < cap:  # every organization and every endpoint is in the rows
        endpoints: dict[str, list] = {row.org: [] for row in rows}
        for row in rows:
            if row.id is not None:
                endpoints[row.org].append(row)
        small = sum(len(found) for found in endpoints.values()) <= limit
        return _Plan(set(endpoints), endpoints if small else None)
    known = connection.execute(select(Organization.id).where(Organization.id.in_(org_ids)))
    return _Plan(set(known.scalars()), None)


@cache
def _organizations_and_endpoints() -> Select:
    """An ingest's organizations with their receiving endpoints; built once, run by every ingest."""
    return ingest_statements.organizations_with_targets(
        Organization.id.in_(bindparam("orgs", expanding=True))
    )


def _store(session: Session, drafts: list[_Draft], plan: _Plan) -> list[Accepted]:
    now = utcnow()
    fanned_out_at = now if plan.endpoints is not None else None
    # A repeated eventId inside one batch answers with the first occurrence.
    first_in_batch: dict[tuple[str, str], str] = {}
    rows: list[dict] = []
    ids: list[str] = []
    trace_parent = tracing.current_parent()
    for draft in drafts:
        key = (draft.organization_id, draft.event_id) if draft.event_id else None
        if key and key in first_in_batch:
            ids.append(first_in_batch[key])
            continue
        message_id = new_id("evt")
        if key:
            first_in_batch[key] = message_id
        ids.append(message_id)
        rows.append(
            {
                "id": message_id,
                "organization_id": draft.organization_id,
                "event_type": draft.event_type,
                "event_id": draft.event_id,
                "payload": draft.payload,
                "timestamp": draft.timestamp,
                "custom": draft.custom,
                "test": draft.test,
                "target_endpoint_id": draft.target_endpoint_id,
                "fanned_out_at": fanned_out_at,
                "created_at": now,
                "trace_parent": trace_parent,
            }
        )
    inserted = set(
        insert_skipping_conflicts(session, Message, rows, unique=["organization_id", "event_id"])
    )
    # Earlier messages with the same eventId (kept as long as the message is kept).
    previous: dict[tuple[str, str], Message] = {}
    lost = [r for r in rows if r["id"] not in inserted]
    if lost:
        conds = [
            and_(Message.organization_id == r["organization_id"], Message.event_id == r["event_id"])
            for r in lost
        ]
        for message in session.scalars(select(Message).where(or_(*conds))):
            previous[(message.organization_id, message.event_id)] = message
    # The rows just written, for the answer (no second read of what we wrote).
    by_id = {row["id"]: StoredMessage(**row) for row in rows if row["id"] in inserted}
    results: list[Accepted] = []
    seen: set[str] = set()
    for draft, message_id in zip(drafts, ids, strict=True):
        if message_id in by_id and message_id not in seen:
            seen.add(message_id)
            results.append(Accepted(by_id[message_id], duplicate=False))
        elif message_id in by_id:
            results.append(Accepted(by_id[message_id], duplicate=True))
        else:
            message = previous[(draft.organization_id, draft.event_id)]
            results.append(Accepted(message, duplicate=True))
    if not by_id:
        return results
    if plan.endpoints is not None:
        _create_deliveries(session, list(by_id.values()), plan.endpoints, now)
    else:
        enqueue_after_commit(session, Task.FANOUT, sorted(by_id))
    return results


def _endpoint_targets(message: StoredMessage | Row, endpoints: list) -> list[tuple[str, int, str]]:
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
            continue  # SPEC 4.2: custom events never go to the team hook
        name = events.delivery_name(endpoint.event_types, names, endpoint.payload_format)
        if name is not None:
            targets.append((endpoint.id, endpoint.max_retries, name))
    return targets


@tracing.traced("webhooks.fan_out")
def _create_deliveries(
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
        targets = _endpoint_targets(message, endpoints_by_org.get(message.organization_id, []))
        for endpoint_id, max_retries, name in targets:
            # SPEC 5: max_attempts is max_retries + 1 for every delivery. A test is one
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
    if not rows:
        created = []
    elif ingest_statements.postgresql_engine(session) is not None:
        columns = [list(column) for column in zip(*rows, strict=True)]
        created = ingest_statements.insert_deliveries(session, columns, now=now)
    else:
        pending = {
            "status": "pending",
            "attempt_count": 0,
            "extra_attempt_count": 0,
            "next_attempt_at": now,
            "enqueued_at": now,
            "created_at": now,
            "updated_at": now,
        }
        created = insert_skipping_conflicts(
            session,
            Delivery,
            [
                {**dict(zip(ingest_statements.DELIVERY_COLUMNS, row, strict=True)), **pending}
                for row in rows
            ],
            unique=["message_id", "endpoint_id"],
        )
    enqueue_many_after_commit(session, Task.DELIVER, [(d, 1) for d in created])
    metrics.count_fanned_out(session, messages)
    return created


def fan_out(session: Session, *, message_ids: list[str]) -> list[str]:
    """Create one delivery per matching active endpoint; returns the new delivery ids.

    The fan-out task's work, for messages accepted without one. Run twice, it creates
    nothing new: the first run marks the messages fanned out in the statement that reads
    them (two runs at once: the second waits for the first's row locks, then finds them
    marked), and (message, endpoint) is unique. Its commit does not wait for the WAL flush
    (``shared.db.ASYNC_COMMIT``): a crash that loses it leaves the messages owed a fan-out.
    """
    commit_without_flush(session)
    table = Message.__table__
    now = utcnow()
    claim = (
        update(table)
        .where(table.c.id.in_(message_ids), table.c.fanned_out_at.is_(None))
        .values(fanned_out_at=now)
        .returning(
            table.c.id,
            table.c.organization_id,
            table.c.event_type,
            table.c.payload,
            table.c.custom,
            table.c.test,
            table.c.target_endpoint_id,
        )
    )
    connection = session.connection()
    messages = connection.execute(claim).all()
    if not messages:
        return []
    org_ids = {m.organization_id for m in messages}
    endpoints_by_org: dict[str, list] = {org: [] for org in org_ids}
    query = select(*ingest_statements.TARGET_COLUMNS).where(
        Endpoint.organization_id.in_(org_ids), ingest_statements.RECEIVING
    )
    for endpoint in connection.execute(query):
        endpoints_by_org[endpoint.organization_id].append(endpoint)
    return _create_deliveries(session, messages, endpoints_by_org, now)


# ---- reading messages back -------------------------------------------------------------


def _encode_cursor(message: Message) -> str:
    raw = json.dumps([message.created_at.isoformat(), message.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _ceil_ms(moment: datetime) -> datetime | None:
    """The first whole millisecond at or after ``moment``; None past the calendar's end."""
    floor = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if floor == moment:
        return floor
    try:
        return floor + timedelta(milliseconds=1)
    except OverflowError:
        return None


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, message_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        message_id = str(message_id)
        if "\x00" in message_id:
            raise ValueError("NUL in cursor")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("cursor time without a zone")  # the service writes UTC ones
        # A forged offset can move the moment past the calendar (year 0 in UTC).
        return moment.astimezone(UTC), message_id
    except (ValueError, TypeError, OverflowError):
        raise Invalid("cursor is not valid") from None


def list_messages(
    session: Session,
    *,
    principal: Principal,
    organization_id: str,
    limit: int = 50,
    cursor: str | None = None,
    event_type: str | None = None,
    endpoint_id: str | None = None,
    status: str | None = None,
    before: datetime | None = None,
    after: datetime | None = None,
) -> tuple[list[Message], str | None]:
    """A page of messages, newest first, and the cursor of the next page (or None)."""
    principal.check_organization(organization_id)
    if not 1 <= limit <= 200:
        raise Invalid("limit must be between 1 and 200")
    query = select(Message).where(Message.organization_id == organization_id)
    if event_type:
        query = query.where(Message.event_type == event_type)
    # On the timestamp a message shows (SPEC 4.1), stored as that very ISO 8601 text, whose
    # fixed width makes text order time order: after=<a listed message's timestamp> leaves
    # that message out, and a past timestamp the platform gave is found where it belongs.
    if before:
        bound = _ceil_ms(before)  # None past the calendar's end: every message is before it
        if bound is not None:
            query = query.where(Message.timestamp < payloads.format_timestamp(bound))
    if after:
        query = query.where(Message.timestamp > payloads.format_timestamp(after))
    delivery_cond = []
    if endpoint_id:
        get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
        delivery_cond.append(Delivery.endpoint_id == endpoint_id)
    if status:
        if status not in ("pending", "delivered", "failed", "cancelled"):
            raise Invalid("status must be one of pending, delivered, failed, cancelled")
        delivery_cond.append(Delivery.status == status)
    if delivery_cond:
        query = query.where(exists().where(Delivery.message_id == Message.id, *delivery_cond))
    if cursor:
        created, last_id = _decode_cursor(cursor)
        query = query.where(
            # The redundant bound lets the (organization, created_at, id) index start at the
            # cursor instead of scanning from the newest row.
            Message.created_at <= created,
            or_(
                Message.created_at < created,
                and_(Message.created_at == created, Message.id < last_id),
            ),
        )
    query = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


def get_message(
    session: Session, *, principal: Principal, organization_id: str, message_id: str
) -> Message:
    """One message of the caller's organization."""
    principal.check_organization(organization_id)
    if "\x00" in message_id:
        # No id holds a NUL (PostgreSQL text cannot), and the driver refuses to send one.
        raise NotFound("Message not found")
    message = session.get(Message, message_id)
    if message is None or message.organization_id != organization_id:
        raise NotFound(f"Message {message_id} not found")
    return message


def _visible_endpoint_ids(session: Session, principal: Principal, endpoint_ids: set[str]):
    if principal.is_admin or not endpoint_ids:
        return endpoint_ids
    rows = session.execute(
        select(Endpoint.id, Endpoint.user_id, Endpoint.scope).where(Endpoint.id.in_(endpoint_ids))
    )
    return {
        eid for eid, user_id, scope in rows if scope == "account" or user_id == principal.user_id
    }


def message_deliveries(
    session: Session, *, principal: Principal, message: Message
) -> list[Delivery]:
    """The message's deliveries to endpoints the caller can see."""
    deliveries = list(
        session.scalars(
            select(Delivery).where(Delivery.message_id == message.id).order_by(Delivery.created_at)
        )
    )
    visible = _visible_endpoint_ids(session, principal, {d.endpoint_id for d in deliveries})
    return [d for d in deliveries if d.endpoint_id in visible]


def get_message_with_deliveries(
    session: Session, *, principal: Principal, organization_id: str, message_id: str
) -> MessageWithDeliveries:
    """One message of the caller's organization with its deliveries the caller can see."""
    message = get_message(
        session, principal=principal, organization_id=organization_id, message_id=message_id
    )
    return MessageWithDeliveries(
        message, message_deliveries(session, principal=principal, message=message)
    )


def message_attempts(session: Session, *, principal: Principal, message: Message) -> list[Attempt]:
    """The message's attempts to endpoints the caller can see, newest first."""
    attempts = list(
        session.scalars(
            select(Attempt)
            .where(Attempt.message_id == message.id)
            .order_by(Attempt.created_at.desc(), Attempt.id.desc())
        )
    )
    visible = _visible_endpoint_ids(session, principal, {a.endpoint_id for a in attempts})
    return [a for a in attempts if a.endpoint_id in visible]
