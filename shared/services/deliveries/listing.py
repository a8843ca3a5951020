"""Reading an endpoint's deliveries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...errors import Invalid
from ...models import Delivery
from ..auth import Principal
from ..endpoints import get_endpoint

# The most deliveries one page shows.
LIMIT_RANGE = (1, 200)


def list_endpoint_deliveries(
    session: Session, *, principal: Principal, endpoint_id: str, limit: int = 50
) -> list[Delivery]:
    """An endpoint's deliveries, newest first."""
    get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not LIMIT_RANGE[0] <= limit <= LIMIT_RANGE[1]:
        raise Invalid(f"limit must be between {LIMIT_RANGE[0]} and {LIMIT_RANGE[1]}")
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )
