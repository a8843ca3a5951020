"""An endpoint's delivery figures, derived from its deliveries (no hot counter row)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ..models import Delivery, Endpoint
from ..models.base import UTCDateTime


@dataclass
class EndpointStats:
    """Delivery figures of one endpoint, derived from its deliveries (no hot counter row)."""

    total: int = 0
    successful: int = 0
    failed: int = 0
    pending: int = 0
    last_delivery_at: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EndpointWithStats:
    """An endpoint with its delivery figures, as the faces that show both read it.

    ``secret`` is the signing secret in clear, set only on the answer that creates the
    endpoint: it is shown that once.
    """

    endpoint: Endpoint
    stats: EndpointStats
    secret: str | None = None


def endpoint_stats(session: Session, endpoint_ids: list[str]) -> dict[str, EndpointStats]:
    """Delivery figures for many endpoints in one grouped query."""
    stats = {eid: EndpointStats() for eid in endpoint_ids}
    if not endpoint_ids:
        return stats
    rows = session.execute(
        select(
            Delivery.endpoint_id,
            func.count(),
            func.sum(case((Delivery.status == "delivered", 1), else_=0)),
            func.sum(case((Delivery.status == "failed", 1), else_=0)),
            func.sum(case((Delivery.status == "pending", 1), else_=0)),
            func.max(Delivery.last_attempt_at),
            func.max(Delivery.delivered_at),
            func.max(Delivery.last_failure_at),
        )
        .where(Delivery.endpoint_id.in_(endpoint_ids))
        .group_by(Delivery.endpoint_id)
    )
    as_dt = UTCDateTime().process_result_value
    dialect = session.get_bind().dialect
    for eid, total, ok, failed, pending, last, last_ok, last_fail in rows:
        stats[eid] = EndpointStats(
            total=total,
            successful=int(ok or 0),
            failed=int(failed or 0),
            pending=int(pending or 0),
            last_delivery_at=_coerce_dt(as_dt, last, dialect),
            last_success_at=_coerce_dt(as_dt, last_ok, dialect),
            last_failure_at=_coerce_dt(as_dt, last_fail, dialect),
        )
    return stats


def with_stats(session: Session, items: list[Endpoint]) -> list[EndpointWithStats]:
    """Each endpoint with its delivery figures (one grouped query for them all)."""
    stats = endpoint_stats(session, [endpoint.id for endpoint in items])
    return [EndpointWithStats(endpoint, stats[endpoint.id]) for endpoint in items]


def _coerce_dt(convert, value, dialect):
    # Aggregates lose the column type on SQLite (they come back as strings).
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return convert(value, dialect)
