"""The delivery state machine, decided without any I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from shared.http import AttemptResult
from shared.models import DeliveryStatus, Trigger
from shared.retry_policy import MAX_BROKER_COUNTDOWN, MAX_RETRY_AFTER_SECONDS
from shared.transitions import (
    GONE_REASON,
    DeliveryState,
    Health,
    Skip,
    decide_attempt,
    decide_claim,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)


def _state(**changes) -> DeliveryState:
    fields = {
        "status": "pending",
        "attempt_count": 0,
        "extra_attempt_count": 0,
        "max_attempts": 4,
        "next_attempt_at": NOW,
    }
    fields.update(changes)
    return DeliveryState(**fields)


def _result(status: int | None, *, error: str | None = None, retry_after: float | None = None):
    return AttemptResult(
        status_code=status, response_body="b", error=error, duration_ms=7, retry_after=retry_after
    )


def _decide(state, result, *, try_number=1, trigger=Trigger.SCHEDULED, failing_since=None):
    return decide_attempt(
        state,
        try_number=try_number,
        trigger=trigger,
        result=result,
        failing_since=failing_since,
        now=NOW,
        schedule=SCHEDULE,
        rng=random.Random(1),
    )


def test_a_2xx_delivers_and_ends_a_failure_streak():
    decision = _decide(_state(), _result(200), failing_since=NOW - timedelta(hours=1))
    assert decision.status == DeliveryStatus.DELIVERED
    assert decision.changes["delivered_at"] == NOW and decision.changes["next_attempt_at"] is None
    assert decision.health == Health.HEALTHY
    assert decision.final and decision.completed == DeliveryStatus.DELIVERED
    assert decision.attempt.error is None


def test_a_failed_try_is_retried_after_the_schedule_with_jitter():
    decision = _decide(_state(), _result(500))
    assert decision.status == DeliveryStatus.PENDING and not decision.final
    assert decision.next_try == 2
    assert 5.0 <= decision.wait <= 6.0
    assert decision.changes["next_attempt_at"] == NOW + timedelta(seconds=decision.wait)
    assert decision.handed_to_broker and decision.changes["enqueued_at"] == NOW
    assert decision.attempt.error == "HTTP 500" and decision.changes["error_message"] == "HTTP 500"
    assert decision.health == Health.FAILING


def test_a_wait_longer_than_the_broker_holds_is_left_to_the_sweep():
    decision = _decide(_state(attempt_count=1), _result(500), try_number=2)
    assert decision.wait > MAX_BROKER_COUNTDOWN
    assert not decision.handed_to_broker and decision.changes["enqueued_at"] is None


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_lengthens_the_wait_on_429_and_503_only_up_to_a_day(status):
    asked = _decide(_state(), _result(status, retry_after=120.0))
    assert asked.wait == 120.0
    years = _decide(_state(), _result(status, retry_after=10 * 365 * 86400.0))
    assert years.wait == MAX_RETRY_AFTER_SECONDS == 86400.0
    shorter = _decide(_state(), _result(status, retry_after=1.0))
    assert 5.0 <= shorter.wait <= 6.0  # never shorter than the schedule


@pytest.mark.parametrize("status", [500, 502, 302, 404])
def test_retry_after_on_any_other_status_is_ignored(status):
    decision = _decide(_state(), _result(status, retry_after=120.0))
    assert 5.0 <= decision.wait <= 6.0


def test_the_last_try_failing_fails_the_delivery():
    decision = _decide(_state(attempt_count=3), _result(500), try_number=4)
    assert decision.status == DeliveryStatus.FAILED and decision.final
    assert decision.changes["failed_at"] == NOW and decision.next_try is None


def test_a_410_fails_the_delivery_and_disables_the_endpoint():
    decision = _decide(_state(), _result(410))
    assert decision.status == DeliveryStatus.FAILED
    assert decision.disable_reason == GONE_REASON


def test_a_test_message_gets_one_attempt():
    decision = _decide(_state(), _result(500), trigger=Trigger.TEST)
    assert decision.status == DeliveryStatus.FAILED and decision.attempt.trigger == Trigger.TEST


def test_a_scheduled_try_recorded_already_is_not_decided_again():
    assert _decide(_state(attempt_count=1), _result(200), try_number=1) is None


@pytest.mark.parametrize("moved_to", ["cancelled", "delivered"])
def test_a_delivery_that_moved_on_keeps_its_account_but_counts_the_try(moved_to):
    decision = _decide(_state(status=moved_to), _result(500))
    assert decision.status == moved_to
    assert decision.changes["attempt_count"] == 1
    assert "http_status_code" not in decision.changes and "status" not in decision.changes
    assert decision.final and decision.next_try is None and decision.completed is None


def test_a_410_fails_even_a_delivery_delivered_meanwhile():
    decision = _decide(_state(status="delivered"), _result(410))
    assert decision.status == DeliveryStatus.FAILED and decision.disable_reason


def test_a_manual_success_delivers_outside_max_attempts():
    state = _state(status="failed", attempt_count=4, next_attempt_at=None)
    decision = _decide(state, _result(200), try_number=None, trigger=Trigger.MANUAL)
    assert decision.status == DeliveryStatus.DELIVERED and decision.manual
    assert decision.changes["extra_attempt_count"] == 1 and "attempt_count" not in decision.changes
    assert decision.attempt_number == 5 and decision.attempt.try_number is None


def test_a_manual_failure_leaves_a_pending_deliverys_retries_alone():
    state = _state(attempt_count=1, next_attempt_at=NOW + timedelta(seconds=30))
    decision = _decide(state, _result(500), try_number=None, trigger=Trigger.MANUAL)
    assert decision.status == DeliveryStatus.PENDING and "next_attempt_at" not in decision.changes


def test_a_manual_failure_fails_a_delivery_made_only_for_it():
    state = _state(next_attempt_at=None)
    decision = _decide(state, _result(500), try_number=None, trigger=Trigger.MANUAL)
    assert decision.status == DeliveryStatus.FAILED


def test_a_manual_failure_keeps_a_delivered_deliverys_own_status_code():
    state = _state(status="delivered", attempt_count=1, next_attempt_at=None)
    decision = _decide(state, _result(500), try_number=None, trigger=Trigger.MANUAL)
    assert decision.status == DeliveryStatus.DELIVERED
    assert "http_status_code" not in decision.changes


@pytest.mark.parametrize(
    ("state", "endpoint_live", "skip"),
    [
        (None, True, Skip.GONE),
        (_state(status="delivered"), True, Skip.DONE),
        (_state(attempt_count=1), True, Skip.DONE),
        (_state(), False, Skip.CANCELLED),
        (_state(lease_until=NOW + timedelta(seconds=5)), True, Skip.LEASED),
        (_state(next_attempt_at=NOW + timedelta(seconds=5)), True, Skip.EARLY),
        (_state(next_attempt_at=NOW + timedelta(seconds=0.3)), True, None),
        (_state(lease_until=NOW - timedelta(seconds=1)), True, None),
    ],
    ids=["gone", "ended", "later-try", "endpoint-off", "leased", "early", "tolerated", "lapsed"],
)
def test_a_claim_is_made_only_for_a_due_unleased_try_of_a_live_endpoint(state, endpoint_live, skip):
    verdict = decide_claim(state, try_number=1, endpoint_live=endpoint_live, now=NOW)
    assert verdict.skip == skip
    if skip == Skip.EARLY:
        assert verdict.wait == 5.0


def test_a_first_try_waits_while_an_earlier_delivery_of_its_resource_is_pending():
    parked = _state(sequence=2, next_attempt_at=None)
    assert decide_claim(parked, try_number=1, endpoint_live=True, now=NOW, held=True).skip == (
        Skip.HELD
    )
    # Once nothing before it is pending, it goes, parked (no due time) or not.
    assert decide_claim(parked, try_number=1, endpoint_live=True, now=NOW).skip is None


def test_only_a_first_try_of_an_ordered_delivery_is_held():
    retry = _state(sequence=2, attempt_count=1)
    assert decide_claim(retry, try_number=2, endpoint_live=True, now=NOW, held=True).skip is None
    unordered = _state()
    assert (
        decide_claim(unordered, try_number=1, endpoint_live=True, now=NOW, held=True).skip is None
    )


def test_a_held_try_of_a_gone_endpoint_is_cancelled_not_held():
    state = _state(sequence=3)
    verdict = decide_claim(state, try_number=1, endpoint_live=False, now=NOW, held=True)
    assert verdict.skip == Skip.CANCELLED


def test_a_paused_endpoint_holds_its_tries_until_the_pause_or_their_due_time():
    paused = NOW + timedelta(seconds=30)
    verdict = decide_claim(_state(), try_number=1, endpoint_live=True, now=NOW, paused_until=paused)
    assert (verdict.skip, verdict.wait) == (Skip.PACED, 30.0)
    later = _state(attempt_count=1, next_attempt_at=NOW + timedelta(seconds=90))
    verdict = decide_claim(later, try_number=2, endpoint_live=True, now=NOW, paused_until=paused)
    assert (verdict.skip, verdict.wait) == (Skip.PACED, 90.0)
    over = NOW - timedelta(seconds=1)
    assert (
        decide_claim(_state(), try_number=1, endpoint_live=True, now=NOW, paused_until=over).skip
        is None
    )


def test_a_manual_failure_leaves_a_delivery_waiting_for_its_turn_pending():
    state = _state(sequence=4, next_attempt_at=None)
    decision = _decide(state, _result(500), try_number=None, trigger=Trigger.MANUAL)
    assert decision.status == DeliveryStatus.PENDING
