"""Pacing an endpoint's attempts (docs/api.md §11.6): its rate limit and its receiver's
Retry-After.

A try that may not go yet is handed back, not waited for: its claim is released, its
delivery shows the time it goes in ``next_attempt_at`` and its task is sent again with a
countdown (or left to beat's sweep when that is far off), so no worker thread waits and
no attempt is recorded or counted. The time comes from the rate limiter
(``shared.rate_limit``), which reserves it: the try keeps it in ``slot_at`` and, when it
comes back, goes without asking again. A receiver answering 429 or 503 with
Retry-After pauses the whole endpoint (``endpoints.paused_until``): the claim holds
every try of it until then (``shared.transitions.decide_claim``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from ... import rate_limit
from ...models import Delivery, DeliveryStatus, Endpoint, ManualRequest, utcnow
from ...queue import Task, enqueue
from ...retry_policy import MAX_RETRY_AFTER_SECONDS, RETRY_AFTER_STATUSES, handed_to_broker

if TYPE_CHECKING:
    from ...http import AttemptResult
    from .claimed import Claimed

# A reserved turn is kept this long after its time: a task a little late still goes on
# it. A try later than that (its worker stalled) asks for a new turn, which is now if the
# endpoint has room: going on the old one would bunch with the turns after it, and a
# receiver would see more than the limit in a second.
TURN_KEPT = timedelta(milliseconds=50)
# A turn at most this far ahead is taken at once: less than any clock could resolve.
NOW = timedelta(milliseconds=2)


@dataclass(frozen=True, slots=True)
class Wait:
    """A try that may not go yet: when to come back, and whether that is its own turn."""

    due: datetime
    # The limiter gave the try this time (it then goes without asking again); False when
    # the limiter could not be asked, and the try asks again at ``due``.
    reserved: bool = True


def turn(claimed: Claimed, now: datetime, *, slot_at: datetime | None) -> Wait | None:
    """When a claimed attempt may be made: None for now, else when to come back.

    ``slot_at`` is the turn the try was given before, if any.
    """
    if claimed.rate_limit is None:
        return None
    if slot_at is not None and now - TURN_KEPT <= slot_at:
        return None if slot_at <= now + NOW else Wait(slot_at)
    try:
        wait = rate_limit.limiter().reserve(claimed.endpoint_id, claimed.rate_limit)
    except rate_limit.NoTurn:
        return Wait(now + timedelta(seconds=rate_limit.RETRY_REDIS_AFTER), reserved=False)
    return None if wait <= NOW.total_seconds() else Wait(now + timedelta(seconds=wait))


def defer_try(
    session: Session,
    delivery_id: str,
    try_number: int,
    *,
    due: datetime,
    slot_at: datetime | None = None,
) -> bool:
    """Give a claimed (or claimable) try back until ``due`` and send its task for then.

    Committed. False when the try moved on meanwhile (nothing is changed then).
    """
    now = utcnow()
    broker = handed_to_broker((due - now).total_seconds())
    values: dict[str, Any] = {
        "next_attempt_at": due,
        "lease_until": None,
        # Not in the broker when far off: the sweep hands it over shortly before it is due.
        "enqueued_at": now if broker else None,
        "updated_at": now,
    }
    if slot_at is not None:
        values["slot_at"] = slot_at
    moved = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.attempt_count == try_number - 1,
        )
        .values(**values)
    ).rowcount
    session.commit()
    if moved and broker:
        enqueue(Task.DELIVER, delivery_id, try_number, eta=due)
    return bool(moved)


def defer_claimed(factory: sessionmaker[Session], claimed: Claimed, wait: Wait) -> None:
    """Give a claimed scheduled try back until ``wait.due``, keeping its turn if it has one."""
    with factory() as session:
        defer_try(
            session,
            claimed.delivery_id,
            claimed.try_number or 1,
            due=wait.due,
            slot_at=wait.due if wait.reserved else None,
        )


def manual_turn(
    session: Session, claimed: Claimed, request: ManualRequest | None, paused_until: Any
) -> datetime | None:
    """When a held manual (or test) request may be made: None for now, else its time.

    When it is to wait, the request is given back until then (committed) and its task
    sent for that time; beat's sweep sends it again if that task is lost.
    """
    now = utcnow()
    if paused_until is not None and paused_until > now:
        wait: Wait | None = Wait(paused_until, reserved=False)
    else:
        wait = turn(claimed, now, slot_at=request.slot_at if request is not None else None)
    if wait is None or request is None:
        return None
    session.execute(
        update(ManualRequest)
        .where(ManualRequest.id == request.id)
        .values(
            lease_until=None,
            slot_at=wait.due if wait.reserved else None,
            enqueued_at=wait.due,
        )
    )
    session.commit()
    enqueue(
        Task.DELIVER_MANUAL, claimed.delivery_id, request.id, claimed.trigger.value, eta=wait.due
    )
    return wait.due


def honour_retry_after(
    factory: sessionmaker[Session], claimed: Claimed, result: AttemptResult, now: datetime
) -> None:
    """A 429 or 503 with Retry-After pauses every try of the endpoint for that long."""
    if result.status_code not in RETRY_AFTER_STATUSES or not result.retry_after:
        return
    until = now + timedelta(seconds=min(result.retry_after, MAX_RETRY_AFTER_SECONDS))
    with factory() as session:
        session.execute(
            update(Endpoint)
            .where(
                Endpoint.id == claimed.endpoint_id,
                or_(Endpoint.paused_until.is_(None), Endpoint.paused_until < until),
            )
            .values(paused_until=until)
        )
        session.commit()
