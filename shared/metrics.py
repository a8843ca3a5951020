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
  existing indexes answer (``ix_deliveries_pending_due``, ``ix_deliveries_parked``,
  ``ix_messages_fanout_owed``).

Counting hooks into SQLAlchemy's session events rather than into the tasks: whatever
ORM code path records an attempt or finishes a delivery, the commit is the moment it
becomes true. The one path that records without the ORM (a scheduled try on PostgreSQL,
``shared.services.deliveries.records``) counts through ``count_attempt`` once its statement
has committed. Counters need Redis; on the embedded broker (no Redis) only the gauges are shown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from .config import Settings, get_settings
from .models import Attempt, Delivery

# One hash per Redis database: deployments sharing a server use different databases.
COUNTERS_KEY = "webhooks:metrics"
# Seconds; attempts end within the endpoint timeout (5-300 s, docs/api.md §5).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")


def status_class(status_code: int | None) -> str:
    """2xx/3xx/4xx/5xx for an answer, ``error`` when there was none (timeout, refused, ...)."""
    if status_code is None or not 200 <= status_code <= 599:
        return "error"
    return f"{status_code // 100}xx"


def _field(name: str, **labels: str) -> str:
    return "|".join([name, *(f"{k}={v}" for k, v in sorted(labels.items()))])


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    """A counter field's metric name and labels (what ``_field`` joined)."""
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
        counts[_completed_field(completed)] += 1
    store.add(counts)


@lru_cache(maxsize=8)
def _completed_field(outcome: str) -> str:
    # Two outcomes, named on every completed delivery: built once each.
    return _field("deliveries_completed", outcome=outcome)


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
