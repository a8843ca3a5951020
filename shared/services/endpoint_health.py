"""Endpoints that keep failing: the auto-disable clock.

An endpoint's ``failing_since`` is the start of its current run of failed attempts
(``shared.transitions`` decides when a streak starts and ends; the delivery writers mark
it). Beat disables an endpoint whose streak has lasted ``WEBHOOKS_DISABLE_AFTER_HOURS``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import get_settings
from ..models import Endpoint, utcnow
from .endpoints import disable_endpoint


def auto_disable_failing(session: Session) -> list[str]:
    """Disable endpoints failing continuously for WEBHOOKS_DISABLE_AFTER_HOURS; their ids."""
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
