"""Asking for manual attempts: a resend of a message to an endpoint, a recovery of failures.

A request is a row first (``ManualRequest``, its id the id its attempt will carry), then a
task after the commit: the row outlives the broker, and beat's sweep hands a request not
made in time to the broker again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import events
from ...errors import Conflict, Invalid
from ...models import (
    Delivery,
    DeliveryStatus,
    ManualRequest,
    PayloadFormat,
    Trigger,
    new_id,
    utcnow,
)
from ...queue import Task, enqueue_after_commit
from ..auth import Principal
from ..endpoints import get_endpoint, get_endpoint_for_change
from ..messages import get_message


def request_manual_attempt(
    session: Session, *, delivery_id: str, trigger: str = Trigger.MANUAL
) -> str:
    """Ask for one manual attempt of a delivery: a row first, then its task after the commit.

    Returns the id the attempt will carry.
    """
    now = utcnow()
    request = ManualRequest(
        id=new_id("atm"), delivery_id=delivery_id, trigger=trigger, enqueued_at=now, created_at=now
    )
    session.add(request)
    session.flush()
    enqueue_after_commit(session, Task.DELIVER_MANUAL, delivery_id, request.id, trigger)
    return request.id


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
    if message.custom and endpoint.payload_format == PayloadFormat.E2B:
        raise Invalid("Custom events are not sent to the team hook")
    delivery = session.scalars(
        select(Delivery).where(
            Delivery.message_id == message.id, Delivery.endpoint_id == endpoint.id
        )
    ).first()
    if delivery is None:
        names = events.resolve_names(message.event_type, message.payload)
        now = utcnow()
        delivery = Delivery(
            id=new_id("whd"),
            message_id=message.id,
            endpoint_id=endpoint.id,
            organization_id=message.organization_id,
            event_type=events.delivery_name(list(names.all), names, endpoint.payload_format),
            # Nothing is scheduled (no next_attempt_at: the sweep leaves it alone): it is
            # pending until the manual attempt decides (shared.transitions).
            status=DeliveryStatus.PENDING,
            attempt_count=0,
            extra_attempt_count=0,
            max_attempts=endpoint.max_retries + 1,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()
    request_manual_attempt(session, delivery_id=delivery.id)
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
                Delivery.status == DeliveryStatus.FAILED,
                Delivery.created_at >= since,
                Delivery.created_at < until,
            )
        )
    )
    for delivery_id in ids:
        request_manual_attempt(session, delivery_id=delivery_id)
    return len(ids)
