"""Claiming a scheduled try before its post, and keeping the claim while the post runs.

A claim is a lease on the delivery row: the try is made by whoever set ``lease_until``
while the delivery was pending at the try before it. A worker that dies (SIGKILL, OOM, a
lost machine) stops renewing, the lease lapses and beat's sweep hands the try out again.

On PostgreSQL the common case (a due, unleased try of a live endpoint) is one UPDATE ...
RETURNING in autocommit that also reads everything the post needs: one round trip, no
ORM unit of work. Anything else (and every other database) reads the delivery and lets
``shared.transitions.decide_claim`` say why the try is not made now.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ... import log_context
from ...db import first_row
from ...models import Delivery, DeliveryStatus, Endpoint, Message, Trigger, utcnow
from ...models.base import UTCDateTime
from ...queue import Task, enqueue
from ...retry_policy import handed_to_broker
from ...transitions import EARLY_TOLERANCE, DeliveryState, Skip, decide_claim
from ..endpoint_lifetime import ends_binding
from ..endpoints import cancel_pending_deliveries
from .claimed import Claimed
from .ordering import NOT_HELD, is_held, park
from .pacing import defer_try
from .requests import build_request

log = logging.getLogger(__name__)

# A claim holds a try this long, and the worker making the attempt renews it every
# LEASE_RENEW_EVERY seconds until the attempt is over. A try whose worker died is thus
# free for beat's sweep within LEASE_SECONDS whatever the endpoint's timeout (up to
# 300 s). Three renewals fit in one lease, so one slow renewal does not lose it.
LEASE_SECONDS = 20.0
LEASE_RENEW_EVERY = 5.0


def claimed_try(
    delivery: Any, endpoint: Any, message: Any, *, try_number: int | None, trigger: Trigger
) -> Claimed:
    """A ``Claimed`` from the rows (ORM objects or anything with their attributes)."""
    return Claimed(
        delivery_id=delivery.id,
        try_number=try_number,
        state=DeliveryState.of(delivery),
        request=build_request(endpoint, message, delivery),
        url=endpoint.url,
        timeout=float(endpoint.timeout_seconds),
        trigger=trigger,
        organization_id=delivery.organization_id,
        event_type=delivery.event_type,
        message_id=message.id,
        endpoint_id=endpoint.id,
        failing_since=endpoint.failing_since,
        endpoint_scope=endpoint.scope,
        endpoint_owner=endpoint.user_id,
        ends_binding=ends_binding(endpoint, message),
        resource_id=delivery.resource_id,
        sequence=delivery.sequence,
        rate_limit=endpoint.rate_limit,
        slot_at=delivery.slot_at,
    )


def scheduled_trigger(message: Any) -> Trigger:
    """A test message's tries are test attempts; every other scheduled try is scheduled."""
    return Trigger.TEST if message.test else Trigger.SCHEDULED


def load(session: Session, delivery_id: str) -> Any:
    """The delivery with its endpoint and message, or None."""
    return session.execute(
        select(Delivery, Endpoint, Message)
        .join(Endpoint, Endpoint.id == Delivery.endpoint_id)
        .join(Message, Message.id == Delivery.message_id)
        .where(Delivery.id == delivery_id)
    ).first()


# ---- PostgreSQL: the claim as one statement -------------------------------------------------

_D = Delivery.__table__
_E = Endpoint.__table__
_M = Message.__table__

# What the post and its record need, read by the claim itself, by row: (row, column).
CLAIM_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("delivery", _D.c.id),
    ("delivery", _D.c.event_type),
    ("delivery", _D.c.organization_id),
    ("delivery", _D.c.status),
    ("delivery", _D.c.attempt_count),
    ("delivery", _D.c.extra_attempt_count),
    ("delivery", _D.c.max_attempts),
    ("delivery", _D.c.next_attempt_at),
    ("delivery", _D.c.lease_until),
    ("delivery", _D.c.resource_id),
    ("delivery", _D.c.sequence),
    ("delivery", _D.c.slot_at),
    ("endpoint", _E.c.id),
    ("endpoint", _E.c.url),
    ("endpoint", _E.c.payload_format),
    ("endpoint", _E.c.timeout_seconds),
    ("endpoint", _E.c.secret_encrypted),
    ("endpoint", _E.c.previous_secret_encrypted),
    ("endpoint", _E.c.previous_secret_expires_at),
    ("endpoint", _E.c.headers_encrypted),
    ("endpoint", _E.c.failing_since),
    ("endpoint", _E.c.scope),
    ("endpoint", _E.c.user_id),
    ("endpoint", _E.c.resource_id),
    ("endpoint", _E.c.rate_limit),
    ("message", _M.c.id),
    ("message", _M.c.event_type),
    ("message", _M.c.payload),
    ("message", _M.c.timestamp),
    ("message", _M.c.custom),
    ("message", _M.c.test),
)

# The case decide_claim lets through, as one compare-and-set: pending at the try before
# this one, not leased, due (within the early tolerance), not held behind its resource,
# its endpoint live and not paused by its receiver's Retry-After.
CLAIM = (
    update(_D)
    .where(
        _D.c.id == bindparam("delivery_id"),
        _D.c.status == DeliveryStatus.PENDING,
        _D.c.attempt_count == bindparam("previous"),
        or_(_D.c.lease_until.is_(None), _D.c.lease_until <= bindparam("now", type_=UTCDateTime)),
        or_(
            _D.c.next_attempt_at.is_(None),
            _D.c.next_attempt_at <= bindparam("due_by", type_=UTCDateTime),
        ),
        _E.c.id == _D.c.endpoint_id,
        _E.c.is_active.is_(True),
        _E.c.deleted_at.is_(None),
        or_(_E.c.paused_until.is_(None), _E.c.paused_until <= bindparam("now", type_=UTCDateTime)),
        NOT_HELD,
        _M.c.id == _D.c.message_id,
    )
    .values(lease_until=bindparam("lease", type_=UTCDateTime))
    .returning(*(column for _, column in CLAIM_COLUMNS))
)


def claim_statement_params(delivery_id: str, try_number: int, now: datetime) -> dict[str, Any]:
    """The parameters of ``CLAIM`` for a try claimed at ``now``."""
    return {
        "delivery_id": delivery_id,
        "previous": try_number - 1,
        "now": now,
        "due_by": now + timedelta(seconds=EARLY_TOLERANCE),
        "lease": now + timedelta(seconds=LEASE_SECONDS),
    }


def claim_in_one_statement(engine: Engine, params: dict[str, Any]) -> dict[str, dict] | None:
    """Run the claim; the rows' columns by row, or None when the try was not claimed."""
    row = first_row(engine, CLAIM, params, flush=False)
    if row is None:
        return None
    parts: dict[str, dict[str, Any]] = {"delivery": {}, "endpoint": {}, "message": {}}
    for (group, column), value in zip(CLAIM_COLUMNS, row, strict=True):
        if isinstance(value, datetime):
            value = value.astimezone(UTC)  # the driver answers in the session's time zone
        parts[group][column.key] = value
    return parts


# ---- any database ---------------------------------------------------------------------------


def claim_scheduled_try(
    factory: sessionmaker[Session], engine: Engine | None, delivery_id: str, try_number: int
) -> Claimed | Skip:
    """Claim scheduled try ``try_number``: the claimed try, or why it is not made now.

    ``engine`` is the PostgreSQL engine for the one-statement claim, None elsewhere.
    """
    if engine is not None:
        parts = claim_in_one_statement(
            engine, claim_statement_params(delivery_id, try_number, utcnow())
        )
        if parts is not None:
            delivery, endpoint, message = (
                SimpleNamespace(**parts[k]) for k in ("delivery", "endpoint", "message")
            )
            # No ORM load tells the log context whose delivery this is (shared.log_context).
            log_context.remember_delivery(
                delivery_id,
                message_id=message.id,
                endpoint_id=endpoint.id,
                organization_id=delivery.organization_id,
            )
            return claimed_try(
                delivery,
                endpoint,
                message,
                try_number=try_number,
                trigger=scheduled_trigger(message),
            )
    with factory() as session:
        return _claim_with_reasons(session, delivery_id, try_number)


def _claim_with_reasons(
    session: Session, delivery_id: str, try_number: int, *, decide_again: bool = True
) -> Claimed | Skip:
    """Read the delivery, act on why its try is not made now, or claim it."""
    row = load(session, delivery_id)
    now = utcnow()
    state = DeliveryState.of(row.Delivery) if row is not None else None
    endpoint_live = row is not None and row.Endpoint.is_active and row.Endpoint.deleted_at is None
    verdict = decide_claim(
        state,
        try_number=try_number,
        endpoint_live=endpoint_live,
        now=now,
        held=row is not None and try_number == 1 and is_held(session, row.Delivery),
        paused_until=row.Endpoint.paused_until if row is not None else None,
    )
    if verdict.skip == Skip.CANCELLED:
        cancel_pending_deliveries(session, endpoint_id=row.Endpoint.id, reason="Endpoint disabled")
        session.commit()
    elif verdict.skip == Skip.HELD:
        # Off the clock until the delivery before it ends (``release_next``).
        if not park(session, row.Delivery) and decide_again:
            # What held it ended since it was read, before the park: it is not parked,
            # so no release will send it. Decide again now.
            return _claim_with_reasons(session, delivery_id, try_number, decide_again=False)
    elif verdict.skip == Skip.PACED:
        defer_try(session, delivery_id, try_number, due=now + timedelta(seconds=verdict.wait))
    elif verdict.skip == Skip.EARLY:
        if handed_to_broker(verdict.wait):
            enqueue(Task.DELIVER, delivery_id, try_number, countdown=verdict.wait)
        else:
            # Not in the broker any more: the sweep hands it over shortly before it is due.
            row.Delivery.enqueued_at = None
            session.commit()
    if verdict.skip is not None:
        return verdict.skip
    delivery, endpoint, message = row
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.attempt_count == try_number - 1,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until <= now),
        )
        .values(lease_until=now + timedelta(seconds=LEASE_SECONDS))
    ).rowcount
    session.commit()
    if not claimed:
        return Skip.LEASED
    return claimed_try(
        delivery, endpoint, message, try_number=try_number, trigger=scheduled_trigger(message)
    )


# ---- leases -----------------------------------------------------------------------------------


def renew_leases(factory: sessionmaker[Session], held: list[tuple[str, int]]) -> int:
    """Extend the claims of tries still being made; a try recorded meanwhile is left alone."""
    if not held:
        return 0
    with factory() as session:
        renewed = session.execute(
            update(Delivery)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.lease_until.is_not(None),
                or_(*(and_(Delivery.id == d, Delivery.attempt_count == t - 1) for d, t in held)),
            )
            .values(lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
    return renewed


class LeaseKeeper:
    """One thread per process renewing the claims of the tries this process is making.

    A single batched UPDATE every LEASE_RENEW_EVERY seconds, whatever the concurrency. If
    it fails (database away), leases lapse and the sweep may repeat a try: at-least-once,
    and the record of the try stays single (its compare-and-set and unique key).
    """

    def __init__(self) -> None:
        self.forget_threads()

    def forget_threads(self) -> None:
        """Start afresh: also run in a forked child, where the renewing thread does not exist."""
        self.lock = threading.Lock()
        self.held: dict[tuple[str, int], sessionmaker[Session]] = {}
        self.thread: threading.Thread | None = None

    @contextmanager
    def holding(
        self, factory: sessionmaker[Session], delivery_id: str, try_number: int
    ) -> Iterator[None]:
        """Keep the claim of this try renewed for the duration of the block."""
        key = (delivery_id, try_number)
        with self.lock:
            self.held[key] = factory
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self.run, name="delivery-lease-keeper", daemon=True
                )
                self.thread.start()
        try:
            yield
        finally:
            with self.lock:
                self.held.pop(key, None)

    def run(self) -> None:
        """Renew every LEASE_RENEW_EVERY seconds, for as long as the process lives."""
        while True:
            time.sleep(LEASE_RENEW_EVERY)
            with self.lock:
                held = list(self.held.items())
            by_factory: dict[sessionmaker[Session], list[tuple[str, int]]] = {}
            for key, factory in held:
                by_factory.setdefault(factory, []).append(key)
            for factory, keys in by_factory.items():
                try:
                    renew_leases(factory, keys)
                except Exception as exc:  # noqa: BLE001 - the sweep covers a lapsed lease
                    log.warning("renewing %d delivery leases failed: %s", len(keys), exc)


LEASES = LeaseKeeper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=LEASES.forget_threads)
