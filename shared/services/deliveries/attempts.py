"""Making an attempt: claim or hold it, post it, decide what it leads to, write that.

The same path for every attempt: a scheduled try (``run_scheduled_try``) and a manual or
test request (``run_manual_attempt``) differ only in how they are held while the post runs
(a lease on the delivery, a lease on the request) and in the ``try_number`` they give the
state machine (``shared.transitions``), which decides; ``records`` writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session, sessionmaker

from ...config import get_settings
from ...db import postgres_engine
from ...http import AttemptResult, DeliveryClient
from ...models import Attempt, ManualRequest, Trigger, new_id, utcnow
from ...queue import Task, enqueue
from ...transitions import Decision, DeliveryState, Skip, decide_attempt
from .claimed import Claimed
from .claims import LEASES, claim_scheduled_try, claimed_try, load
from .ordering import release_next
from .pacing import defer_claimed, honour_retry_after, manual_turn, turn
from .records import Written, attempt_values, writer_for

log = logging.getLogger(__name__)

# A manual attempt's hold on its request outlasts the endpoint's timeout by this much: the
# HTTP client's total deadline ends the post first, so only a dead worker lets it lapse.
MANUAL_LEASE_MARGIN = timedelta(seconds=60)
# How often a write may find its delivery moved on and be decided again. Each time means
# a manual attempt or a cancellation landed during this one's write: more is not expected.
MAX_DECISIONS = 5


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A recorded attempt's fields, as written (no ORM object: none is needed after)."""

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


@dataclass
class Outcome:
    """What a task did, for logs, the live socket and the caller's retry decision."""

    delivery_id: str
    skipped: Skip | None = None
    attempt: AttemptRecord | None = None
    final: bool = False
    delivery_status: str | None = None
    next_try: int | None = None
    countdown: float | None = None
    organization_id: str | None = None
    event_type: str | None = None
    attempt_number: int | None = None
    # Who may see the endpoint, for the live socket's rooms.
    endpoint_scope: str | None = None
    endpoint_owner: str | None = None


def run_scheduled_try(
    factory: sessionmaker[Session], client: DeliveryClient, *, delivery_id: str, try_number: int
) -> Outcome:
    """Make scheduled try ``try_number`` of a delivery, at most once.

    Run twice (a redelivered task, a sweep's duplicate), the second run finds the try
    claimed or recorded and does nothing.
    """
    claimed = claim_scheduled_try(factory, postgres_engine(factory), delivery_id, try_number)
    if isinstance(claimed, Skip):
        return Outcome(delivery_id, skipped=claimed)
    wait = turn(claimed, utcnow(), slot_at=claimed.slot_at)
    if wait is not None:  # the endpoint's rate limit: not an attempt, back at its turn
        defer_claimed(factory, claimed, wait)
        return Outcome(delivery_id, skipped=Skip.PACED)
    # Renewed while the post runs, so the write below finds the claim still this run's.
    with LEASES.holding(factory, delivery_id, try_number):
        result = _post(client, claimed)
    return record_attempt(factory, claimed, result, attempt_id=new_id("atm"))


def run_manual_attempt(
    factory: sessionmaker[Session],
    client: DeliveryClient,
    *,
    delivery_id: str,
    attempt_id: str,
    trigger: str = Trigger.MANUAL,
) -> Outcome:
    """Make one manual (or test) attempt; its pre-assigned id makes a re-run record nothing twice.

    Run twice, the second run finds the attempt recorded, or its request held by the
    first (and posts nothing), or the request's lease lapsed (the first run died) and
    makes the attempt itself.
    """
    with factory() as session:
        if session.get(Attempt, attempt_id) is not None:
            _forget_request(session, attempt_id)
            return Outcome(delivery_id, skipped=Skip.RECORDED)
        row = load(session, delivery_id)
        if row is None:
            return Outcome(delivery_id, skipped=Skip.GONE)
        delivery, endpoint, message = row
        if endpoint.deleted_at is not None:
            _forget_request(session, attempt_id)
            return Outcome(delivery_id, skipped=Skip.CANCELLED)
        claimed = claimed_try(
            delivery, endpoint, message, try_number=None, trigger=Trigger(trigger)
        )
        if not _hold_request(session, attempt_id, timeout=endpoint.timeout_seconds):
            return Outcome(delivery_id, skipped=Skip.LEASED)
        request = session.get(ManualRequest, attempt_id)
        if manual_turn(session, claimed, request, endpoint.paused_until) is not None:
            return Outcome(delivery_id, skipped=Skip.PACED)
    return record_attempt(factory, claimed, _post(client, claimed), attempt_id=attempt_id)


def _post(client: DeliveryClient, claimed: Claimed) -> AttemptResult:
    return client.post(
        claimed.url, claimed.request.body, claimed.request.headers, timeout=claimed.timeout
    )


def record_attempt(
    factory: sessionmaker[Session], claimed: Claimed, result: AttemptResult, *, attempt_id: str
) -> Outcome:
    """Decide what a made attempt leads to and write it; hand the next try to the broker."""
    write = writer_for(factory)
    schedule = get_settings().retry_schedule
    state: DeliveryState = claimed.state
    # The receiver's Retry-After holds the endpoint's other tries (docs/api.md §11.6) from
    # before this attempt shows: no try of the endpoint goes out between the two writes.
    honour_retry_after(factory, claimed, result, utcnow())
    for _ in range(MAX_DECISIONS):
        decision = decide_attempt(
            state,
            try_number=claimed.try_number,
            trigger=claimed.trigger,
            result=result,
            failing_since=claimed.failing_since,
            now=utcnow(),
            schedule=schedule,
        )
        if decision is None:
            return Outcome(claimed.delivery_id, skipped=Skip.RECORDED)
        written = write(claimed, decision, attempt_id)
        if written in (Written.WRITTEN, Written.WRITTEN_AHEAD):
            break
        if written == Written.GONE:
            return Outcome(claimed.delivery_id, skipped=Skip.GONE)
        if written == Written.DUPLICATE:
            return Outcome(claimed.delivery_id, skipped=Skip.RECORDED)
        state = written
    else:
        log.warning("delivery %s kept moving on; attempt not recorded", claimed.delivery_id)
        return Outcome(claimed.delivery_id, skipped=Skip.RECORDED)
    if decision.handed_to_broker:
        enqueue(
            Task.DELIVER,
            claimed.delivery_id,
            decision.next_try,
            countdown=decision.wait,
            organization=claimed.organization_id,
        )
    _after_written(factory, claimed, decision, ahead=written == Written.WRITTEN_AHEAD)
    return _outcome(claimed, decision, attempt_id)


def _after_written(
    factory: sessionmaker[Session],
    claimed: Claimed,
    decision: Decision,
    *,
    ahead: bool,
) -> None:
    """What a written attempt means for the endpoint's other deliveries (docs/api.md §11).

    ``ahead``: a later delivery of the resource may wait for this one (``Written``).
    """
    now = decision.attempt.created_at
    if ahead:
        # The next delivery of the resource may go now (§11.3).
        release_next(
            factory,
            ended_id=claimed.delivery_id,
            endpoint_id=claimed.endpoint_id,
            resource_id=claimed.resource_id,
            now=now,
        )


def _outcome(claimed: Claimed, decision: Decision, attempt_id: str) -> Outcome:
    return Outcome(
        claimed.delivery_id,
        attempt=AttemptRecord(**attempt_values(claimed, decision, attempt_id)),
        final=decision.final,
        delivery_status=decision.status.value,
        next_try=decision.next_try,
        countdown=decision.wait,
        organization_id=claimed.organization_id,
        event_type=claimed.event_type,
        attempt_number=decision.attempt_number,
        endpoint_scope=claimed.endpoint_scope,
        endpoint_owner=claimed.endpoint_owner,
    )


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
