"""A delivery's state machine: what a try about to be made, or an attempt made, leads to.

Pure: no database, broker or HTTP. Given what the delivery was, which try this is and how
its post went, ``decide_attempt`` returns the delivery's next state (delivered, retry at a
time, failed, left as it was), the attempt row, the change to the endpoint's health and
whether the endpoint is to be disabled; ``decide_claim`` says whether a try is to be made
now or why not (done, cancelled, leased, held behind its resource, paused, early). Every
attempt (scheduled, manual, test) on every storage backend is decided here, and each
backend writes a ``Decision`` in one place (``shared.services.deliveries.records``).

The rules, as the API documents them (docs/api.md, "Delivery"):
- a 2xx answer delivers; anything else (3xx included) fails the attempt;
- a failed scheduled try is retried after the schedule's wait (longer on a 429 or 503
  with Retry-After) until ``max_attempts`` scheduled tries were made, then fails;
- a 410 fails the delivery whatever made the attempt, and disables the endpoint (which
  cancels its other pending deliveries);
- a test message gets one attempt;
- a manual attempt does not count against ``max_attempts``: its success delivers, its
  failure leaves a pending delivery's retries as they are (a delivery made only for the
  resend, with nothing scheduled, fails with it);
- a delivery that stopped being pending while a scheduled try was in flight (cancelled, or
  delivered by a manual attempt) keeps its own account; the attempt is still recorded;
- on an ordered endpoint (docs/api.md §11.3) a delivery's first try waits while an
  earlier delivery of its resource is pending, and no try goes while the receiver's
  Retry-After holds its endpoint (§11.6).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .models.enums import AttemptStatus, DeliveryStatus, Trigger
from .retry_policy import handed_to_broker, retry_wait

if TYPE_CHECKING:
    from .http import AttemptResult

# The reason an endpoint answering 410 is disabled with.
GONE_REASON = "The endpoint answered 410 Gone"
# A task that arrives at most this early is made now: countdowns and clocks differ a little.
EARLY_TOLERANCE = 0.5
ENDED = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """What a decision reads of a delivery."""

    status: str
    attempt_count: int
    extra_attempt_count: int
    max_attempts: int
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    # Its place among its resource's deliveries on an ordered endpoint; None when unordered.
    sequence: int | None = None

    @property
    def guard(self) -> tuple[str, int, int]:
        """What must still hold for a decision taken on this state to be written."""
        return (self.status, self.attempt_count, self.extra_attempt_count)

    @classmethod
    def of(cls, row: Any) -> DeliveryState:
        """The state of a delivery row (an ORM object or anything with its attributes)."""
        return cls(
            status=row.status,
            attempt_count=row.attempt_count,
            extra_attempt_count=row.extra_attempt_count,
            max_attempts=row.max_attempts,
            next_attempt_at=row.next_attempt_at,
            lease_until=row.lease_until,
            sequence=getattr(row, "sequence", None),
        )


class Health(StrEnum):
    """A change to an endpoint's failure streak (the auto-disable clock)."""

    FAILING = "failing"  # a failure on a healthy endpoint starts a streak
    HEALTHY = "healthy"  # a success on a failing endpoint ends it


class Skip(StrEnum):
    """Why a task made no attempt."""

    GONE = "gone"  # the delivery no longer exists
    DONE = "done"  # the try was made already, or the delivery ended
    CANCELLED = "cancelled"  # its endpoint was disabled or deleted
    LEASED = "leased"  # another run is making it right now
    EARLY = "early"  # not due yet
    HELD = "held"  # an earlier delivery of its resource has not ended (ordering)
    PACED = "paced"  # its endpoint's rate limit or Retry-After makes it wait its turn
    RECORDED = "recorded"  # another run recorded the attempt meanwhile


@dataclass(frozen=True, slots=True)
class AttemptFields:
    """The attempt row's own fields (its ids come from the delivery it belongs to)."""

    status: AttemptStatus
    status_code: int | None
    duration_ms: int
    trigger: Trigger
    try_number: int | None
    response_body: str | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """What one attempt leads to; written only while the delivery is still ``expected``."""

    expected: DeliveryState
    attempt: AttemptFields
    # The delivery's columns to set, by name.
    changes: Mapping[str, Any]
    status: DeliveryStatus
    # No further automatic attempt will be made.
    final: bool
    # The delivery's attempts so far, this one included (scheduled and manual).
    attempt_number: int
    next_try: int | None = None
    wait: float | None = None
    health: Health | None = None
    disable_reason: str | None = None

    @property
    def manual(self) -> bool:
        """A manual or test request's attempt, outside the retry schedule."""
        return self.attempt.try_number is None

    @property
    def handed_to_broker(self) -> bool:
        """Whether the next try goes to the broker now (else the sweep hands it over)."""
        return self.wait is not None and handed_to_broker(self.wait)

    @property
    def completed(self) -> DeliveryStatus | None:
        """``delivered`` or ``failed`` when this attempt ended the delivery, else None."""
        if self.status in ENDED and self.status != self.expected.status:
            return self.status
        return None


def error_text(result: AttemptResult) -> str | None:
    """The error of a failed attempt: the client's error, or ``HTTP <status>``."""
    if result.ok:
        return None
    if result.error:
        return result.error
    return f"HTTP {result.status_code}"


def health_change(ok: bool, failing_since: datetime | None) -> Health | None:
    """The endpoint's failure streak after an attempt; None when it does not change."""
    if ok and failing_since is not None:
        return Health.HEALTHY
    if not ok and failing_since is None:
        return Health.FAILING
    return None


def decide_attempt(
    state: DeliveryState,
    *,
    try_number: int | None,
    trigger: Trigger,
    result: AttemptResult,
    failing_since: datetime | None,
    now: datetime,
    schedule: Sequence[float],
    rng: random.Random | None = None,
) -> Decision | None:
    """What an attempt leads to; None when scheduled try ``try_number`` was recorded already.

    ``try_number`` is the scheduled try made, None for a manual or test request.
    """
    if try_number is not None and state.attempt_count != try_number - 1:
        return None
    ok = result.ok
    gone = result.status_code == 410
    error = error_text(result)
    changes: dict[str, Any] = {"last_attempt_at": now, "updated_at": now}
    if not ok:
        changes["last_failure_at"] = now
    status = DeliveryStatus(state.status)
    pending = status == DeliveryStatus.PENDING
    wait: float | None = None
    next_try: int | None = None
    if try_number is not None:
        changes["attempt_count"] = try_number
        changes["lease_until"] = None
        extra = state.extra_attempt_count
        if pending:
            changes["http_status_code"] = result.status_code
            changes["error_message"] = error
        if ok:
            ends_as: DeliveryStatus | None = DeliveryStatus.DELIVERED
        elif gone or trigger == Trigger.TEST or try_number >= state.max_attempts:
            ends_as = DeliveryStatus.FAILED
        else:
            ends_as = None
        if ends_as is None and pending:
            wait = retry_wait(
                try_number,
                status_code=result.status_code,
                retry_after=result.retry_after,
                schedule=schedule,
                rng=rng,
            )
            next_try = try_number + 1
            changes["next_attempt_at"] = now + timedelta(seconds=wait)
            changes["enqueued_at"] = now if handed_to_broker(wait) else None
        elif ends_as is not None and (pending or gone):
            status = ends_as
        attempts = try_number + extra
    else:
        extra = state.extra_attempt_count + 1
        changes["extra_attempt_count"] = extra
        if ok or status != DeliveryStatus.DELIVERED:
            changes["http_status_code"] = result.status_code
            changes["error_message"] = error
        if ok:
            status = DeliveryStatus.DELIVERED
            changes["lease_until"] = None
        else:
            # A delivery waiting behind its resource (a sequence, no due time) still has
            # its scheduled tries ahead of it.
            nothing_scheduled = (
                pending
                and state.next_attempt_at is None
                and state.attempt_count == 0
                and state.sequence is None
            )
            if status != DeliveryStatus.DELIVERED and (gone or nothing_scheduled):
                status = DeliveryStatus.FAILED
        attempts = state.attempt_count + extra
    if status != state.status:
        changes["status"] = status
        changes["next_attempt_at"] = None
        changes["delivered_at" if status == DeliveryStatus.DELIVERED else "failed_at"] = now
    return Decision(
        expected=state,
        attempt=AttemptFields(
            status=AttemptStatus.SUCCESS if ok else AttemptStatus.FAILED,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            trigger=trigger,
            try_number=try_number,
            response_body=result.response_body,
            error=error,
            created_at=now,
        ),
        changes=changes,
        status=status,
        final=try_number is None or next_try is None,
        attempt_number=attempts,
        next_try=next_try,
        wait=wait,
        health=health_change(ok, failing_since),
        disable_reason=GONE_REASON if gone else None,
    )


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    """Whether a scheduled try is made now: ``skip`` None means post it."""

    skip: Skip | None = None
    # For an early try: seconds until it is due.
    wait: float | None = None


def decide_claim(
    state: DeliveryState | None,
    *,
    try_number: int,
    endpoint_live: bool,
    now: datetime,
    held: bool = False,
    paused_until: datetime | None = None,
) -> ClaimDecision:
    """Whether scheduled try ``try_number`` of a delivery is to be made now, or why not.

    ``held``: an earlier delivery of the same resource to the same ordered endpoint is
    still pending; only a first try waits for it (a later try comes after the first,
    which already found every earlier one ended). ``paused_until``: the endpoint's
    receiver asked for no tries until then.
    """
    if state is None:
        return ClaimDecision(Skip.GONE)
    if state.status != DeliveryStatus.PENDING or state.attempt_count != try_number - 1:
        return ClaimDecision(Skip.DONE)
    if not endpoint_live:
        return ClaimDecision(Skip.CANCELLED)
    if state.lease_until is not None and state.lease_until > now:
        return ClaimDecision(Skip.LEASED)
    if held and try_number == 1 and state.sequence is not None:
        return ClaimDecision(Skip.HELD)
    due = state.next_attempt_at
    if paused_until is not None and paused_until > now:
        until = max(paused_until, due) if due is not None else paused_until
        return ClaimDecision(Skip.PACED, wait=(until - now).total_seconds())
    if due is not None and due > now + timedelta(seconds=EARLY_TOLERANCE):
        return ClaimDecision(Skip.EARLY, wait=(due - now).total_seconds())
    return ClaimDecision()
