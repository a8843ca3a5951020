"""Reading messages back: pages of an organization's messages, one with its deliveries, attempts."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from .. import payloads
from ..errors import Invalid, NotFound
from ..models import Attempt, Delivery, Endpoint, Message
from .auth import Principal
from .endpoints import get_endpoint


@dataclass(frozen=True, slots=True)
class MessageWithDeliveries:
    """A message with its deliveries to the endpoints the reader can see."""

    message: Message
    deliveries: list[Delivery]


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
    # On the timestamp a message shows (docs/api.md §4.1), stored as that very ISO 8601 text, whose
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
