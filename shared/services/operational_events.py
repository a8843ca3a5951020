"""Operational events: the service's own reports on an organization's endpoints.

Three events (docs/api.md §11.5): ``endpoint.failing`` (every attempt has failed for
WEBHOOKS_FAILING_NOTICE_HOURS, once per failing streak), ``endpoint.disabled`` (by the
service, a 410, an operator or a user) and ``message.attempt.exhausted`` (a delivery
failed for good). Each becomes a message of the organization, fanned out at once in the
caller's transaction to the endpoints that may hear of it:

- only those naming the event (``shared.events`` matches these names by name alone);
- never the endpoint the event is about: a receiver that is down cannot take the news;
- a member's endpoint only when the member can see the endpoint concerned (docs/api.md §3).

A notice that itself fails for good sets off no further notice (``reportable``): two
failing endpoints subscribed to ``message.attempt.exhausted`` would otherwise report each
other's failures to each other without end (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .. import events, notify
from ..config import get_settings
from ..models import Delivery, DeliveryStatus, Endpoint, Message, Trigger, User, new_id, utcnow
from ..payloads import format_timestamp
from . import ingest_statements
from .fanout import StoredMessage, create_deliveries

FAILING = "endpoint.failing"
DISABLED = "endpoint.disabled"
EXHAUSTED = "message.attempt.exhausted"
ADMIN_ROLES = ("root", "admin")


def reportable(*, event_type: str, trigger: str) -> bool:
    """Whether a delivery failing for good is reported: not a notice's, not a test's."""
    return event_type not in events.OPERATIONAL_TYPES and trigger != Trigger.TEST


def last_failure(session: Session, endpoint_id: str) -> tuple[int | None, str | None]:
    """The status code and error of the endpoint's most recent failed try, if any."""
    row = session.execute(
        select(Delivery.http_status_code, Delivery.error_message)
        .where(
            Delivery.endpoint_id == endpoint_id,
            Delivery.last_failure_at.is_not(None),
            # A cancellation writes its reason over the delivery's last error.
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.FAILED)),
        )
        .order_by(Delivery.last_failure_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


def _audience(session: Session, about: Endpoint) -> list[Any]:
    """The organization's receiving endpoints that may hear about ``about`` (fan-out rows)."""
    cond = (
        (Endpoint.organization_id == about.organization_id)
        & ingest_statements.RECEIVING
        & (Endpoint.id != about.id)
    )
    if about.scope != "account":
        # Members see account-scoped endpoints and their own; root and admin see all.
        cond &= or_(
            Endpoint.scope == "account",
            Endpoint.user_id.is_(None),
            Endpoint.user_id == about.user_id,
            User.role.in_(ADMIN_ROLES),
        )
    query = (
        select(*ingest_statements.TARGET_COLUMNS)
        .outerjoin(User, User.id == Endpoint.user_id)
        .where(cond)
    )
    return list(session.execute(query))


def report(
    session: Session,
    *,
    event_type: str,
    about: Endpoint,
    reason: str,
    status_code: int | None,
    error: str | None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Record one operational event as a message and make its deliveries; its message id.

    The deliveries are enqueued when the caller commits, as every fan-out's are.
    """
    now = utcnow()
    fields: dict[str, Any] = {
        "organizationId": about.organization_id,
        "endpointId": about.id,
        "url": about.url,
        "reason": reason,
        "failingSince": format_timestamp(about.failing_since) if about.failing_since else None,
        "lastStatusCode": status_code,
        "lastError": error,
        **(extra or {}),
    }
    message = StoredMessage(
        id=new_id("evt"),
        organization_id=about.organization_id,
        event_type=event_type,
        event_id=None,
        payload=fields,
        timestamp=format_timestamp(now),
        custom=False,
        test=False,
        target_endpoint_id=None,
        fanned_out_at=now,
        created_at=now,
    )
    session.add(Message(**asdict(message)))
    session.flush()
    create_deliveries(session, [message], {about.organization_id: _audience(session, about)}, now)
    return message.id


def report_disabled(session: Session, *, endpoint_id: str, reason: str) -> str | None:
    """Report ``endpoint.disabled`` for an endpoint just disabled; its message id."""
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        return None
    status_code, error = last_failure(session, endpoint_id)
    return report(
        session,
        event_type=DISABLED,
        about=endpoint,
        reason=reason,
        status_code=status_code,
        error=error,
    )


def report_exhausted(
    session: Session,
    *,
    endpoint_id: str,
    message_id: str,
    delivery_id: str,
    event_type: str,
    attempts: int,
    status_code: int | None,
    error: str | None,
) -> str | None:
    """Report ``message.attempt.exhausted`` for a delivery that failed for good."""
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None:
        return None
    return report(
        session,
        event_type=EXHAUSTED,
        about=endpoint,
        reason=f"Delivery failed after {attempts} attempt{'s' if attempts != 1 else ''}",
        status_code=status_code,
        error=error,
        extra={"messageId": message_id, "deliveryId": delivery_id, "eventType": event_type},
    )


def report_failing(session: Session) -> list[str]:
    """Report ``endpoint.failing`` for each endpoint failing for the notice window; their ids.

    Once per streak: the notice is claimed by setting ``failing_notified_at`` where it was
    unset (two beats: one claims it), and a success clears it with the streak
    (``shared.services.deliveries.records``).
    """
    hours = get_settings().failing_notice_hours
    now = utcnow()
    candidates = list(
        session.scalars(
            select(Endpoint.id).where(
                Endpoint.deleted_at.is_(None),
                Endpoint.is_active.is_(True),
                Endpoint.failing_since <= now - timedelta(hours=hours),
                Endpoint.failing_notified_at.is_(None),
            )
        )
    )
    reported = []
    for endpoint_id in candidates:
        status_code, error = last_failure(session, endpoint_id)
        claimed = session.execute(
            update(Endpoint)
            .where(
                Endpoint.id == endpoint_id,
                Endpoint.failing_notified_at.is_(None),
                Endpoint.failing_since.is_not(None),
            )
            .values(failing_notified_at=now, failing_status_code=status_code, failing_error=error)
        ).rowcount
        if not claimed:
            continue
        endpoint = session.get(Endpoint, endpoint_id)
        session.refresh(endpoint)
        report(
            session,
            event_type=FAILING,
            about=endpoint,
            reason=f"Every attempt has failed for {hours:g} hours",
            status_code=status_code,
            error=error,
        )
        notify.endpoint_event_after_commit(session, FAILING, endpoint_id)
        reported.append(endpoint_id)
    return reported
