"""Claiming a scheduled try: the one-statement claim on PostgreSQL, and leases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from shared.db import get_sessionmaker, postgres_engine, session_scope
from shared.models import Delivery, Endpoint, Message, utcnow
from shared.services.deliveries import claims
from shared.transitions import Skip

from .conftest import set_columns


def _delivery(delivery_id: str) -> Delivery:
    with session_scope() as session:
        return session.get(Delivery, delivery_id)


def test_the_claim_of_a_due_try_returns_the_posts_columns_and_leases_it(pending, engine):
    delivery_id, endpoint_id = pending
    params = claims.claim_statement_params(delivery_id, 1, utcnow())
    claimed = claims.claim_in_one_statement(engine, params)

    assert claimed is not None
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        rows = {
            "delivery": delivery,
            "endpoint": session.get(Endpoint, endpoint_id),
            "message": session.get(Message, delivery.message_id),
        }
        for group, column in claims.CLAIM_COLUMNS:
            if column.key != "lease_until":
                assert claimed[group][column.key] == getattr(rows[group], column.key), column
        assert delivery.lease_until == params["lease"] == claimed["delivery"]["lease_until"]
        assert delivery.status == "pending" and delivery.attempt_count == 0
    assert isinstance(claimed["message"]["payload"], dict)


def test_a_second_claim_gets_nothing_until_the_lease_runs_out(pending, engine):
    delivery_id, _ = pending
    first = claims.claim_statement_params(delivery_id, 1, utcnow())
    assert claims.claim_in_one_statement(engine, first) is not None
    again = claims.claim_statement_params(delivery_id, 1, utcnow())
    assert claims.claim_in_one_statement(engine, again) is None
    assert _delivery(delivery_id).lease_until == first["lease"]
    # A worker that died holds it no longer once the lease is over.
    later = claims.claim_statement_params(delivery_id, 1, first["lease"] + timedelta(seconds=1))
    assert claims.claim_in_one_statement(engine, later) is not None


@pytest.mark.parametrize(
    ("change", "skip"),
    [
        ("not-yet-due", Skip.EARLY),
        ("cancelled", Skip.DONE),
        ("delivered", Skip.DONE),
        ("endpoint-disabled", Skip.CANCELLED),
        ("endpoint-deleted", Skip.CANCELLED),
        ("later-try", Skip.DONE),
    ],
)
def test_a_try_that_is_not_to_be_made_now_is_not_claimed_and_says_why(
    pending, engine, no_broker, change, skip
):
    delivery_id, endpoint_id = pending
    try_number = 1
    if change == "not-yet-due":
        # Past the early tolerance, though well within a lease's length.
        set_columns(Delivery, delivery_id, next_attempt_at=utcnow() + timedelta(seconds=3))
    elif change in ("cancelled", "delivered"):
        set_columns(Delivery, delivery_id, status=change)
    elif change == "endpoint-disabled":
        set_columns(Endpoint, endpoint_id, is_active=False)
    elif change == "endpoint-deleted":
        set_columns(Endpoint, endpoint_id, deleted_at=utcnow())
    else:
        try_number = 2  # a task for try 2 while try 1 is still to be made

    params = claims.claim_statement_params(delivery_id, try_number, utcnow())
    assert claims.claim_in_one_statement(engine, params) is None
    assert _delivery(delivery_id).lease_until is None
    verdict = claims.claim_scheduled_try(get_sessionmaker(), engine, delivery_id, try_number)
    assert verdict == skip
    assert _delivery(delivery_id).lease_until is None
    if skip == Skip.CANCELLED:
        assert _delivery(delivery_id).status == "cancelled"


def test_a_try_due_within_the_early_tolerance_is_claimed(pending, engine):
    delivery_id, _ = pending
    now = utcnow()
    set_columns(Delivery, delivery_id, next_attempt_at=now + timedelta(seconds=0.3))
    params = claims.claim_statement_params(delivery_id, 1, now)
    assert claims.claim_in_one_statement(engine, params) is not None


def test_sqlite_claims_through_the_orm():
    factory = sessionmaker(bind=create_engine("sqlite://"))
    assert postgres_engine(factory) is None
