"""Endpoints that end by themselves: bound to one resource, or expiring (docs/api.md §11.4).

An endpoint bound to a resource (``resource_id``, an event's ``id``) receives only that
resource's events (``shared.services.fanout``) and is deleted once the resource's final
event has been delivered to it or has failed for good: the delivery writers call
``end_endpoint`` when such a delivery ends (``deliveries.endings``), never while its
retries are pending. An expiring endpoint (``expires_at``) is deleted by beat's
``expire_endpoints``. Both deletions are a DELETE's (soft delete, pending deliveries
cancelled, ``endpoint.deleted`` on the live socket) with a ``deleted_reason``. What the
options may be is ``shared.services.endpoint_lifetime``.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import notify
from ..models import Endpoint, utcnow
from .endpoints import cancel_pending_deliveries

RESOURCE_ENDED = "resource ended"
EXPIRED = "expired"


def end_endpoint(session: Session, *, endpoint_id: str, reason: str) -> bool:
    """Delete an endpoint on the service's own decision, as DELETE does; False if it was gone.

    Deliveries before the endpoint row, in the order a recording worker takes them.
    """
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
