"""Delivery attempts: claim a try, post it, record it, decide what comes next."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .. import payloads
from ..config import get_settings
from ..errors import Conflict, Invalid
from ..http import AttemptResult, DeliveryClient
from ..models import Attempt, Delivery, Endpoint, Message, new_id, utcnow
from ..queue import enqueue, enqueue_after_commit
from ..signing import webhook_headers
from .auth import Principal
from .endpoints import cancel_pending_deliveries, get_endpoint, signing_secrets
from .messages import DELIVER_TASK, get_message

log = logging.getLogger(__name__)

MANUAL_TASK = "webhooks.deliver_manual"
# SPEC 5: each wait gets up to 20% jitter, added so that no retry comes earlier than scheduled.
JITTER = 0.2
# Countdowns longer than this are not handed to the broker: Redis re-delivers unacked tasks
# after its visibility timeout (set well above this in the worker), so long waits are
# left to beat's sweep, which enqueues a try shortly before it is due.
MAX_BROKER_COUNTDOWN = 900.0
# How long after the attempt's own deadline a claim stays held; past it the worker is
# presumed dead and the sweep may hand the try to another one.
LEASE_MARGIN = 15.0
# A task that arrives this early is re-queued for the rest of its wait.
EARLY_TOLERANCE = 0.5
RESPONSE_BODY_LIMIT = 4096


def user_agent() -> str:
    """The User-Agent of delivery requests: product/version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sandbox-webhooks/{version('sandbox-webhooks')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "sandbox-webhooks/0.1.0"


def backoff_seconds(try_number: int, schedule: tuple, rng: random.Random | None = None) -> float:
    """Wait before try ``try_number + 1`` after try ``try_number`` failed (1-based), jittered."""
    base = float(schedule[min(try_number, len(schedule)) - 1])
    return base * (1 + (rng or random).uniform(0, JITTER))


@dataclass
class Outcome:
    """What a task did, for logs, the live socket and the caller's retry decision."""

    delivery_id: str
    skipped: str | None = None
    attempt: Attempt | None = None
    final: bool = False
    delivery_status: str | None = None
    next_try: int | None = None
    countdown: float | None = None
    organization_id: str | None = None
    event_type: str | None = None
    attempt_number: int | None = None


def _build_request(endpoint: Endpoint, message: Message, delivery: Delivery) -> tuple[bytes, dict]:
    body = payloads.serialize(
        payloads.render_payload(
            payload_format=endpoint.payload_format,
            message_id=message.id,
            event_type=message.event_type,
            delivery_name=delivery.event_type,
            fields=message.payload,
            timestamp=message.timestamp,
            custom=message.custom,
        )
    )
    headers = webhook_headers(
        secrets=signing_secrets(endpoint),
        msg_id=message.id,
        timestamp=int(time.time()),
        body=body,
        user_agent=user_agent(),
    )
    return body, headers


def _load(session: Session, delivery_id: str):
    return session.execute(
        select(Delivery, Endpoint, Message)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.id == delivery_id)
    ).first()


def _attempt_row(
    *,
    attempt_id: str,
    delivery: Delivery,
    url: str,
    result: AttemptResult,
    trigger: str,
    try_number: int | None,
    now: datetime,
) -> Attempt:
    return Attempt(
        id=attempt_id,
        delivery_id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        message_id=delivery.message_id,
        organization_id=delivery.organization_id,
        url=url,
        status="success" if result.ok else "failed",
        status_code=result.status_code,
        duration_ms=result.duration_ms,
        trigger=trigger,
        try_number=try_number,
        response_body=result.response_body,
        error=result.error,
        created_at=now,
    )


def _error_text(result: AttemptResult) -> str | None:
    if result.ok:
        return None
    if result.error:
        return result.error
    return f"HTTP {result.status_code}"


def _mark_endpoint_health(session: Session, endpoint: Endpoint, ok: bool, now: datetime) -> None:
    """Track the start of a failure streak with conditional writes (no hot row per attempt)."""
    if ok and endpoint.failing_since is not None:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint.id, Endpoint.failing_since.is_not(None))
            .values(failing_since=None)
        )
    elif not ok and endpoint.failing_since is None:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint.id, Endpoint.failing_since.is_(None))
            .values(failing_since=now)
        )


def run_scheduled_try(
    factory: sessionmaker[Session], client: DeliveryClient, *, delivery_id: str, try_number: int
) -> Outcome:
    """Make scheduled try ``try_number`` of a delivery, at most once.

    Run twice (a redelivered task, a sweep's duplicate), the second run finds the try
    claimed or recorded and does nothing.
    """
    settings = get_settings()
    with factory() as session:
        row = _load(session, delivery_id)
        if row is None:
            return Outcome(delivery_id, skipped="gone")
        delivery, endpoint, message = row
        now = utcnow()
        if delivery.status != "pending" or delivery.attempt_count != try_number - 1:
            return Outcome(delivery_id, skipped="done")
        if not endpoint.is_active or endpoint.deleted_at is not None:
            cancel_pending_deliveries(session, endpoint_id=endpoint.id, reason="Endpoint disabled")
            session.commit()
            return Outcome(delivery_id, skipped="cancelled")
        if delivery.lease_until is not None and delivery.lease_until > now:
            return Outcome(delivery_id, skipped="leased")
        if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(
            seconds=EARLY_TOLERANCE
        ):
            wait = (delivery.next_attempt_at - now).total_seconds()
            if wait <= MAX_BROKER_COUNTDOWN:
                enqueue(DELIVER_TASK, delivery_id, try_number, countdown=wait)
            return Outcome(delivery_id, skipped="early")
        lease = now + timedelta(seconds=endpoint.timeout_seconds + LEASE_MARGIN)
        claimed = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.status == "pending",
                Delivery.attempt_count == try_number - 1,
                or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
            )
            .values(lease_until=lease)
        ).rowcount
        session.commit()
        if not claimed:
            return Outcome(delivery_id, skipped="leased")
        body, headers = _build_request(endpoint, message, delivery)
        url = endpoint.url
        trigger = "test" if message.test else "scheduled"
        endpoint_snapshot = (endpoint.id, endpoint.failing_since)

    result = client.post(url, body, headers, timeout=float(endpoint.timeout_seconds))

    with factory() as session:
        now = utcnow()
        delivery = session.scalars(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update()
        ).first()
        if delivery is None or delivery.attempt_count != try_number - 1:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
        attempt = _attempt_row(
            attempt_id=new_id("atm"),
            delivery=delivery,
            url=url,
            result=result,
            trigger=trigger,
            try_number=try_number,
            now=now,
        )
        session.add(attempt)
        delivery.attempt_count = try_number
        delivery.lease_until = None
        delivery.last_attempt_at = now
        delivery.http_status_code = result.status_code
        delivery.error_message = _error_text(result)
        delivery.updated_at = now
        outcome = Outcome(
            delivery_id,
            attempt=attempt,
            organization_id=delivery.organization_id,
            event_type=delivery.event_type,
            attempt_number=delivery.attempt_count + delivery.extra_attempt_count,
        )
        still_pending = delivery.status == "pending"
        if result.ok:
            if still_pending:
                delivery.status = "delivered"
                delivery.delivered_at = now
                delivery.next_attempt_at = None
            outcome.final = True
        else:
            delivery.last_failure_at = now
            if result.status_code == 410:
                delivery.status = "failed"
                delivery.failed_at = now
                delivery.next_attempt_at = None
                outcome.final = True
            elif still_pending and try_number < delivery.max_attempts:
                wait = backoff_seconds(try_number, settings.retry_schedule)
                if result.retry_after is not None and result.status_code in (429, 503):
                    wait = max(wait, min(result.retry_after, 86400.0))
                delivery.next_attempt_at = now + timedelta(seconds=wait)
                if wait <= MAX_BROKER_COUNTDOWN:
                    delivery.enqueued_at = now
                    enqueue_after_commit(
                        session, DELIVER_TASK, delivery_id, try_number + 1, countdown=wait
                    )
                else:
                    delivery.enqueued_at = None
                outcome.next_try, outcome.countdown = try_number + 1, wait
            else:
                if still_pending:
                    delivery.status = "failed"
                    delivery.failed_at = now
                    delivery.next_attempt_at = None
                outcome.final = True
        outcome.delivery_status = delivery.status
        endpoint_row = session.get(Endpoint, endpoint_snapshot[0])
        if endpoint_row is not None:
            _mark_endpoint_health(session, endpoint_row, result.ok, now)
            if result.status_code == 410:
                from .endpoints import disable_endpoint

                disable_endpoint(
                    session,
                    endpoint_id=endpoint_row.id,
                    reason="The endpoint answered 410 Gone",
                )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
    return outcome


def run_manual_attempt(
    factory: sessionmaker[Session],
    client: DeliveryClient,
    *,
    delivery_id: str,
    attempt_id: str,
    trigger: str = "manual",
) -> Outcome:
    """Make one manual attempt; its pre-assigned id makes a re-run record nothing twice."""
    with factory() as session:
        if session.get(Attempt, attempt_id) is not None:
            return Outcome(delivery_id, skipped="recorded")
        row = _load(session, delivery_id)
        if row is None:
            return Outcome(delivery_id, skipped="gone")
        delivery, endpoint, message = row
        if endpoint.deleted_at is not None:
            return Outcome(delivery_id, skipped="cancelled")
        body, headers = _build_request(endpoint, message, delivery)
        url = endpoint.url
        timeout = float(endpoint.timeout_seconds)
        endpoint_id, failing_since = endpoint.id, endpoint.failing_since

    result = client.post(url, body, headers, timeout=timeout)

    with factory() as session:
        now = utcnow()
        delivery = session.scalars(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update()
        ).first()
        if delivery is None:
            return Outcome(delivery_id, skipped="gone")
        attempt = _attempt_row(
            attempt_id=attempt_id,
            delivery=delivery,
            url=url,
            result=result,
            trigger=trigger,
            try_number=None,
            now=now,
        )
        session.add(attempt)
        delivery.extra_attempt_count += 1
        delivery.last_attempt_at = now
        delivery.http_status_code = result.status_code
        delivery.error_message = _error_text(result)
        delivery.updated_at = now
        if result.ok:
            delivery.status = "delivered"
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            delivery.lease_until = None
        else:
            delivery.last_failure_at = now
        endpoint_row = session.get(Endpoint, endpoint_id)
        if endpoint_row is not None:
            endpoint_row.failing_since = failing_since
            _mark_endpoint_health(session, endpoint_row, result.ok, now)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
        return Outcome(
            delivery_id,
            attempt=attempt,
            final=True,
            delivery_status=delivery.status,
            organization_id=delivery.organization_id,
            event_type=delivery.event_type,
            attempt_number=delivery.attempt_count + delivery.extra_attempt_count,
        )


def request_resend(
    session: Session,
    *,
    principal: Principal,
    organization_id: str,
    message_id: str,
    endpoint_id: str,
) -> Delivery:
    """Queue a manual attempt of a message to an endpoint, creating the delivery if needed."""
    message = get_message(
        session, principal=principal, organization_id=organization_id, message_id=message_id
    )
    endpoint = get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not endpoint.is_active:
        raise Conflict(f"Webhook endpoint {endpoint_id} is disabled")
    if message.custom and endpoint.payload_format == "e2b":
        raise Invalid("Custom events are not sent to the team hook")
    delivery = session.scalars(
        select(Delivery).where(
            Delivery.message_id == message.id, Delivery.endpoint_id == endpoint.id
        )
    ).first()
    if delivery is None:
        from .. import events

        names = events.resolve_names(message.event_type, message.payload)
        now = utcnow()
        delivery = Delivery(
            id=new_id("whd"),
            message_id=message.id,
            endpoint_id=endpoint.id,
            organization_id=message.organization_id,
            event_type=events.delivery_name(list(names.all), names, endpoint.payload_format),
            # Nothing is scheduled: the manual attempt decides the status.
            status="failed",
            attempt_count=0,
            extra_attempt_count=0,
            max_attempts=endpoint.max_retries + 1,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()
    enqueue_after_commit(session, MANUAL_TASK, delivery.id, new_id("atm"), "manual")
    return delivery


def recover_failed(
    session: Session,
    *,
    principal: Principal,
    endpoint_id: str,
    since: datetime,
    until: datetime | None = None,
) -> int:
    """Queue one manual attempt for every failed delivery of the endpoint in the window."""
    from .endpoints import get_endpoint_for_change

    endpoint = get_endpoint_for_change(session, principal=principal, endpoint_id=endpoint_id)
    if not endpoint.is_active:
        raise Conflict(f"Webhook endpoint {endpoint_id} is disabled")
    until = until or utcnow()
    if until <= since:
        raise Invalid("until must be later than since")
    ids = list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.endpoint_id == endpoint.id,
                Delivery.status == "failed",
                Delivery.created_at >= since,
                Delivery.created_at < until,
            )
        )
    )
    for delivery_id in ids:
        enqueue_after_commit(session, MANUAL_TASK, delivery_id, new_id("atm"), "manual")
    return len(ids)


# ---- beat's sweep --------------------------------------------------------------------------

# A try overdue by this much, and not held by a live worker, is presumed lost by the broker.
OVERDUE_AFTER = timedelta(seconds=15)
# The sweep hands long waits to the broker this far ahead of their due time.
LOOKAHEAD = timedelta(seconds=30)
# After re-enqueueing a try, give the broker this long before doing it again.
REENQUEUE_EVERY = timedelta(seconds=60)
SWEEP_BATCH = 2000


def sweep_due(session: Session) -> dict[str, int]:
    """Enqueue tries that are due but not in the broker, and fan-outs that never ran.

    Two sweeps at once (two beats by mistake) only enqueue a task twice; the claim in
    ``run_scheduled_try`` makes the second one a no-op.
    """
    now = utcnow()
    counts = {"deliveries": 0, "fanouts": 0}
    lease_free = or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now)
    never_enqueued = and_(
        Delivery.enqueued_at.is_(None), Delivery.next_attempt_at <= now + LOOKAHEAD
    )
    lost = and_(
        Delivery.next_attempt_at <= now - OVERDUE_AFTER,
        or_(
            Delivery.enqueued_at.is_(None),
            Delivery.enqueued_at <= Delivery.next_attempt_at,
            Delivery.enqueued_at <= now - REENQUEUE_EVERY,
        ),
    )
    query = (
        select(Delivery.id, Delivery.attempt_count, Delivery.next_attempt_at)
        .where(Delivery.status == "pending", lease_free, or_(never_enqueued, lost))
        .order_by(Delivery.next_attempt_at)
        .limit(SWEEP_BATCH)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if rows:
        session.execute(
            update(Delivery).where(Delivery.id.in_([r.id for r in rows])).values(enqueued_at=now)
        )
    for delivery_id, attempt_count, due in rows:
        eta = due if due and due > now else None
        enqueue_after_commit(session, DELIVER_TASK, delivery_id, attempt_count + 1, eta=eta)
    counts["deliveries"] = len(rows)

    owed = list(
        session.scalars(
            select(Message.id)
            .where(Message.fanned_out_at.is_(None), Message.created_at <= now - OVERDUE_AFTER)
            .order_by(Message.created_at)
            .limit(SWEEP_BATCH)
        )
    )
    for start in range(0, len(owed), 100):
        enqueue_after_commit(session, "webhooks.fanout", owed[start : start + 100])
    counts["fanouts"] = len(owed)
    return counts


def auto_disable_failing(session: Session) -> list[str]:
    """Disable endpoints failing continuously for WEBHOOKS_DISABLE_AFTER_HOURS (SPEC 5)."""
    from .endpoints import disable_endpoint

    hours = get_settings().disable_after_hours
    cutoff = utcnow() - timedelta(hours=hours)
    ids = list(
        session.scalars(
            select(Endpoint.id).where(
                Endpoint.is_active.is_(True),
                Endpoint.deleted_at.is_(None),
                Endpoint.failing_since.is_not(None),
                Endpoint.failing_since <= cutoff,
            )
        )
    )
    for endpoint_id in ids:
        disable_endpoint(
            session,
            endpoint_id=endpoint_id,
            reason=f"Disabled after failing continuously for {hours:g} hours",
        )
    return ids


def list_endpoint_deliveries(
    session: Session, *, principal: Principal, endpoint_id: str, limit: int = 50
) -> list[Delivery]:
    """An endpoint's deliveries, newest first."""
    get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not 1 <= limit <= 200:
        raise Invalid("limit must be between 1 and 200")
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )
