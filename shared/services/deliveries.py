"""Delivery attempts: claim a try, post it, record it, decide what comes next."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from types import SimpleNamespace

from sqlalchemy import Engine, Select, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .. import logs, metrics, payloads
from ..config import Settings, get_settings
from ..errors import Conflict, Invalid
from ..http import AttemptResult, DeliveryClient
from ..models import Attempt, Delivery, Endpoint, ManualRequest, Message, new_id, utcnow
from ..queue import enqueue, enqueue_after_commit
from ..signing import webhook_headers
from . import try_statements
from .auth import Principal
from .endpoints import cancel_pending_deliveries, get_endpoint, signing_secrets
from .messages import DELIVER_TASK, get_message

log = logging.getLogger(__name__)

MANUAL_TASK = "webhooks.deliver_manual"
# SPEC 5: each wait gets up to 20% jitter, added so that no retry comes earlier than scheduled.
JITTER = 0.2
# Countdowns longer than this are not handed to the broker. A worker holds a countdown
# task in memory until it is due (~5.7 KB each) and counts it against its prefetch limit
# (worker_eta_task_limit): holding every 5-minute retry of a receiver that is down, as a
# 15-minute bound did, made workers' memory grow with the outage (benchmark scenario 5 on
# the default schedule, 20,000 retries due in 5 minutes: peak RSS of two workers 405 MB,
# 321 MB with this bound and the sweep's lookahead below) and, at the limit, would stop a
# worker taking any task at all.
# Longer waits stay in the database; beat's sweep hands each try to the broker LOOKAHEAD
# before it is due, with its exact due time as the task's ETA.
MAX_BROKER_COUNTDOWN = 60.0
# A claim holds a try this long, and the worker making the attempt renews it every
# LEASE_RENEW_EVERY seconds until the attempt is over. A try whose worker died (SIGKILL,
# OOM, a lost machine) is thus free for beat's sweep within LEASE_SECONDS whatever the
# endpoint's timeout (up to 300 s), so it is attempted again within 60 s of being due.
LEASE_SECONDS = 20.0
LEASE_RENEW_EVERY = 5.0
# A task that arrives this early is re-queued for the rest of its wait.
EARLY_TOLERANCE = 0.5
RESPONSE_BODY_LIMIT = 4096


@lru_cache(maxsize=1)
def user_agent() -> str:
    """The User-Agent of delivery requests: product/version (read once: metadata is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sandbox-webhooks/{version('sandbox-webhooks')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "sandbox-webhooks/0.1.0"


def backoff_seconds(try_number: int, schedule: tuple, rng: random.Random | None = None) -> float:
    """Wait before try ``try_number + 1`` after try ``try_number`` failed (1-based), jittered."""
    base = float(schedule[min(try_number, len(schedule)) - 1])
    return base * (1 + (rng or random).uniform(0, JITTER))


@dataclass
class Outcome:
    """What a task did, for logs, the live socket and the caller's retry decision."""

    delivery_id: str
    skipped: str | None = None
    attempt: Attempt | AttemptRecord | None = None
    final: bool = False
    delivery_status: str | None = None
    next_try: int | None = None
    countdown: float | None = None
    organization_id: str | None = None
    event_type: str | None = None
    attempt_number: int | None = None
    # Who may see the endpoint, for the live socket's rooms (SPEC 7).
    endpoint_scope: str | None = None
    endpoint_owner: str | None = None


def _build_request(endpoint: Endpoint, message: Message, delivery: Delivery) -> tuple[bytes, dict]:
    body = payloads.serialize(
        payloads.render_payload(
            payload_format=endpoint.payload_format,
            message_id=message.id,
            event_type=message.event_type,
            delivery_name=delivery.event_type,
            fields=message.payload,
            timestamp=message.timestamp,
            custom=message.custom,
        )
    )
    headers = webhook_headers(
        secrets=signing_secrets(endpoint),
        msg_id=message.id,
        timestamp=int(time.time()),
        body=body,
        user_agent=user_agent(),
    )
    return body, headers


def _load(session: Session, delivery_id: str):
    return session.execute(
        select(Delivery, Endpoint, Message)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.id == delivery_id)
    ).first()


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """An attempt the one-statement path recorded: the attempts row's fields, no ORM object.

    Building an ORM ``Attempt`` (attribute instrumentation, state tracking) cost about
    60 us per attempt for an object no session ever sees (tests.bench.hotpath).
    """

    id: str
    delivery_id: str
    endpoint_id: str
    message_id: str
    organization_id: str
    url: str
    status: str
    status_code: int | None
    duration_ms: int
    trigger: str
    try_number: int | None
    response_body: str | None
    error: str | None
    created_at: datetime


def _attempt_row(
    *,
    attempt_id: str,
    delivery: Delivery | SimpleNamespace,
    url: str,
    result: AttemptResult,
    trigger: str,
    try_number: int | None,
    now: datetime,
    row_type: type = Attempt,
) -> Attempt | AttemptRecord:
    return row_type(
        id=attempt_id,
        delivery_id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        message_id=delivery.message_id,
        organization_id=delivery.organization_id,
        url=url,
        status="success" if result.ok else "failed",
        status_code=result.status_code,
        duration_ms=result.duration_ms,
        trigger=trigger,
        try_number=try_number,
        response_body=result.response_body,
        error=result.error,
        created_at=now,
    )


def _error_text(result: AttemptResult) -> str | None:
    if result.ok:
        return None
    if result.error:
        return result.error
    return f"HTTP {result.status_code}"


def _mark_endpoint_health(
    session: Session, endpoint_id: str, failing_since: datetime | None, ok: bool, now: datetime
) -> None:
    """Track the start of a failure streak with conditional writes (no hot row per attempt).

    ``failing_since`` is what the endpoint said when the attempt began: a healthy endpoint
    that stays healthy costs no write at all.
    """
    if ok and failing_since is not None:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id, Endpoint.failing_since.is_not(None))
            .values(failing_since=None)
        )
    elif not ok and failing_since is None:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id, Endpoint.failing_since.is_(None))
            .values(failing_since=now)
        )


@dataclass
class _Claimed:
    """What a claimed try needs after its database session is gone."""

    body: bytes
    headers: dict
    url: str
    timeout: float
    trigger: str
    max_attempts: int
    organization_id: str
    event_type: str
    message_id: str
    endpoint_id: str
    failing_since: datetime | None
    endpoint_scope: str
    endpoint_owner: str | None


def _claimed(delivery, endpoint, message) -> _Claimed:
    body, headers = _build_request(endpoint, message, delivery)
    return _Claimed(
        body=body,
        headers=headers,
        url=endpoint.url,
        timeout=float(endpoint.timeout_seconds),
        trigger="test" if message.test else "scheduled",
        max_attempts=delivery.max_attempts,
        organization_id=delivery.organization_id,
        event_type=delivery.event_type,
        message_id=message.id,
        endpoint_id=endpoint.id,
        failing_since=endpoint.failing_since,
        endpoint_scope=endpoint.scope,
        endpoint_owner=endpoint.user_id,
    )


def _claim(
    factory: sessionmaker[Session], engine: Engine | None, delivery_id: str, try_number: int
):
    """Claim a due try: a _Claimed, or the Outcome of a try that is not to be made now."""
    if engine is not None:
        now = utcnow()
        parts = try_statements.claim(
            engine,
            {
                "delivery_id": delivery_id,
                "previous": try_number - 1,
                "now": now,
                "due_by": now + timedelta(seconds=EARLY_TOLERANCE),
                "lease": now + timedelta(seconds=LEASE_SECONDS),
            },
        )
        if parts is not None:
            delivery, endpoint, message = (
                SimpleNamespace(**parts[k]) for k in ("delivery", "endpoint", "message")
            )
            # No ORM load tells the log context whose delivery this is (shared.logs).
            logs.remember_delivery(
                delivery_id,
                message_id=message.id,
                endpoint_id=endpoint.id,
                organization_id=delivery.organization_id,
            )
            return _claimed(delivery, endpoint, message)
    # Not the common case (not due, leased, done, endpoint disabled) or not PostgreSQL:
    # the slow path finds out which and acts on it.
    with factory() as session:
        claimed = _claim_slowly(session, delivery_id, try_number)
        if isinstance(claimed, Outcome):
            return claimed
        return _claimed(*claimed)


def run_scheduled_try(
    factory: sessionmaker[Session], client: DeliveryClient, *, delivery_id: str, try_number: int
) -> Outcome:
    """Make scheduled try ``try_number`` of a delivery, at most once.

    Run twice (a redelivered task, a sweep's duplicate), the second run finds the try
    claimed or recorded and does nothing.
    """
    # PostgreSQL: one statement per step; None: the ORM path throughout (SQLite).
    engine = try_statements.autocommit_engine(factory)
    claimed = _claim(factory, engine, delivery_id, try_number)
    if isinstance(claimed, Outcome):
        return claimed
    # Renewed while the post runs; the record below has LEASE_SECONDS - LEASE_RENEW_EVERY.
    with _LEASES.holding(factory, delivery_id, try_number):
        result = client.post(claimed.url, claimed.body, claimed.headers, timeout=claimed.timeout)
    settings = get_settings()
    if engine is not None and result.status_code != 410:
        outcome = _record_in_one_statement(
            engine,
            delivery_id=delivery_id,
            try_number=try_number,
            claimed=claimed,
            result=result,
            settings=settings,
        )
        if outcome is not None:
            return outcome
    return _record_scheduled_try(
        factory,
        delivery_id=delivery_id,
        try_number=try_number,
        url=claimed.url,
        trigger=claimed.trigger,
        result=result,
        endpoint_id=claimed.endpoint_id,
        failing_since=claimed.failing_since,
        endpoint_scope=claimed.endpoint_scope,
        endpoint_owner=claimed.endpoint_owner,
        settings=settings,
    )


def next_step(result: AttemptResult, *, try_number: int, max_attempts: int, trigger: str) -> str:
    """What scheduled try ``try_number`` leads to (SPEC 5): delivered, retry or failed.

    A 410 fails at once, a test is one attempt, anything else failing is retried until
    ``max_attempts``.
    """
    if result.ok:
        return "delivered"
    if result.status_code == 410 or trigger == "test" or try_number >= max_attempts:
        return "failed"
    return "retry"


def retry_wait(try_number: int, result: AttemptResult, settings: Settings) -> float:
    """Seconds before the try after failed try ``try_number``: the schedule, or Retry-After."""
    wait = backoff_seconds(try_number, settings.retry_schedule)
    if result.retry_after is not None and result.status_code in (429, 503):
        wait = max(wait, min(result.retry_after, 86400.0))
    return wait


def _record_in_one_statement(
    engine,
    *,
    delivery_id: str,
    try_number: int,
    claimed: _Claimed,
    result: AttemptResult,
    settings: Settings,
) -> Outcome | None:
    """Record a try of a still-pending delivery in one statement; None: use the ORM path."""
    now = utcnow()
    kind = next_step(
        result, try_number=try_number, max_attempts=claimed.max_attempts, trigger=claimed.trigger
    )
    wait = retry_wait(try_number, result, settings) if kind == "retry" else None
    health = None
    if result.ok and claimed.failing_since is not None:
        health = "healthy"
    elif not result.ok and claimed.failing_since is None:
        health = "failing"
    attempt = _attempt_row(
        attempt_id=new_id("atm"),
        delivery=SimpleNamespace(
            id=delivery_id,
            endpoint_id=claimed.endpoint_id,
            message_id=claimed.message_id,
            organization_id=claimed.organization_id,
        ),
        url=claimed.url,
        result=result,
        trigger=claimed.trigger,
        try_number=try_number,
        now=now,
        row_type=AttemptRecord,
    )
    params = {
        "p_delivery_id": delivery_id,
        "p_previous": try_number - 1,
        "p_try_number": try_number,
        "p_now": now,
        "p_status_code": result.status_code,
        "p_error_message": _error_text(result),
        "p_attempt_id": attempt.id,
        "p_endpoint_id": attempt.endpoint_id,
        "p_message_id": attempt.message_id,
        "p_organization_id": attempt.organization_id,
        "p_url": attempt.url,
        "p_attempt_status": attempt.status,
        "p_duration_ms": attempt.duration_ms,
        "p_trigger": attempt.trigger,
        "p_response_body": attempt.response_body,
        "p_error": attempt.error,
        "p_delivered_at": now,
        "p_failed_at": now,
        "p_last_failure_at": now,
        "p_next_attempt_at": now + timedelta(seconds=wait) if wait is not None else None,
        "p_enqueued_at": now if wait is not None and wait <= MAX_BROKER_COUNTDOWN else None,
    }
    try:
        extra = try_statements.record(engine, kind, health, params)
    except IntegrityError:
        return Outcome(delivery_id, skipped="recorded")
    if extra is None:
        return None  # recorded by another run, or no longer pending: the ORM path sorts it out
    if wait is not None and wait <= MAX_BROKER_COUNTDOWN:
        enqueue(DELIVER_TASK, delivery_id, try_number + 1, countdown=wait)
    metrics.count_attempt(
        attempt.status_code,
        attempt.trigger,
        attempt.duration_ms,
        completed=None if kind == "retry" else kind,
    )
    outcome = Outcome(
        delivery_id,
        attempt=attempt,
        final=kind != "retry",
        delivery_status="pending" if kind == "retry" else kind,
        organization_id=claimed.organization_id,
        event_type=claimed.event_type,
        attempt_number=try_number + extra,
        endpoint_scope=claimed.endpoint_scope,
        endpoint_owner=claimed.endpoint_owner,
    )
    if wait is not None:
        outcome.next_try, outcome.countdown = try_number + 1, wait
    return outcome


def _claim_slowly(session: Session, delivery_id: str, try_number: int):
    """Read the delivery, decide why it may not be due, and claim it if it is.

    Returns an Outcome when there is nothing to post, else (delivery, endpoint, message).
    """
    row = _load(session, delivery_id)
    if row is None:
        return Outcome(delivery_id, skipped="gone")
    delivery, endpoint, message = row
    now = utcnow()
    if delivery.status != "pending" or delivery.attempt_count != try_number - 1:
        return Outcome(delivery_id, skipped="done")
    if not endpoint.is_active or endpoint.deleted_at is not None:
        cancel_pending_deliveries(session, endpoint_id=endpoint.id, reason="Endpoint disabled")
        session.commit()
        return Outcome(delivery_id, skipped="cancelled")
    if delivery.lease_until is not None and delivery.lease_until > now:
        return Outcome(delivery_id, skipped="leased")
    if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(
        seconds=EARLY_TOLERANCE
    ):
        wait = (delivery.next_attempt_at - now).total_seconds()
        if wait <= MAX_BROKER_COUNTDOWN:
            enqueue(DELIVER_TASK, delivery_id, try_number, countdown=wait)
        else:
            # Not in the broker any more: the sweep hands it over shortly before it is due.
            delivery.enqueued_at = None
            session.commit()
        return Outcome(delivery_id, skipped="early")
    lease = now + timedelta(seconds=LEASE_SECONDS)
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "pending",
            Delivery.attempt_count == try_number - 1,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
        )
        .values(lease_until=lease)
    ).rowcount
    session.commit()
    if not claimed:
        return Outcome(delivery_id, skipped="leased")
    return delivery, endpoint, message


def _record_scheduled_try(
    factory: sessionmaker[Session],
    *,
    delivery_id: str,
    try_number: int,
    url: str,
    trigger: str,
    result: AttemptResult,
    endpoint_id: str,
    failing_since: datetime | None,
    endpoint_scope: str,
    endpoint_owner: str | None,
    settings: Settings,
) -> Outcome:
    """Record a scheduled try's attempt and decide what comes next, in one transaction."""
    with factory() as session:
        now = utcnow()
        delivery = session.scalars(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update()
        ).first()
        if delivery is None or delivery.attempt_count != try_number - 1:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
        attempt = _attempt_row(
            attempt_id=new_id("atm"),
            delivery=delivery,
            url=url,
            result=result,
            trigger=trigger,
            try_number=try_number,
            now=now,
        )
        session.add(attempt)
        delivery.attempt_count = try_number
        delivery.lease_until = None
        delivery.last_attempt_at = now
        if delivery.status == "pending":
            # Cancelled (endpoint disabled) or delivered by a manual attempt while this try
            # was in flight: the attempt is recorded, the delivery keeps its own account.
            delivery.http_status_code = result.status_code
            delivery.error_message = _error_text(result)
        delivery.updated_at = now
        outcome = Outcome(
            delivery_id,
            attempt=attempt,
            organization_id=delivery.organization_id,
            event_type=delivery.event_type,
            attempt_number=delivery.attempt_count + delivery.extra_attempt_count,
            endpoint_scope=endpoint_scope,
            endpoint_owner=endpoint_owner,
        )
        still_pending = delivery.status == "pending"
        step = next_step(
            result, try_number=try_number, max_attempts=delivery.max_attempts, trigger=trigger
        )
        if not result.ok:
            delivery.last_failure_at = now
        if step == "retry" and still_pending:
            wait = retry_wait(try_number, result, settings)
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            if wait <= MAX_BROKER_COUNTDOWN:
                delivery.enqueued_at = now
                enqueue_after_commit(
                    session, DELIVER_TASK, delivery_id, try_number + 1, countdown=wait
                )
            else:
                delivery.enqueued_at = None
            outcome.next_try, outcome.countdown = try_number + 1, wait
        else:
            # A delivery that stopped being pending meanwhile (cancelled, or delivered by
            # a manual attempt) keeps its own account, except that a 410 fails it anyway.
            if still_pending or result.status_code == 410:
                delivery.status = "delivered" if step == "delivered" else "failed"
                if step == "delivered":
                    delivery.delivered_at = now
                else:
                    delivery.failed_at = now
                delivery.next_attempt_at = None
            outcome.final = True
        outcome.delivery_status = delivery.status
        _mark_endpoint_health(session, endpoint_id, failing_since, result.ok, now)
        if result.status_code == 410:
            from .endpoints import disable_endpoint

            disable_endpoint(
                session, endpoint_id=endpoint_id, reason="The endpoint answered 410 Gone"
            )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
    return outcome


def renew_leases(factory: sessionmaker[Session], held: list[tuple[str, int]]) -> int:
    """Extend the claims of tries still being made; a try recorded meanwhile is left alone."""
    if not held:
        return 0
    with factory() as session:
        renewed = session.execute(
            update(Delivery)
            .where(
                Delivery.status == "pending",
                Delivery.lease_until.is_not(None),
                or_(*(and_(Delivery.id == d, Delivery.attempt_count == t - 1) for d, t in held)),
            )
            .values(lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
    return renewed


class _LeaseKeeper:
    """One thread per process renewing the claims of the tries this process is making.

    A single batched UPDATE every LEASE_RENEW_EVERY seconds, whatever the concurrency. If
    it fails (database away), leases lapse and the sweep may repeat a try: at-least-once,
    and the record of the try stays single (its conditional update and unique key).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also run in a forked child, where the renewing thread does not exist.
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], sessionmaker[Session]] = {}
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(
        self, factory: sessionmaker[Session], delivery_id: str, try_number: int
    ) -> Iterator[None]:
        """Keep the claim of this try renewed for the duration of the block."""
        key = (delivery_id, try_number)
        with self._lock:
            self._held[key] = factory
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="delivery-lease-keeper", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(LEASE_RENEW_EVERY)
            with self._lock:
                held = list(self._held.items())
            by_factory: dict[sessionmaker[Session], list[tuple[str, int]]] = {}
            for key, factory in held:
                by_factory.setdefault(factory, []).append(key)
            for factory, keys in by_factory.items():
                try:
                    renew_leases(factory, keys)
                except Exception as exc:  # noqa: BLE001 - the sweep covers a lapsed lease
                    log.warning("renewing %d delivery leases failed: %s", len(keys), exc)


_LEASES = _LeaseKeeper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LEASES._reset)


def run_manual_attempt(
    factory: sessionmaker[Session],
    client: DeliveryClient,
    *,
    delivery_id: str,
    attempt_id: str,
    trigger: str = "manual",
) -> Outcome:
    """Make one manual attempt; its pre-assigned id makes a re-run record nothing twice.

    Run twice, the second run finds the attempt recorded, or its request held by the
    first (and posts nothing), or the request's lease lapsed (the first run died) and
    makes the attempt itself.
    """
    with factory() as session:
        if session.get(Attempt, attempt_id) is not None:
            _forget_request(session, attempt_id)
            return Outcome(delivery_id, skipped="recorded")
        row = _load(session, delivery_id)
        if row is None:
            return Outcome(delivery_id, skipped="gone")
        delivery, endpoint, message = row
        if endpoint.deleted_at is not None:
            _forget_request(session, attempt_id)
            return Outcome(delivery_id, skipped="cancelled")
        body, headers = _build_request(endpoint, message, delivery)
        url = endpoint.url
        timeout = float(endpoint.timeout_seconds)
        endpoint_id, failing_since = endpoint.id, endpoint.failing_since
        endpoint_scope, endpoint_owner = endpoint.scope, endpoint.user_id
        if not _hold_request(session, attempt_id, timeout=endpoint.timeout_seconds):
            return Outcome(delivery_id, skipped="leased")

    result = client.post(url, body, headers, timeout=timeout)

    with factory() as session:
        now = utcnow()
        delivery = session.scalars(
            select(Delivery).where(Delivery.id == delivery_id).with_for_update()
        ).first()
        if delivery is None:
            return Outcome(delivery_id, skipped="gone")
        attempt = _attempt_row(
            attempt_id=attempt_id,
            delivery=delivery,
            url=url,
            result=result,
            trigger=trigger,
            try_number=None,
            now=now,
        )
        session.add(attempt)
        session.execute(delete(ManualRequest).where(ManualRequest.id == attempt_id))
        delivery.extra_attempt_count += 1
        delivery.last_attempt_at = now
        delivery.updated_at = now
        if result.ok or delivery.status != "delivered":
            # A delivered delivery keeps its own account; the attempt row records the rest.
            delivery.http_status_code = result.status_code
            delivery.error_message = _error_text(result)
        if result.ok:
            delivery.status = "delivered"
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            delivery.lease_until = None
        else:
            delivery.last_failure_at = now
            nothing_scheduled = (
                delivery.status == "pending"
                and delivery.next_attempt_at is None
                and delivery.attempt_count == 0
            )
            if delivery.status != "delivered" and (result.status_code == 410 or nothing_scheduled):
                # SPEC 5: a 410 fails the delivery whatever made the attempt; a delivery made
                # for this resend alone (request_resend) has no other attempt coming.
                delivery.status = "failed"
                delivery.failed_at = now
                delivery.next_attempt_at = None
        _mark_endpoint_health(session, endpoint_id, failing_since, result.ok, now)
        if result.status_code == 410:
            from .endpoints import disable_endpoint

            disable_endpoint(
                session, endpoint_id=endpoint_id, reason="The endpoint answered 410 Gone"
            )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return Outcome(delivery_id, skipped="recorded")
        return Outcome(
            delivery_id,
            attempt=attempt,
            final=True,
            delivery_status=delivery.status,
            organization_id=delivery.organization_id,
            event_type=delivery.event_type,
            attempt_number=delivery.attempt_count + delivery.extra_attempt_count,
            endpoint_scope=endpoint_scope,
            endpoint_owner=endpoint_owner,
        )


# A manual attempt's hold on its request outlasts the endpoint's timeout by this much: the
# HTTP client's total deadline ends the post first, so only a dead worker lets it lapse.
MANUAL_LEASE_MARGIN = timedelta(seconds=60)


def _hold_request(session: Session, attempt_id: str, *, timeout: int) -> bool:
    """Take the request's lease for this run (committed); False when another run holds it.

    A task with no request row (queued by a version before requests were rows) runs.
    """
    now = utcnow()
    held = session.execute(
        update(ManualRequest)
        .where(
            ManualRequest.id == attempt_id,
            or_(ManualRequest.lease_until.is_(None), ManualRequest.lease_until <= now),
        )
        .values(lease_until=now + timedelta(seconds=timeout) + MANUAL_LEASE_MARGIN)
    ).rowcount
    session.commit()
    return bool(held) or session.get(ManualRequest, attempt_id) is None


def _forget_request(session: Session, attempt_id: str) -> None:
    """Drop a request that has nothing left to do (made already, or its endpoint is gone)."""
    session.execute(delete(ManualRequest).where(ManualRequest.id == attempt_id))
    session.commit()


def request_resend(
    session: Session,
    *,
    principal: Principal,
    organization_id: str,
    message_id: str,
    endpoint_id: str,
) -> Delivery:
    """Queue a manual attempt of a message to an endpoint, creating the delivery if needed."""
    message = get_message(
        session, principal=principal, organization_id=organization_id, message_id=message_id
    )
    endpoint = get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not endpoint.is_active:
        raise Conflict(f"Webhook endpoint {endpoint_id} is disabled")
    if message.custom and endpoint.payload_format == "e2b":
        raise Invalid("Custom events are not sent to the team hook")
    delivery = session.scalars(
        select(Delivery).where(
            Delivery.message_id == message.id, Delivery.endpoint_id == endpoint.id
        )
    ).first()
    if delivery is None:
        from .. import events

        names = events.resolve_names(message.event_type, message.payload)
        now = utcnow()
        delivery = Delivery(
            id=new_id("whd"),
            message_id=message.id,
            endpoint_id=endpoint.id,
            organization_id=message.organization_id,
            event_type=events.delivery_name(list(names.all), names, endpoint.payload_format),
            # Nothing is scheduled (no next_attempt_at: the sweep leaves it alone): it is
            # pending until the manual attempt decides (run_manual_attempt).
            status="pending",
            attempt_count=0,
            extra_attempt_count=0,
            max_attempts=endpoint.max_retries + 1,
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        session.flush()
    request_manual_attempt(session, delivery_id=delivery.id)
    return delivery


def recover_failed(
    session: Session,
    *,
    principal: Principal,
    endpoint_id: str,
    since: datetime,
    until: datetime | None = None,
) -> int:
    """Queue one manual attempt for every failed delivery of the endpoint in the window."""
    from .endpoints import get_endpoint_for_change

    endpoint = get_endpoint_for_change(session, principal=principal, endpoint_id=endpoint_id)
    if not endpoint.is_active:
        raise Conflict(f"Webhook endpoint {endpoint_id} is disabled")
    until = until or utcnow()
    if until <= since:
        raise Invalid("until must be later than since")
    ids = list(
        session.scalars(
            select(Delivery.id).where(
                Delivery.endpoint_id == endpoint.id,
                Delivery.status == "failed",
                Delivery.created_at >= since,
                Delivery.created_at < until,
            )
        )
    )
    for delivery_id in ids:
        request_manual_attempt(session, delivery_id=delivery_id)
    return len(ids)


def request_manual_attempt(session: Session, *, delivery_id: str, trigger: str = "manual") -> str:
    """Ask for one manual attempt of a delivery: a row first, then its task after the commit.

    The row outlives the broker: beat's sweep hands a request not made in time to the
    broker again (``sweep_due``). Returns the id the attempt will carry.
    """
    now = utcnow()
    request = ManualRequest(
        id=new_id("atm"), delivery_id=delivery_id, trigger=trigger, enqueued_at=now, created_at=now
    )
    session.add(request)
    session.flush()
    enqueue_after_commit(session, MANUAL_TASK, delivery_id, request.id, trigger)
    return request.id


# ---- beat's sweep --------------------------------------------------------------------------

# A try overdue by this much, and not held by a live worker, is presumed lost by the broker.
OVERDUE_AFTER = timedelta(seconds=15)
# The sweep hands long waits to the broker this far ahead of their due time: a sweep
# interval (5 s) plus 10 s for the sweep's own task to be taken and run. Not more, since
# every try handed over sits in a worker's memory until it is due.
LOOKAHEAD = timedelta(seconds=15)
# After re-enqueueing a try, give the broker this long before doing it again.
REENQUEUE_EVERY = timedelta(seconds=60)
SWEEP_BATCH = 2000
# Batches one sweep may take: enough for 20,000 tries every 5 s (more than workers post),
# since with long waits left to the sweep a storm's retries all come through it.
SWEEP_ROUNDS = 10


# With this many tasks waiting in the broker, an overdue try is most likely queued behind
# them rather than lost: re-enqueueing it would only add duplicates to the backlog (and
# slow its draining), so the sweep waits until the queue is short again.
BACKLOG_LIMIT = 500


def sweep_due(session: Session, *, backlog: int | None = 0) -> dict[str, int]:
    """Enqueue tries that are due but not in the broker, and fan-outs that never ran.

    ``backlog`` is the number of tasks waiting in the broker, None when the broker did
    not say: then overdue tries are left alone as behind a long queue (re-enqueueing all
    of them into a busy broker would only add duplicates), and tries never handed over
    are handed over as always. Two sweeps at once (two beats by mistake) only enqueue a
    task twice; the claim in ``run_scheduled_try`` makes the second one a no-op.
    """
    now = utcnow()
    counts = {"deliveries": 0, "fanouts": 0, "manual": 0}
    congested = backlog is None or backlog >= BACKLOG_LIMIT
    lease_free = or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now)
    never_enqueued = and_(
        Delivery.enqueued_at.is_(None), Delivery.next_attempt_at <= now + LOOKAHEAD
    )
    lost = and_(
        Delivery.next_attempt_at <= now - OVERDUE_AFTER,
        or_(
            Delivery.enqueued_at.is_(None),
            Delivery.enqueued_at <= Delivery.next_attempt_at,
            Delivery.enqueued_at <= now - REENQUEUE_EVERY,
        ),
    )
    due = never_enqueued if congested else or_(never_enqueued, lost)
    query = (
        select(Delivery.id, Delivery.attempt_count, Delivery.next_attempt_at)
        .where(Delivery.status == "pending", lease_free, due)
        .order_by(Delivery.next_attempt_at)
        .limit(SWEEP_BATCH)
    )
    rows: list = []
    for _ in range(SWEEP_ROUNDS):
        # A batch taken is marked handed over, so the next one finds the tries after it.
        batch = _take_for_enqueue(session, query, Delivery, now)
        rows += batch
        if len(batch) < SWEEP_BATCH:
            break
    for delivery_id, attempt_count, due in rows:
        eta = due if due and due > now else None
        enqueue_after_commit(session, DELIVER_TASK, delivery_id, attempt_count + 1, eta=eta)
    counts["deliveries"] = len(rows)

    if congested:
        return counts
    counts["manual"] = _sweep_manual_requests(session, now)
    owed = list(
        session.scalars(
            select(Message.id)
            .where(Message.fanned_out_at.is_(None), Message.created_at <= now - OVERDUE_AFTER)
            .order_by(Message.created_at)
            .limit(SWEEP_BATCH)
        )
    )
    for start in range(0, len(owed), 100):
        enqueue_after_commit(session, "webhooks.fanout", owed[start : start + 100])
    counts["fanouts"] = len(owed)
    return counts


def _take_for_enqueue(session: Session, query: Select, model: type, now: datetime) -> list:
    """The rows ``query`` selects (ids first), marked as handed to the broker ``now``.

    On PostgreSQL rows another sweep holds are skipped, so two beats by mistake split
    the work instead of both taking it.
    """
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if rows:
        session.execute(
            update(model).where(model.id.in_([r.id for r in rows])).values(enqueued_at=now)
        )
    return rows


def _sweep_manual_requests(session: Session, now: datetime) -> int:
    """Hand manual requests not made in time, and held by no live worker, to the broker again."""
    query = (
        select(ManualRequest.id, ManualRequest.delivery_id, ManualRequest.trigger)
        .where(
            ManualRequest.enqueued_at <= now - REENQUEUE_EVERY,
            or_(ManualRequest.lease_until.is_(None), ManualRequest.lease_until <= now),
        )
        .order_by(ManualRequest.enqueued_at)
        .limit(SWEEP_BATCH)
    )
    rows = _take_for_enqueue(session, query, ManualRequest, now)
    for request_id, delivery_id, trigger in rows:
        enqueue_after_commit(session, MANUAL_TASK, delivery_id, request_id, trigger)
    return len(rows)


def auto_disable_failing(session: Session) -> list[str]:
    """Disable endpoints failing continuously for WEBHOOKS_DISABLE_AFTER_HOURS (SPEC 5)."""
    from .endpoints import disable_endpoint

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


def list_endpoint_deliveries(
    session: Session, *, principal: Principal, endpoint_id: str, limit: int = 50
) -> list[Delivery]:
    """An endpoint's deliveries, newest first."""
    get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    if not 1 <= limit <= 200:
        raise Invalid("limit must be between 1 and 200")
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )
