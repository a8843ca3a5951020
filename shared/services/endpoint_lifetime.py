"""The options that bound an endpoint's life (docs/api.md §11.4): what they may be.

``resource_id`` binds an endpoint to one resource (an event's ``id``), set at creation
only; ``expires_at`` is when it is deleted. Checked here for every face; what ends an
endpoint is ``shared.services.endpoint_lifecycle``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .. import events
from ..errors import Invalid
from ..models import utcnow

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
    """An expiry in the future and at most a year ahead, or None; Invalid naming the field.

    The faces parse the ISO 8601 text (their schemas), so a time arrives aware.
    """
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Invalid("expires_at must be an ISO 8601 date-time")
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
    reaches an endpoint whatever it is bound to, so it never ends one; nor does a custom
    send, which only looks like an event.
    """
    resource_id = getattr(endpoint, "resource_id", None)
    if resource_id is None or message.test or message.custom:
        return False
    payload = message.payload or {}
    return payload.get("id") == resource_id and events.is_final_event(message.event_type, payload)
