"""Celery tasks: thin views over the services. Each takes ids and opens its own session."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from shared import notify, tracing
from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.models import Trigger
from shared.queue import Task
from shared.services import deliveries, endpoint_health, endpoint_lifecycle, retention
from shared.services.fanout import fan_out
from shared.services.operational_events import report_failing

from .celery_app import app
from .client import http_client

log = logging.getLogger("webhooks.worker")

# A database that is briefly away is waited for; the sweep covers anything longer.
DB_RETRY = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": None,
}


@app.task(name=Task.FANOUT, **DB_RETRY)
def fanout(message_ids: list[str]) -> int:
    """Create the deliveries of messages and enqueue their first tries.

    Run twice, it creates nothing more: a message already fanned out is skipped.
    """
    with session_scope() as session:
        return len(fan_out(session, message_ids=message_ids) or [])


@app.task(name=Task.DELIVER, **DB_RETRY)
def deliver(delivery_id: str, try_number: int) -> str:
    """Make scheduled try ``try_number`` of a delivery.

    Run twice, the second run finds the try claimed or recorded and does nothing.
    """
    outcome = tracing.attempt(
        deliveries.run_scheduled_try,
        get_sessionmaker(),
        http_client(),
        delivery_id=delivery_id,
        try_number=try_number,
    )
    _log_outcome(outcome, try_number)
    notify.publish_attempt(outcome)  # committed by now: webhook.delivered / webhook.failed
    return outcome.skipped or outcome.delivery_status or ""


@app.task(name=Task.DELIVER_MANUAL, **DB_RETRY)
def deliver_manual(delivery_id: str, attempt_id: str, trigger: str = Trigger.MANUAL) -> str:
    """Make one manual (or test) attempt with a pre-assigned attempt id.

    Run twice, the second run finds the attempt recorded or its request held by the first,
    and posts nothing (unless the first died and its hold lapsed).
    """
    outcome = tracing.attempt(
        deliveries.run_manual_attempt,
        get_sessionmaker(),
        http_client(),
        delivery_id=delivery_id,
        attempt_id=attempt_id,
        trigger=trigger,
    )
    _log_outcome(outcome, None)
    notify.publish_attempt(outcome)
    return outcome.skipped or outcome.delivery_status or ""


@app.task(name=Task.SWEEP, **DB_RETRY)
def sweep() -> dict:
    """Enqueue tries that are due but not in the broker. Run twice, the claim dedupes."""
    with session_scope() as session:
        return deliveries.sweep_due(session, backlog=_broker_backlog())


@app.task(name=Task.AUTO_DISABLE, **DB_RETRY)
def auto_disable() -> int:
    """Disable endpoints failing for too long. Run twice, the second finds none left."""
    with session_scope() as session:
        return len(endpoint_health.auto_disable_failing(session))


@app.task(name=Task.ENDPOINT_TIMERS, **DB_RETRY)
def endpoint_timers() -> dict:
    """Delete expired endpoints and report endpoint.failing where a streak reached its window.

    Run twice (two beats), the second finds nothing left: each deletion and each notice is
    a conditional update.
    """
    with session_scope() as session:
        expired = endpoint_lifecycle.expire_endpoints(session)
        failing = report_failing(session)
    return {"expired": len(expired), "failing": len(failing)}


@app.task(name=Task.PURGE, **DB_RETRY)
def purge() -> dict:
    """Delete messages and attempts past retention. Run twice, the second deletes nothing."""
    return retention.purge_expired(get_sessionmaker())


def _log_outcome(outcome: deliveries.Outcome, try_number: int | None) -> None:
    extra = {"delivery_id": outcome.delivery_id}
    if outcome.skipped:
        log.debug(
            "delivery %s try %s skipped: %s",
            outcome.delivery_id,
            try_number,
            outcome.skipped,
            extra=extra,
        )
        return
    attempt = outcome.attempt
    log.info(
        "delivery %s attempt %s: %s %s in %sms%s",
        outcome.delivery_id,
        outcome.attempt_number,
        attempt.status,
        attempt.status_code if attempt.status_code is not None else attempt.error,
        attempt.duration_ms,
        f", next try in {outcome.countdown:.1f}s" if outcome.countdown else "",
        extra=extra,
    )


def _broker_backlog() -> int | None:
    """Tasks waiting in the broker's queues; None when the broker did not answer.

    Under full load a worker thread can wait for the GIL longer than the read's timeout:
    taking that for an empty broker made the sweep re-enqueue every overdue try behind a
    long queue (thousands of duplicates under a burst).
    """
    from shared.metrics_scrape import broker_gauges

    try:
        gauges = broker_gauges(get_settings()) or {}  # None: the embedded broker, no gauges
    except Exception as exc:  # noqa: BLE001 - reported; the sweep still hands over long waits
        log.warning("sweep: broker backlog unknown (%s); overdue tries wait for a sweep", exc)
        return None
    return int(sum(v for k, v in gauges.items() if k.startswith("queue:")))
