"""Endpoints that end by themselves: bound to one resource, or expiring (docs/api.md §11.4).

An endpoint bound to a resource (``resource_id``, an event's ``id``) receives only that
resource's events (``shared.services.fanout``) and is deleted once the resource's final
event has been delivered to it or has failed for good: the delivery writers call
``end_endpoint`` when such a delivery ends, never while its retries are pending. An
expiring endpoint (``expires_at``) is deleted by beat's ``expire_endpoints``. Both
deletions are DELETE's (soft delete, pending deliveries cancelled, ``endpoint.deleted``
on the live socket) with a ``deleted_reason``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import events, notify
from ..errors import Invalid
from ..models import Endpoint, utcnow

RESOURCE_ENDED = "resource ended"
EXPIRED = "expired"
RESOURCE_ID_MAX = 256
# docs/api.md §11.4: an expiry is at most a year ahead.
LONGEST_EXPIRY = timedelta(days=365)
# Fields set at creation only.
CREATION_ONLY = ("resource_id",)


def check_resource_id(value: object) -> str | None:
    """A resource id as given (an event's ``id``), or None; Invalid naming the field."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid("resource_id must be a non-empty string")
    if len(value) > RESOURCE_ID_MAX or "\x00" in value:
        raise Invalid(f"resource_id must be at most {RESOURCE_ID_MAX} characters, without NUL")
    return value


def check_expires_at(value: object, *, now: datetime | None = None) -> datetime | None:
    """An expiry in the future and at most a year ahead, or None; Invalid naming the field."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        # The faces hand over the ISO 8601 text as given; ingest parses it the one way.
        from .ingest import parse_timestamp

        value = parse_timestamp(value, "expires_at")
    now = now or utcnow()
    if value <= now:
        raise Invalid("expires_at must be in the future")
    if value > now + LONGEST_EXPIRY:
        raise Invalid("expires_at must be at most one year ahead")
    return value


def check_not_changed(changes: dict) -> None:
    """Refuse an update that names a field set at creation only."""
    for name in CREATION_ONLY:
        if name in changes:
            raise Invalid(f"{name} is set when the endpoint is created and cannot be changed")


def ends_binding(endpoint: Any, message: Any) -> bool:
    """Whether delivering this message to this endpoint ends the endpoint's resource binding.

    ``endpoint`` and ``message`` are rows or anything with their attributes. A test send
    reaches an endpoint whatever it is bound to, so it never ends one.
    """
    resource_id = getattr(endpoint, "resource_id", None)
    if resource_id is None or message.test or message.custom:
        return False
    payload = message.payload or {}
    return payload.get("id") == resource_id and events.is_final_event(message.event_type, payload)


def end_endpoint(session: Session, *, endpoint_id: str, reason: str) -> bool:
    """Delete an endpoint on the service's own decision, as DELETE does; False if it was gone.

    Deliveries before the endpoint row, in the order a recording worker takes them.
    """
    from .endpoints import cancel_pending_deliveries

    now = utcnow()
    cancel_pending_deliveries(session, endpoint_id=endpoint_id, reason="Endpoint deleted")
    ended = session.execute(
        update(Endpoint)
        .where(Endpoint.id == endpoint_id, Endpoint.deleted_at.is_(None))
        .values(deleted_at=now, deleted_reason=reason, is_active=False, updated_at=now)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if ended:
        notify.endpoint_event_after_commit(session, "endpoint.deleted", endpoint_id)
    return bool(ended)


def expire_endpoints(session: Session) -> list[str]:
    """Delete every live endpoint whose expiry has come; their ids (beat's job)."""
    ids = list(
        session.scalars(
            select(Endpoint.id).where(
                Endpoint.deleted_at.is_(None),
                Endpoint.expires_at.is_not(None),
                Endpoint.expires_at <= utcnow(),
            )
        )
    )
    return [i for i in ids if end_endpoint(session, endpoint_id=i, reason=EXPIRED)]
