"""Writing a decision on PostgreSQL: one statement, all or nothing, compare-and-set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import sessionmaker

from shared.config import get_settings
from shared.db import get_sessionmaker, make_engine, postgres_engine, session_scope
from shared.http import AttemptResult, DeliveryClient
from shared.models import Attempt, Delivery, Endpoint, new_id, utcnow
from shared.services import deliveries
from shared.services.deliveries import claims, records
from shared.services.deliveries.claimed import Claimed
from shared.transitions import DeliveryState, decide_attempt
from tests.support.backends import backend_pid, terminate_backend
from tests.support.unqueued import accept_without_broker

from .conftest import create_endpoint, set_columns

# A session time zone far from UTC, with a half-hour offset.
NON_UTC_ZONE = "Asia/Kolkata"
EARLIER = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _claim(engine, delivery_id: str) -> Claimed:
    claimed = claims.claim_scheduled_try(get_sessionmaker(), engine, delivery_id, 1)
    assert isinstance(claimed, Claimed)
    return claimed


def _decide(claimed: Claimed, status: int, now=None):
    result = AttemptResult(status_code=status, response_body="r", error=None, duration_ms=12)
    return decide_attempt(
        claimed.state,
        try_number=1,
        trigger=claimed.trigger,
        result=result,
        failing_since=claimed.failing_since,
        now=now or utcnow(),
        schedule=(30.0,),
    )


def _write(engine, claimed, decision, attempt_id=None):
    attempt_id = attempt_id or new_id("atm")
    return records.write_in_one_statement(engine, get_sessionmaker(), claimed, decision, attempt_id)


def _delivery(delivery_id: str) -> Delivery:
    with session_scope() as session:
        return session.get(Delivery, delivery_id)


def _attempts(delivery_id: str) -> list[Attempt]:
    with session_scope() as session:
        return list(session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id)))


def _failing_since(endpoint_id: str) -> datetime | None:
    with session_scope() as session:
        return session.get(Endpoint, endpoint_id).failing_since


def test_a_delivered_try_writes_the_delivery_and_one_attempt(pending, engine):
    delivery_id, endpoint_id = pending
    claimed = _claim(engine, delivery_id)
    now = utcnow()
    decision = _decide(claimed, 200, now)

    assert _write(engine, claimed, decision, "atm-one") == records.Written.WRITTEN

    delivery = _delivery(delivery_id)
    assert (delivery.status, delivery.attempt_count, delivery.delivered_at) == ("delivered", 1, now)
    assert delivery.last_attempt_at == now and delivery.updated_at == now
    assert delivery.next_attempt_at is None and delivery.lease_until is None
    assert delivery.http_status_code == 200 and delivery.error_message is None
    [attempt] = _attempts(delivery_id)
    assert attempt.id == "atm-one"
    assert (attempt.endpoint_id, attempt.message_id) == (endpoint_id, delivery.message_id)
    assert (attempt.status, attempt.status_code, attempt.duration_ms) == ("success", 200, 12)
    assert (attempt.trigger, attempt.try_number, attempt.created_at) == ("scheduled", 1, now)


@pytest.mark.parametrize(
    ("status", "before", "after"),
    [(500, None, "now"), (500, EARLIER, EARLIER), (200, EARLIER, None), (200, None, None)],
    ids=["streak-starts", "streak-goes-on", "streak-ends", "healthy-stays"],
)
def test_a_write_marks_the_endpoints_failure_streak(
    pending, engine, no_broker, status, before, after
):
    delivery_id, endpoint_id = pending
    set_columns(Endpoint, endpoint_id, failing_since=before)
    claimed = _claim(engine, delivery_id)
    now = utcnow()
    assert _write(engine, claimed, _decide(claimed, status, now)) == records.Written.WRITTEN
    assert _failing_since(endpoint_id) == (now if after == "now" else after)


@pytest.mark.parametrize(
    "moved_on",
    [{"attempt_count": 1}, {"status": "cancelled"}, {"status": "delivered"}],
    ids=["recorded-by-another-run", "cancelled", "delivered-manually"],
)
def test_a_write_whose_delivery_moved_on_writes_nothing_and_answers_its_state(
    pending, engine, moved_on
):
    delivery_id, endpoint_id = pending
    claimed = _claim(engine, delivery_id)
    set_columns(Delivery, delivery_id, **moved_on)
    before = _delivery(delivery_id)

    answered = _write(engine, claimed, _decide(claimed, 500))

    assert isinstance(answered, DeliveryState)
    assert answered.guard == (before.status, before.attempt_count, before.extra_attempt_count)
    after = _delivery(delivery_id)
    for column in Delivery.__table__.columns:
        assert getattr(after, column.key) == getattr(before, column.key), column.key
    assert _attempts(delivery_id) == []
    assert _failing_since(endpoint_id) is None


def test_a_second_attempt_for_the_same_try_is_refused_and_nothing_is_written(pending, engine):
    delivery_id, endpoint_id = pending
    claimed = _claim(engine, delivery_id)
    with session_scope() as session:
        session.add(
            Attempt(
                id=new_id("atm"), delivery_id=delivery_id, endpoint_id=endpoint_id,
                message_id=claimed.message_id, organization_id=claimed.organization_id,
                url=claimed.url, status="success", status_code=200, duration_ms=5,
                trigger="scheduled", try_number=1,
            )
        )  # fmt: skip

    assert _write(engine, claimed, _decide(claimed, 500)) == records.Written.DUPLICATE

    # One statement: the delivery's update and the health mark went with the insert.
    delivery = _delivery(delivery_id)
    assert delivery.attempt_count == 0 and delivery.status == "pending"
    assert delivery.lease_until is not None and delivery.http_status_code is None
    assert _failing_since(endpoint_id) is None
    assert len(_attempts(delivery_id)) == 1


def test_a_claim_and_a_write_survive_a_terminated_pooled_connection(pending):
    delivery_id, _ = pending
    # Like the worker's engine: no ping at checkout, so the dead connection is used.
    # One pooled connection, so the statement gets the one whose backend is ended.
    engine = make_engine(get_settings().database_url, pool_size=1, pre_ping=False)
    try:
        doomed = backend_pid(engine)
        terminate_backend(doomed)
        claimed = _claim(engine, delivery_id)
        replacement = backend_pid(engine)
        assert replacement != doomed

        terminate_backend(replacement)
        assert _write(engine, claimed, _decide(claimed, 200)) == records.Written.WRITTEN
        assert _delivery(delivery_id).status == "delivered"
        assert len(_attempts(delivery_id)) == 1
    finally:
        engine.dispose()


@pytest.fixture
def non_utc_factory():
    """A session factory whose PostgreSQL sessions run in a time zone far from UTC."""
    engine = make_engine(get_settings().database_url, pool_size=2, pre_ping=False)

    @event.listens_for(engine, "connect")
    def _zone(dbapi_connection, _record) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET TIME ZONE '{NON_UTC_ZONE}'")
        dbapi_connection.commit()

    with engine.connect() as conn:
        assert conn.execute(text("SHOW TimeZone")).scalar_one() == NON_UTC_ZONE
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


def test_timestamps_are_utc_whatever_the_sessions_time_zone(
    client, org, receiver, no_broker, non_utc_factory
):
    receiver.reply(500)
    endpoint_id = create_endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    rotated_until = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    set_columns(
        Endpoint, endpoint_id, failing_since=EARLIER, previous_secret_expires_at=rotated_until
    )
    engine = postgres_engine(non_utc_factory)
    assert engine is not None

    # Read by the claim straight from the driver, which answers in the session's zone.
    params = claims.claim_statement_params(delivery_id, 1, utcnow())
    claimed = claims.claim_in_one_statement(engine, params)
    assert claimed is not None
    for value, expected in (
        (claimed["endpoint"]["failing_since"], EARLIER),
        (claimed["endpoint"]["previous_secret_expires_at"], rotated_until),
    ):
        assert value == expected
        assert value.utcoffset() == timedelta(0)
    set_columns(Delivery, delivery_id, lease_until=None)

    # A whole try on that factory: the instants written are the right ones.
    before = utcnow()
    http = DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )
    outcome = deliveries.run_scheduled_try(
        non_utc_factory, http, delivery_id=delivery_id, try_number=1
    )
    after = utcnow()
    assert outcome.delivery_status == "pending" and outcome.next_try == 2
    with non_utc_factory() as session:
        delivery = session.get(Delivery, delivery_id)
        for value in (delivery.last_attempt_at, delivery.last_failure_at, delivery.enqueued_at):
            assert value.utcoffset() == timedelta(0)
            assert before <= value <= after
        assert delivery.next_attempt_at == delivery.last_attempt_at + timedelta(
            seconds=outcome.countdown
        )
        assert session.get(Endpoint, endpoint_id).failing_since == EARLIER
        [attempt] = session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id))
        assert before <= attempt.created_at <= after
