"""Ordering per resource (docs/api.md §11.3): which deliveries wait, and what lets them go.

A delivery with a ``sequence`` (to an ordered endpoint, of an event with a resource)
makes its first try only when no earlier delivery of its resource to its endpoint is
still pending. ``shared.transitions.decide_claim`` gives that verdict (``Skip.HELD``);
this module reads what it needs and acts on it:

- ``sequences.wait_in_line``: at fan-out, a new delivery whose predecessor (the delivery
  of its resource and endpoint numbered just before it) is still pending is made parked
  (no due time, no task), and the predecessor is marked ``successor_waits``, in one
  statement that locks it: a delivery ending at that moment either committed first (then
  it is not pending and the new one is made due) or its record waits for the fan-out and
  returns the mark. So every pending delivery that has a later one is marked.
- ``NOT_HELD``: the claim's condition, so the common case stays one statement. It still
  holds back what a fan-out could not park (a delivery made due because its predecessor
  was delivered out of turn by a manual resend while an earlier one is pending).
- ``park``: a held delivery is taken off the clock (``next_attempt_at`` null): the sweep
  leaves it alone and nothing polls it. It takes a share lock on the earlier pending
  deliveries first: a delivery ending at that moment (its record updates its row) either
  commits before (then it is no longer pending, and nothing is parked) or waits for the
  park to commit (then its ``release_next`` finds the parked one).
- ``release_with_record`` and ``release_next``: once a marked delivery ended, the first
  pending delivery of its resource, if parked, is put back on the clock and handed to
  the broker at once: on PostgreSQL in the statement recording the end, else (or when
  that statement could not see the parked one) right after it. An unmarked one has had
  nothing made behind it while pending, so nothing can be parked.
- ``release_owed``: beat's sweep does the release for an ended delivery still marked,
  which is only the case when a worker died between a delivery's end and its
  ``release_next`` (which clears the mark in the same statement).
- ``release_stranded``: retention's hourly look lets go any parked delivery with nothing
  pending before it, whatever left it so (a predecessor purged while pending).

A head whose worker died stays pending (its lease lapses and the sweep hands it out
again), so nothing overtakes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ...db import first_row, postgres_engine
from ...models import Delivery, DeliveryStatus
from ...models.base import UTCDateTime
from ...queue import Task, enqueue, enqueue_after_commit
from ..sequences import PENDING_LITERAL

_D = Delivery.__table__
_EARLIER = _D.alias("earlier")
_HEAD = _D.alias("head")

# Deliveries of the same resource to the same endpoint, still pending, before ``_D``'s row.
_EARLIER_PENDING = exists(
    select(_EARLIER.c.id).where(
        _EARLIER.c.endpoint_id == _D.c.endpoint_id,
        _EARLIER.c.resource_id == _D.c.resource_id,
        _EARLIER.c.status == PENDING_LITERAL,
        _EARLIER.c.sequence.is_not(None),
        _EARLIER.c.sequence < _D.c.sequence,
    )
)

# A try that is not held: unordered, a later try, or first in line.
NOT_HELD = or_(_D.c.sequence.is_(None), _D.c.attempt_count > 0, ~_EARLIER_PENDING)

_NOW = bindparam("now", type_=UTCDateTime)

# The first pending delivery of a resource after the ended one, when parked: back on the
# clock, due now. The ended one is left out by id, not by status, so that the record of
# its end can release in the same statement (``release_with_record``), whose snapshot
# still shows it pending.
RELEASE = (
    update(_D)
    .where(
        _D.c.id
        == select(_HEAD.c.id)
        .where(
            _HEAD.c.endpoint_id == bindparam("k_endpoint_id"),
            _HEAD.c.resource_id == bindparam("k_resource_id"),
            _HEAD.c.status == PENDING_LITERAL,
            _HEAD.c.sequence.is_not(None),
            _HEAD.c.id != bindparam("ended_id"),
        )
        .order_by(_HEAD.c.sequence)
        .limit(1)
        .scalar_subquery(),
        _D.c.next_attempt_at.is_(None),
        _D.c.attempt_count == 0,
    )
    .values(next_attempt_at=_NOW, enqueued_at=_NOW, updated_at=_NOW)
    .returning(_D.c.id, _D.c.organization_id)
)


def release_with_record(marked: Any) -> Any:
    """``RELEASE`` as a part of the statement recording a delivery's end (PostgreSQL).

    ``marked``: the ended delivery's row as locked by that statement (its newest version,
    with ``successor_waits``), present only when the record is written. The release runs
    only for a marked delivery; it sees the statement's snapshot, so a successor a fan-out
    parked after that snapshot is not found: the record then keeps the mark and its
    worker runs ``release_next`` (``records.record_statement``).
    """
    return RELEASE.where(exists(select(marked.c.id).where(marked.c.successor_waits))).cte(
        "released"
    )


# The release and, in the same statement, the ended delivery's mark cleared: a mark left
# on an ended delivery means its release may still be owed (``release_owed``).
_CLEAR = (
    update(_D)
    .where(_D.c.id == bindparam("ended_id"), _D.c.successor_waits)
    .values(successor_waits=False)
)
RELEASE_AND_CLEAR = RELEASE.add_cte(_CLEAR.cte("cleared"))

# Ended deliveries still marked this long after their end: their worker died between the
# end and the release. Not sooner: a live worker is about to release it, and the sweep's
# release and the worker's, each locking the two rows in turn, could deadlock.
OWED_AFTER = timedelta(seconds=15)
OWED_BATCH = 500
_OWED = (
    select(_D.c.id, _D.c.endpoint_id, _D.c.resource_id)
    .where(
        _D.c.successor_waits,
        _D.c.status != PENDING_LITERAL,
        _D.c.updated_at < bindparam("ended_before", type_=UTCDateTime),
    )
    .limit(OWED_BATCH)
)

# Parked deliveries that nothing pending precedes any more (a batch of the hourly look).
STRANDED_BATCH = 500
_STRANDED = (
    select(_D.c.id, _D.c.organization_id)
    .where(
        _D.c.status == PENDING_LITERAL,
        _D.c.sequence.is_not(None),
        _D.c.next_attempt_at.is_(None),
        _D.c.attempt_count == 0,
        ~_EARLIER_PENDING,
    )
    .limit(STRANDED_BATCH)
)


def ends_in_line(claimed: Any, decision: Any) -> bool:
    """Whether a decision ends a delivery that later ones of its resource may wait for."""
    return claimed.resource_id is not None and decision.completed is not None


def is_held(session: Session, delivery: Any) -> bool:
    """Whether an earlier delivery of the delivery's resource is still pending."""
    if delivery.sequence is None or delivery.attempt_count > 0:
        return False
    return bool(
        session.scalar(select(_EARLIER_PENDING).select_from(_D).where(_D.c.id == delivery.id))
    )


def park(session: Session, delivery: Any) -> bool:
    """Take a held delivery off the clock until ``release_next`` lets it go (committed).

    False when it is not held any more (what held it ended meanwhile) or it moved on:
    the caller then decides again.
    """
    earlier = select(_EARLIER.c.id).where(
        _EARLIER.c.endpoint_id == delivery.endpoint_id,
        _EARLIER.c.resource_id == delivery.resource_id,
        _EARLIER.c.status == DeliveryStatus.PENDING,
        _EARLIER.c.sequence.is_not(None),
        _EARLIER.c.sequence < delivery.sequence,
    )
    if session.get_bind().dialect.name == "postgresql":
        earlier = earlier.with_for_update(read=True)
    if not session.execute(earlier.limit(1)).first():
        session.rollback()
        return False
    parked = session.execute(
        update(_D)
        .where(
            _D.c.id == delivery.id,
            _D.c.status == DeliveryStatus.PENDING,
            _D.c.attempt_count == 0,
            or_(
                _D.c.next_attempt_at.is_(None),
                _D.c.next_attempt_at == delivery.next_attempt_at,
            ),
        )
        .values(next_attempt_at=None, enqueued_at=None, lease_until=None)
    ).rowcount
    session.commit()
    return bool(parked)


def release_next(
    factory: sessionmaker[Session],
    *,
    ended_id: str,
    endpoint_id: str,
    resource_id: str,
    now: datetime,
) -> str | None:
    """Once a marked delivery of a resource ended, let the next one of that resource go now.

    Clears the ended delivery's mark with it. Returns the delivery handed to the broker,
    if one was waiting. Run twice (or by the sweep too), the second run finds nothing
    parked at the head.
    """
    params = {
        "ended_id": ended_id,
        "k_endpoint_id": endpoint_id,
        "k_resource_id": resource_id,
        "now": now,
    }
    engine = postgres_engine(factory)
    if engine is not None:
        row = first_row(engine, RELEASE_AND_CLEAR, params, flush=False)
    else:  # SQLite has no data-modifying WITH: two statements, one transaction
        with factory() as session:
            row = session.execute(RELEASE, params).first()
            session.execute(_CLEAR, params)
            session.commit()
    if row is None:
        return None
    enqueue(Task.DELIVER, row[0], 1, organization=row[1])
    return row[0]


def release_owed(session: Session, now: datetime) -> int:
    """Do the releases of ended deliveries whose worker died before it (beat's sweep).

    Cheap when there is nothing to do: only ended deliveries still marked are read, a
    partial index of them. The tasks are sent after the caller's commit; returns how many.
    """
    query = _OWED
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    owed = session.execute(query, {"ended_before": now - OWED_AFTER}).all()
    released = 0
    for ended_id, endpoint_id, resource_id in owed:
        params = {
            "ended_id": ended_id,
            "k_endpoint_id": endpoint_id,
            "k_resource_id": resource_id,
            "now": now,
        }
        row = session.execute(RELEASE, params).first()
        if row is not None:
            enqueue_after_commit(session, Task.DELIVER, row[0], 1, organization=row[1])
            released += 1
    if owed:
        session.execute(
            update(_D).where(_D.c.id.in_([r[0] for r in owed])).values(successor_waits=False)
        )
    return released


def release_stranded(session: Session, now: datetime) -> int:
    """Let parked deliveries with nothing pending before them go (retention's hourly look).

    What ``release_owed`` cannot see: a delivery parked behind one that was deleted while
    pending (its message purged), or parked by a version that did not mark. It reads
    every parked delivery, so it runs hourly, not with every sweep. The tasks are sent
    after the caller's commit.
    """
    query = _STRANDED
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    stranded = session.execute(query).all()
    if stranded:
        session.execute(
            update(_D)
            .where(and_(_D.c.id.in_([row[0] for row in stranded]), _D.c.next_attempt_at.is_(None)))
            .values(next_attempt_at=now, enqueued_at=now, updated_at=now)
        )
        for delivery_id, organization_id in stranded:
            enqueue_after_commit(
                session, Task.DELIVER, delivery_id, 1, organization=organization_id
            )
    return len(stranded)
