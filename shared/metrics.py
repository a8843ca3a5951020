"""Prometheus metrics for the whole deployment, served by any api process at ``/metrics``.

Every ``webhooks_*`` figure is deployment-wide: each api process reads the same Redis
hash, database and broker, so every replica answers the same numbers. Scrape one api
(or scrape them all and aggregate with ``max``, never ``sum``). The ``process_*`` and
``python_*`` figures (prometheus-client's standard collectors) are of the api process
that answered the scrape only.

Where the figures come from, and why:

- **Counters** (messages ingested, attempts by status class, the attempt duration
  histogram, deliveries completed by outcome) are facts that happen in workers, on any
  number of machines. Each process adds them to one Redis hash (``HINCRBY``) once the
  database transaction that made them true has committed, gathered with its other
  increments and sent within 50 ms (shared.courier), and the api reads the hash at
  scrape time. So every worker's figures are in every api's metrics, exactly once per
  committed row: a rolled-back transaction (a duplicate try losing the unique
  constraint) counts nothing; a process killed outright loses its last 50 ms. They are
  not derived from the tables because retention purges rows, and a counter that shrinks
  every hour is not a counter; nor are they per-process (multiprocess mode), because
  that only spans one machine.
- **Gauges** (pending deliveries, due-but-not-sent deliveries, oldest pending age,
  messages awaiting fan-out, endpoints, broker queue depth) describe the present, so
  they are read from the database and the broker at scrape time with queries that the
  existing indexes answer (``ix_deliveries_pending_due``, ``ix_messages_fanout_owed``).

Counting hooks into SQLAlchemy's session events rather than into the tasks: whatever
ORM code path records an attempt or finishes a delivery, the commit is the moment it
becomes true. The one path that records without the ORM (a scheduled try on PostgreSQL,
``shared.services.deliveries.records``) counts through ``count_attempt`` once its statement
has committed. Counters need Redis; on the embedded broker (no Redis) only the gauges are shown.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import case, event, func, inspect, or_, select
from sqlalchemy.orm import Session, sessionmaker

from . import lanes
from .config import Settings, get_settings
from .models import Attempt, Delivery, Endpoint, Message, utcnow

log = logging.getLogger(__name__)

# One hash per Redis database: deployments sharing a server use different databases.
COUNTERS_KEY = "webhooks:metrics"
# Seconds; attempts end within the endpoint timeout (5-300 s, docs/api.md §5).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
# The broker queues (webhooks_worker.routing): first attempts and retries, each family the
# sum of its organizations' lanes (shared.lanes) and its shared queue.
QUEUES = tuple(lanes.FAMILIES)
# kombu's Redis transport keeps a queue's prioritized messages in sibling lists.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def status_class(status_code: int | None) -> str:
    """2xx/3xx/4xx/5xx for an answer, ``error`` when there was none (timeout, refused, ...)."""
    if status_code is None or not 200 <= status_code <= 599:
        return "error"
    return f"{status_code // 100}xx"


def _field(name: str, **labels: str) -> str:
    return "|".join([name, *(f"{k}={v}" for k, v in sorted(labels.items()))])


def _parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, *parts = field.split("|")
    return name, dict(part.split("=", 1) for part in parts if "=" in part)


# Counter fields that add seconds (floats); every other field counts events.
FLOAT_FIELDS = frozenset({"attempt_duration_sum"})


@lru_cache(maxsize=512)
def _attempt_fields(status: str, trigger: str, bucket: float | None) -> tuple[str, str]:
    # Every attempt names one of a few dozen fields: build each name once, not per attempt.
    return (
        _field("attempts", status_class=status, trigger=trigger),
        _field("attempt_duration_bucket", le=repr(bucket) if bucket else "+Inf"),
    )


_DURATION_COUNT = _field("attempt_duration_count")
_DURATION_SUM = _field("attempt_duration_sum")


def attempt_increments(status_code: int | None, trigger: str, duration_ms: int) -> Counter:
    """The counter increments of one recorded attempt."""
    seconds = max(duration_ms, 0) / 1000.0
    bucket = None
    for upper in DURATION_BUCKETS:
        if seconds <= upper:
            bucket = upper
            break
    attempts, duration_bucket = _attempt_fields(status_class(status_code), trigger, bucket)
    counts: Counter = Counter()
    counts[attempts] = 1
    counts[duration_bucket] = 1
    counts[_DURATION_COUNT] = 1
    counts[_DURATION_SUM] = seconds
    return counts


# ---- the counter store ---------------------------------------------------------------------


class CounterStore:
    """Deployment-wide counters in one Redis hash."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def add(self, counts: Counter) -> None:
        """Add the increments with the process's next courier flush (shared.courier)."""
        from .courier import get_courier

        get_courier(self.url).increment(COUNTERS_KEY, counts, float_fields=FLOAT_FIELDS)

    def read(self) -> dict[str, float]:
        """Every counter, by field."""
        raw = self.client.hgetall(COUNTERS_KEY)
        return {k.decode(): float(v) for k, v in raw.items()}


def counters_url(settings: Settings) -> str | None:
    """The Redis that holds the counters: REDIS_URL, else a Redis broker; None without one."""
    if settings.redis_url and settings.redis_url.startswith(("redis://", "rediss://", "unix:")):
        return settings.redis_url
    return settings.broker_url if settings.uses_redis else None


@lru_cache(maxsize=1)
def get_store() -> CounterStore | None:
    """The process's counter store, or None when the deployment has no Redis."""
    url = counters_url(get_settings())
    return CounterStore(url) if url else None


# ---- counting at commit --------------------------------------------------------------------

_PENDING = "webhooks_metrics"


def _flushed_increments(session: Session) -> Counter:
    counts: Counter = Counter()
    for obj in session.new:
        if isinstance(obj, Attempt):
            counts.update(attempt_increments(obj.status_code, obj.trigger, obj.duration_ms or 0))
    for obj in session.dirty:
        if isinstance(obj, Delivery):
            hist = inspect(obj).attrs.status.history
            finished = hist.added and hist.added[0] in ("delivered", "failed")
            if finished and (not hist.deleted or hist.deleted[0] != hist.added[0]):
                counts[_field("deliveries_completed", outcome=hist.added[0])] += 1
    return counts


def count_fanned_out(session: Session, messages: Iterable[Any]) -> None:
    """Count messages fanned out in the session's transaction, once it commits.

    A message is counted once, when its fan-out commits (every accepted message is
    fanned out exactly once; a duplicate eventId never makes a message). The messages
    are written with SQLAlchemy Core, which the flush-time collection above never sees.
    """
    counts = _message_increments(messages)
    if counts:
        session.info.setdefault(_PENDING, Counter()).update(counts)


def count_committed_messages(messages: Iterable[Any]) -> None:
    """Count messages whose fan-out has committed already (outside any session)."""
    store = get_store()
    counts = _message_increments(messages)
    if store is not None and counts:
        store.add(counts)


def _message_increments(messages: Iterable[Any]) -> Counter:
    counts: Counter = Counter()
    for message in messages:
        kind = "test" if message.test else "custom" if message.custom else "event"
        counts[_field("messages_ingested", kind=kind)] += 1
    return counts


def count_attempt(
    status_code: int | None, trigger: str, duration_ms: int, *, completed: str | None
) -> None:
    """Count an attempt recorded outside the ORM (committed already), and the delivery it
    completed (``delivered`` or ``failed``), if any."""
    store = get_store()
    if store is None:
        return
    counts = attempt_increments(status_code, trigger, duration_ms)
    if completed is not None:
        counts[_field("deliveries_completed", outcome=completed)] += 1
    store.add(counts)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context: Any) -> None:
    counts = _flushed_increments(session)
    if counts:
        session.info.setdefault(_PENDING, Counter()).update(counts)


@event.listens_for(Session, "after_commit")
def _push(session: Session) -> None:
    counts = session.info.pop(_PENDING, None)
    if counts:
        store = get_store()
        if store is not None:
            store.add(counts)


@event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    session.info.pop(_PENDING, None)


# ---- the scrape ----------------------------------------------------------------------------


def _as_datetime(value: Any, session: Session) -> datetime | None:
    """Aggregates lose the column type on SQLite (strings, naive); make them aware UTC."""
    from .models.base import UTCDateTime

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return UTCDateTime().process_result_value(value, session.get_bind().dialect)


def database_gauges(session: Session) -> dict[str, float]:
    """The present state from the database, in three index-backed queries."""
    now = utcnow()
    due = (Delivery.next_attempt_at <= now) & or_(
        Delivery.lease_until.is_(None), Delivery.lease_until <= now
    )
    pending, oldest, due_count, most_overdue = session.execute(
        select(
            func.count(),
            func.min(Delivery.created_at),
            func.coalesce(func.sum(case((due, 1), else_=0)), 0),
            func.min(case((due, Delivery.next_attempt_at), else_=None)),
        ).where(Delivery.status == "pending")
    ).one()
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
    oldest_at = _as_datetime(oldest, session)
    overdue_at = _as_datetime(most_overdue, session)
    return {
        "pending": float(pending or 0),
        "due": float(due_count or 0),
        "oldest_pending_age": (now - oldest_at).total_seconds() if oldest_at else 0.0,
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
        parsed = [(*_parse_field(field), value) for field, value in raw.items()]

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
