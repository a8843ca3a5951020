"""The scrape: the counters (shared.metrics), the database's and the broker's gauges, read
by a prometheus-client collector when ``/metrics`` is asked for (how each figure is
gathered, and why: shared.metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from . import lanes
from .config import Settings, get_settings
from .metrics import DURATION_BUCKETS, STATUS_CLASSES, get_store, parse_field
from .models import Delivery, Endpoint, Message, utcnow

# The counters' logger: a scrape's warnings read as before the scrape had a module of its own.
log = logging.getLogger("shared.metrics")

# The broker queues (webhooks_worker.routing): first attempts and retries, each family the
# sum of its organizations' lanes (shared.lanes) and its shared queue.
QUEUES = tuple(lanes.FAMILIES)
# kombu's Redis transport keeps a queue's prioritized messages in sibling lists.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def _as_datetime(value: Any, session: Session) -> datetime | None:
    """Aggregates lose the column type on SQLite (strings, naive); make them aware UTC."""
    from .models.base import UTCDateTime

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, session.get_bind().dialect)


def database_gauges(session: Session) -> dict[str, float]:
    """The present state from the database, in four index-backed queries."""
    now = utcnow()
    due = (Delivery.next_attempt_at <= now) & or_(
        Delivery.lease_until.is_(None), Delivery.lease_until <= now
    )
    pending = Delivery.status == "pending"
    # Pending deliveries with a due time, then parked ones: one partial index each.
    timed, oldest, due_count, most_overdue = session.execute(
        select(
            func.count(),
            func.min(Delivery.created_at),
            func.coalesce(func.sum(case((due, 1), else_=0)), 0),
            func.min(case((due, Delivery.next_attempt_at), else_=None)),
        ).where(pending, Delivery.next_attempt_at.is_not(None))
    ).one()
    parked, oldest_parked = session.execute(
        select(func.count(), func.min(Delivery.created_at)).where(
            pending, Delivery.next_attempt_at.is_(None)
        )
    ).one()
    oldest = min(
        (at for at in (_as_datetime(oldest, session), _as_datetime(oldest_parked, session)) if at),
        default=None,
    )
    awaiting = session.scalar(
        select(func.count()).select_from(Message).where(Message.fanned_out_at.is_(None))
    )
    endpoints = dict(
        session.execute(
            select(Endpoint.is_active, func.count())
            .where(Endpoint.deleted_at.is_(None))
            .group_by(Endpoint.is_active)
        ).all()
    )
    overdue_at = _as_datetime(most_overdue, session)
    return {
        "pending": float((timed or 0) + (parked or 0)),
        "due": float(due_count or 0),
        "oldest_pending_age": (now - oldest).total_seconds() if oldest else 0.0,
        "due_lag": max((now - overdue_at).total_seconds(), 0.0) if overdue_at else 0.0,
        "awaiting_fanout": float(awaiting or 0),
        "endpoints_active": float(endpoints.get(True, 0)),
        "endpoints_disabled": float(endpoints.get(False, 0)),
    }


def broker_gauges(settings: Settings) -> dict[str, float] | None:
    """Tasks waiting in each broker queue (Redis brokers only)."""
    if not settings.uses_redis:
        return None
    import redis

    client = redis.Redis.from_url(
        settings.broker_url, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    try:
        pipe = client.pipeline(transaction=False)
        names = [name for family in QUEUES for name in lanes.FAMILIES[family]]
        for queue in names:
            pipe.llen(queue)
            for step in _PRIORITY_STEPS:
                pipe.llen(f"{queue}{_PRIORITY_SEPARATOR}{step}")
        results = pipe.execute()
    finally:
        client.close()
    per_queue = len(_PRIORITY_STEPS) + 1
    depth = {
        queue: sum(results[index * per_queue : (index + 1) * per_queue])
        for index, queue in enumerate(names)
    }
    return {
        f"queue:{family}": float(sum(depth[name] for name in lanes.FAMILIES[family]))
        for family in QUEUES
    }


class WebhooksCollector:
    """A prometheus-client collector reading the counters, the database and the broker."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        """Every metric family, read now; a part that is down shows as ``webhooks_up`` 0."""
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "webhooks_up",
            "Whether this scrape could read a part (1) or not (0): counters (Redis), "
            "database, broker",
            labels=["part"],
        )
        yield from self._counters(up)
        yield from self._database(up)
        yield from self._broker(up)
        yield up

    def _counters(self, up: Any) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        store = get_store()
        if store is None:
            return
        try:
            raw = store.read()
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
            log.warning("metrics counters unreadable: %s", exc.__class__.__name__)
            up.add_metric(["counters"], 0)
            return
        up.add_metric(["counters"], 1)
        parsed = [(*parse_field(field), value) for field, value in raw.items()]

        def values(name: str) -> list[tuple[dict[str, str], float]]:
            return [(labels, value) for n, labels, value in parsed if n == name]

        ingested = CounterMetricFamily(
            "webhooks_messages_ingested",
            "Messages accepted (events, custom sends and tests), counted when fanned out; "
            "deployment-wide",
            labels=["kind"],
        )
        by_kind = {labels.get("kind"): value for labels, value in values("messages_ingested")}
        for kind in ("event", "custom", "test"):
            ingested.add_metric([kind], by_kind.get(kind, 0.0))
        yield ingested

        completed = CounterMetricFamily(
            "webhooks_deliveries_completed",
            "Deliveries that reached a final outcome (delivered, or failed with attempts "
            "exhausted or 410); deployment-wide",
            labels=["outcome"],
        )
        by_outcome = {
            labels.get("outcome"): value for labels, value in values("deliveries_completed")
        }
        for outcome in ("delivered", "failed"):
            completed.add_metric([outcome], by_outcome.get(outcome, 0.0))
        yield completed

        attempts = CounterMetricFamily(
            "webhooks_attempts",
            "Delivery attempts by answer class (error: no answer) and trigger; deployment-wide",
            labels=["status_class", "trigger"],
        )
        seen = {
            (labels.get("status_class"), labels.get("trigger")): value
            for labels, value in values("attempts")
        }
        for cls in STATUS_CLASSES:
            for trigger in ("scheduled", "manual", "test"):
                attempts.add_metric([cls, trigger], seen.get((cls, trigger), 0.0))
        yield attempts

        per_bucket = {
            labels.get("le"): value for labels, value in values("attempt_duration_bucket")
        }
        buckets, running = [], 0.0
        for bound in DURATION_BUCKETS:
            running += per_bucket.get(repr(bound), 0.0)
            buckets.append((repr(bound), running))
        running += per_bucket.get("+Inf", 0.0)
        buckets.append(("+Inf", running))
        sums = values("attempt_duration_sum")
        yield HistogramMetricFamily(
            "webhooks_attempt_duration_seconds",
            "Duration of delivery attempts, connect to last byte read; deployment-wide",
            buckets=buckets,
            sum_value=sums[0][1] if sums else 0.0,
        )

    def _database(self, up: Any) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self.factory() as session:
                gauges = database_gauges(session)
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
            log.warning("metrics database gauges unreadable: %s", exc.__class__.__name__)
            up.add_metric(["database"], 0)
            return
        up.add_metric(["database"], 1)
        for name, key, text in (
            ("webhooks_deliveries_pending", "pending", "Deliveries not yet final; deployment-wide"),
            (
                "webhooks_deliveries_due",
                "due",
                "Pending deliveries whose next try is due and that no worker is attempting; "
                "deployment-wide",
            ),
            (
                "webhooks_deliveries_due_lag_seconds",
                "due_lag",
                "How late the most overdue due try is; deployment-wide",
            ),
            (
                "webhooks_oldest_pending_delivery_age_seconds",
                "oldest_pending_age",
                "Age of the oldest pending delivery (retries wait up to hours by design); "
                "deployment-wide",
            ),
            (
                "webhooks_messages_awaiting_fanout",
                "awaiting_fanout",
                "Accepted messages whose deliveries are not created yet; deployment-wide",
            ),
        ):
            yield GaugeMetricFamily(name, text, value=gauges[key])
        endpoints = GaugeMetricFamily(
            "webhooks_endpoints",
            "Endpoints (not deleted) by status; deployment-wide",
            labels=["status"],
        )
        endpoints.add_metric(["active"], gauges["endpoints_active"])
        endpoints.add_metric(["disabled"], gauges["endpoints_disabled"])
        yield endpoints

    def _broker(self, up: Any) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            gauges = broker_gauges(self.settings)
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
            log.warning("metrics broker gauges unreadable: %s", exc.__class__.__name__)
            up.add_metric(["broker"], 0)
            return
        if gauges is None:
            return
        up.add_metric(["broker"], 1)
        depth = GaugeMetricFamily(
            "webhooks_queue_depth",
            "Tasks waiting in the broker queue; deployment-wide",
            labels=["queue"],
        )
        for queue in QUEUES:
            depth.add_metric([queue], gauges[f"queue:{queue}"])
        yield depth


@lru_cache(maxsize=1)
def _registry() -> Any:
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    from .db import get_sessionmaker

    registry = CollectorRegistry(auto_describe=False)
    registry.register(WebhooksCollector(get_sessionmaker(), get_settings()))
    # The standard process_* and python_* figures, of the api process that answers.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render() -> tuple[bytes, str]:
    """The exposition text of every metric and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_registry()), CONTENT_TYPE_LATEST
