"""Accepting messages: the platform's events and custom and test sends, all or nothing.

A message is written with its deliveries when the fan-out is small (``INLINE_FANOUT_*``),
else with a fan-out task owed (``shared.services.fanout``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Engine, Select, and_, bindparam, or_, select
from sqlalchemy.orm import Session

from .. import events, metrics, payloads, tracing
from ..config import get_settings
from ..errors import Conflict, Invalid, NotFound, PayloadTooLarge
from ..event_catalog import STATE_FIELDS
from ..models import Message, Ordering, Organization, new_id, utcnow
from ..queue import Task, enqueue_after_commit, enqueue_many
from . import ingest_statements, sequences
from .auth import Principal
from .endpoints import get_endpoint
from .fanout import (
    EndpointTarget,
    StoredMessage,
    create_deliveries,
    endpoint_targets,
    insert_skipping_conflicts,
)

MAX_BATCH = 1000
EVENT_ID_MAX = 256
# A fan-out this small is made in the accepting transaction itself: a Celery task per
# message costs the workers more than the deliveries' rows and adds a queue hop before
# the first delivery. Larger ones (an array to many endpoints, an organization with many
# endpoints) go to a fan-out task so that the request stays short. The bound is on
# endpoints and on deliveries (messages x endpoints), so that an array to an organization
# with no endpoints, or few, costs no task either.
INLINE_FANOUT_ENDPOINTS = 50
INLINE_FANOUT_DELIVERIES = 500


@dataclass
class Accepted:
    """The outcome of accepting one event: its message, and whether it was a repeat."""

    message: Message | StoredMessage
    duplicate: bool


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
    # Counted as UTF-8 bytes of the compact JSON (docs/api.md §10: each event of an array within
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


@tracing.traced("webhooks.fan_out")
def _accept_one(session: Session, engine: Engine, draft: _Draft) -> Accepted | None:
    """Accept one event in two autocommit round trips (``ingest_statements``).

    None when the organization has more endpoints than a request fans out itself: the
    caller then takes the transactional path, which leaves the fan-out to a task. None
    too when an ordered endpoint gets the event: its sequence (``sequences``) is given in
    the transactional path's fan-out.
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
    targets = endpoint_targets(message, endpoints)
    ordered = sequences.ordered_endpoints({message.organization_id: endpoints})
    if any(t[0] in ordered for t in targets) and sequences.resource_of(message):
        return None
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
            # docs/api.md §5: max_retries + 1 for every delivery.
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
    enqueue_many(
        Task.DELIVER, [(d, 1) for d in delivery_ids], [draft.organization_id] * len(delivery_ids)
    )
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
    """Accept a custom message from an organization member (docs/api.md §6.2 send)."""
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


def _fans_out_now(session: Session, plan: _Plan) -> bool:
    """Whether this transaction makes the fan-out itself rather than a task.

    Only a small one, and not while an organization with an ordered endpoint has an
    earlier message still owed a fan-out: its task numbers that one first (docs/api.md
    §11.3), then this one with it (``fanout.fan_out`` takes the earlier owed messages).
    """
    if plan.endpoints is None:
        return False
    ordered = [
        org
        for org, endpoints in plan.endpoints.items()
        if any(endpoint.ordering == Ordering.RESOURCE for endpoint in endpoints)
    ]
    if not ordered:
        return True
    owed = session.execute(
        select(Message.id)
        .where(Message.fanned_out_at.is_(None), Message.organization_id.in_(ordered))
        .limit(1)
    ).first()
    return owed is None


def _store(session: Session, drafts: list[_Draft], plan: _Plan) -> list[Accepted]:
    now = utcnow()
    inline = _fans_out_now(session, plan)
    fanned_out_at = now if inline else None
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
                # A microsecond apart, in array order: the order they were accepted in,
                # which ordered endpoints keep (docs/api.md §11.3) when a task fans out.
                "created_at": now + timedelta(microseconds=len(rows)),
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
    if inline and plan.endpoints is not None:
        create_deliveries(session, list(by_id.values()), plan.endpoints, now)
    else:
        # One fan-out task per organization, in that organization's lane (shared.lanes), its
        # messages in acceptance order: ordered endpoints number a resource's deliveries so.
        by_org: dict[str, list[str]] = {}
        for message in by_id.values():
            by_org.setdefault(message.organization_id, []).append(message.id)
        for organization_id, message_ids in sorted(by_org.items()):
            enqueue_after_commit(session, Task.FANOUT, message_ids, organization=organization_id)
    return results
