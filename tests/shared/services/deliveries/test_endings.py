"""What a delivery's end sets off, written by each writer: the exhausted notice, a bound
endpoint's end, and neither before the delivery has ended."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db import get_sessionmaker, session_scope
from shared.http import AttemptResult
from shared.models import Delivery, Endpoint, Message, new_id, utcnow
from shared.services.deliveries import claims, records
from shared.services.deliveries.claimed import Claimed
from shared.transitions import decide_attempt

from .conftest import set_columns


@pytest.fixture(params=["one-statement", "orm"])
def write(request, engine):
    factory = get_sessionmaker()
    if request.param == "orm":
        return lambda claimed, decision, attempt_id: records.write_with_orm(
            factory, claimed, decision, attempt_id
        )
    return lambda claimed, decision, attempt_id: records.write_in_one_statement(
        engine, factory, claimed, decision, attempt_id
    )


def _claim(engine, delivery_id: str) -> Claimed:
    claimed = claims.claim_scheduled_try(get_sessionmaker(), engine, delivery_id, 1)
    assert isinstance(claimed, Claimed)
    return claimed


def _decide(claimed: Claimed, status: int):
    result = AttemptResult(status_code=status, response_body="r", error=None, duration_ms=3)
    return decide_attempt(
        claimed.state,
        try_number=1,
        trigger=claimed.trigger,
        result=result,
        failing_since=claimed.failing_since,
        now=utcnow(),
        schedule=(30.0,),
    )


def _notices() -> list[dict]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Message.payload).where(Message.event_type == "message.attempt.exhausted")
            )
        )


def test_a_delivery_failed_for_good_is_reported_once(pending, engine, no_broker, write):
    delivery_id, endpoint_id = pending
    set_columns(Delivery, delivery_id, max_attempts=1)
    claimed = _claim(engine, delivery_id)
    decision = _decide(claimed, 502)
    attempt_id = new_id("atm")
    assert write(claimed, decision, attempt_id) == records.Written.WRITTEN
    # The same attempt written again (a redelivered task) is a duplicate: no second notice.
    assert write(claimed, decision, attempt_id) != records.Written.WRITTEN
    [notice] = _notices()
    assert notice["endpointId"] == endpoint_id and notice["deliveryId"] == delivery_id
    assert notice["lastStatusCode"] == 502 and notice["lastError"] == "HTTP 502"
    assert notice["eventType"] == "sandbox.stopped"


def test_a_failed_try_with_retries_left_sets_nothing_off(pending, engine, no_broker, write):
    delivery_id, endpoint_id = pending
    set_columns(Endpoint, endpoint_id, resource_id="sbx-1")
    claimed = _claim(engine, delivery_id)
    assert write(claimed, _decide(claimed, 500), new_id("atm")) == records.Written.WRITTEN
    assert _notices() == []
    with session_scope() as session:
        assert session.get(Endpoint, endpoint_id).deleted_at is None


def test_the_final_event_delivered_to_a_bound_endpoint_ends_it(
    client, org, receiver, engine, no_broker, write
):
    from tests.support.unqueued import accept_without_broker

    from .conftest import create_endpoint

    endpoint_id = create_endpoint(client, org, receiver.url)
    set_columns(Endpoint, endpoint_id, resource_id="sbx-1")
    # A state update to a final state is the end of the resource (docs/api.md §4.1).
    delivery_id = accept_without_broker(org.id, newState="stopped")
    claimed = _claim(engine, delivery_id)
    assert not claimed.ends_binding
    assert write(claimed, _decide(claimed, 200), new_id("atm")) == records.Written.WRITTEN
    with session_scope() as session:
        assert session.get(Endpoint, endpoint_id).deleted_at is None
    set_columns(Endpoint, endpoint_id, event_types=["sandbox.terminated"])
    delivery_id = accept_without_broker(org.id, newState="destroyed")
    claimed = _claim(engine, delivery_id)
    assert claimed.ends_binding
    assert write(claimed, _decide(claimed, 200), new_id("atm")) == records.Written.WRITTEN
    with session_scope() as session:
        row = session.get(Endpoint, endpoint_id)
        assert row.deleted_at is not None and row.deleted_reason == "resource ended"
