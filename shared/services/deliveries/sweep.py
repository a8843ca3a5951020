"""Beat's sweep: hand the broker what is due but not in it.

The delivery rows, not the broker, say what is due. A task can be lost (a worker killed
while holding it, a broker restarted empty), and waits longer than the broker is given to
hold are left in the database on purpose (``shared.retry_policy.MAX_BROKER_COUNTDOWN``):
the sweep finds both and enqueues them, as well as manual requests and fan-outs whose
tasks never ran, and deliveries of ordered endpoints left waiting after the delivery
before them ended (``release_owed``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session

from ... import tracing
from ...models import Delivery, DeliveryStatus, ManualRequest, Message, utcnow
from ...queue import Task, enqueue_after_commit
from ..fanout import OWED_PER_TASK
from .ordering import release_owed

# A try overdue by this much, and not held by a live worker, is presumed lost by the broker.
OVERDUE_AFTER = timedelta(seconds=15)
# The sweep hands long waits to the broker this far ahead of their due time: a sweep
# interval (5 s) plus 10 s for the sweep's own task to be taken and run. Not more, since
# every try handed over sits in a worker's memory until it is due.
LOOKAHEAD = timedelta(seconds=15)
# After re-enqueueing a try, give the broker this long before doing it again.
REENQUEUE_EVERY = timedelta(seconds=60)
SWEEP_BATCH = 2000
# Batches one sweep may take: with long waits left to the sweep, every retry of a storm
# comes through it, so one sweep must keep up with what workers can post in its interval.
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
    task twice; the claim makes the second one a no-op.
    """
    now = utcnow()
    counts = {"deliveries": 0, "fanouts": 0, "manual": 0, "released": 0}
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
        select(
            Delivery.id, Delivery.attempt_count, Delivery.next_attempt_at, Delivery.organization_id
        )
        # Says outright what ``due`` implies, the predicate of ix_deliveries_pending_due.
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.next_attempt_at.is_not(None),
            lease_free,
            due,
        )
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
    parents = _trace_parents(session, [row.id for row in rows])
    for delivery_id, attempt_count, due_at, organization_id in rows:
        eta = due_at if due_at and due_at > now else None
        with tracing.continuing(parents.get(delivery_id)):
            # In the organization's lane, like the try the sweep stands in for.
            enqueue_after_commit(
                session,
                Task.DELIVER,
                delivery_id,
                attempt_count + 1,
                eta=eta,
                organization=organization_id,
            )
    counts["deliveries"] = len(rows)
    # Deliveries of ordered endpoints whose predecessor ended without letting them go.
    counts["released"] = release_owed(session, now)

    if congested:
        return counts
    counts["manual"] = _sweep_manual_requests(session, now)
    owed = session.execute(
        select(Message.id, Message.organization_id)
        .where(Message.fanned_out_at.is_(None), Message.created_at <= now - OVERDUE_AFTER)
        .order_by(Message.created_at)
        .limit(SWEEP_BATCH)
    ).all()
    # Fan-out tasks of one organization each, in its lane (shared.lanes).
    by_org: dict[str, list[str]] = {}
    for message_id, organization_id in owed:
        by_org.setdefault(organization_id, []).append(message_id)
    for organization_id, message_ids in by_org.items():
        for start in range(0, len(message_ids), OWED_PER_TASK):
            enqueue_after_commit(
                session,
                Task.FANOUT,
                message_ids[start : start + OWED_PER_TASK],
                organization=organization_id,
            )
    counts["fanouts"] = len(owed)
    return counts


def _trace_parents(session: Session, delivery_ids: list[str]) -> dict[str, str]:
    """The trace each delivery's message began, by delivery id (empty when tracing is off)."""
    if not tracing.enabled() or not delivery_ids:
        return {}
    rows = session.execute(
        select(Delivery.id, Message.trace_parent)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.id.in_(delivery_ids), Message.trace_parent.is_not(None))
    )
    return {delivery_id: parent for delivery_id, parent in rows}


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
        enqueue_after_commit(session, Task.DELIVER_MANUAL, delivery_id, request_id, trigger)
    return len(rows)
