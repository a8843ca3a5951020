"""Health of the parts the service depends on: database, broker and workers (docs/api.md §6.2)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass
class ServiceStatus:
    """The status answer: each part's health and the overall verdict."""

    database_ok: bool
    database_latency_ms: float | None
    broker_ok: bool
    worker_count: int

    @property
    def workers_ok(self) -> bool:
        """At least one worker answered."""
        return self.worker_count > 0

    @property
    def healthy(self) -> bool:
        """Every part works."""
        return self.database_ok and self.broker_ok and self.workers_ok


def database_latency(session: Session) -> float | None:
    """Round-trip time of a trivial query in milliseconds, or None when it fails."""
    started = time.perf_counter()
    try:
        session.execute(text("SELECT 1")).scalar()
    except SQLAlchemyError as exc:
        log.warning("database check failed: %s", exc.__class__.__name__)
        session.rollback()
        return None
    return round((time.perf_counter() - started) * 1000, 2)


def service_status(
    session: Session, *, broker_ok: Callable[[], bool], worker_count: Callable[[], int]
) -> ServiceStatus:
    """Check the database, then the broker and the workers through the given probes."""
    latency = database_latency(session)
    broker = broker_ok()
    # Workers listen on the broker: without one, none can answer.
    workers = worker_count() if broker else 0
    return ServiceStatus(
        database_ok=latency is not None,
        database_latency_ms=latency,
        broker_ok=broker,
        worker_count=workers,
    )


@dataclass
class Readiness:
    """What a readiness probe answers: the database decides, the broker is reported."""

    database_ok: bool
    broker_ok: bool

    @property
    def ready(self) -> bool:
        """Ready while the database answers.

        Without the broker an api still accepts and stores every event (the deliveries
        are rows first, and beat's sweep enqueues them once the broker is back); taking
        every replica out of its load balancer would turn a delay into lost events.
        """
        return self.database_ok

    @property
    def down(self) -> list[str]:
        """The parts that did not answer."""
        return [
            part
            for part, ok in (("database", self.database_ok), ("broker", self.broker_ok))
            if not ok
        ]


def readiness(session: Session, *, broker_ok: Callable[[], bool]) -> Readiness:
    """Check the database, and the broker through the given probe."""
    return Readiness(database_ok=database_latency(session) is not None, broker_ok=broker_ok())
