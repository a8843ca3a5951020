"""A scheduled try's claim and record, each one autocommit statement on PostgreSQL.

The statements run on the test database against deliveries made with no broker; the
rows they leave are read back through the ORM. The last tests run whole tries through
``deliveries.run_scheduled_try`` with a real receiver.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from shared import queue
from shared.config import get_settings
from shared.db import get_sessionmaker, make_engine, session_scope
from shared.http import DeliveryClient
from shared.models import Attempt, Delivery, Endpoint, Message, new_id, utcnow
from shared.services import deliveries, try_statements
from shared.services.endpoints import cancel_pending_deliveries
from tests.support.backends import backend_pid, terminate_backend
from tests.support.receiver import Reply
from tests.support.unqueued import accept_without_broker

# A session time zone far from UTC, with a half-hour offset.
NON_UTC_ZONE = "Asia/Kolkata"


def _endpoint(client, org, url: str) -> str:
    resp = client.post(
        "/v1/webhooks", json={"url": url, "event_types": ["sandbox.stopped"]}, headers=org.headers
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


@pytest.fixture
def pending(client, org, receiver) -> tuple[str, str]:
    """A due delivery of try 1 to the receiver, never handed to the broker: (delivery, endpoint)."""
    endpoint_id = _endpoint(client, org, receiver.url)
    return accept_without_broker(org.id), endpoint_id


@pytest.fixture
def engine():
    found = try_statements.autocommit_engine(get_sessionmaker())
    assert found is not None
    return found


@pytest.fixture
def no_broker():
    """Keep retries out of the broker: these tests drive the tries themselves."""
    sender = queue._sender
    queue.configure(None)
    yield
    queue.configure(sender)


def _http() -> DeliveryClient:
    return DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )


def _claim_params(delivery_id: str, *, previous: int = 0, now: datetime | None = None) -> dict:
    now = now or utcnow()
    return {
        "delivery_id": delivery_id,
        "previous": previous,
        "now": now,
        "due_by": now + timedelta(seconds=deliveries.EARLY_TOLERANCE),
        "lease": now + timedelta(seconds=deliveries.LEASE_SECONDS),
    }


def _record_params(claimed: dict, delivery_id: str, now: datetime, **overrides) -> dict:
    """What ``deliveries`` passes for try 1 answered 200, with ``overrides`` applied."""
    params = {
        "p_delivery_id": delivery_id,
        "p_previous": 0,
        "p_try_number": 1,
        "p_now": now,
        "p_status_code": 200,
        "p_error_message": None,
        "p_attempt_id": new_id("atm"),
        "p_endpoint_id": claimed["endpoint"]["id"],
        "p_message_id": claimed["message"]["id"],
        "p_organization_id": claimed["delivery"]["organization_id"],
        "p_url": claimed["endpoint"]["url"],
        "p_attempt_status": "success",
        "p_duration_ms": 12,
        "p_trigger": "scheduled",
        "p_response_body": "ok",
        "p_error": None,
        "p_delivered_at": now,
        "p_failed_at": now,
        "p_last_failure_at": now,
        "p_next_attempt_at": None,
        "p_enqueued_at": None,
    }
    params.update(overrides)
    return params


def _set(model, row_id: str, **values) -> None:
    with session_scope() as session:
        session.execute(update(model).where(model.id == row_id).values(**values))


def _delivery(delivery_id: str) -> Delivery:
    with session_scope() as session:
        return session.get(Delivery, delivery_id)


def _attempts(delivery_id: str) -> list[Attempt]:
    with session_scope() as session:
        return list(session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id)))


def _failing_since(endpoint_id: str) -> datetime | None:
    with session_scope() as session:
        return session.get(Endpoint, endpoint_id).failing_since


# ---- claim ---------------------------------------------------------------------------


def test_the_claim_of_a_due_try_returns_the_posts_columns_and_leases_it(pending, engine):
    delivery_id, endpoint_id = pending
    params = _claim_params(delivery_id)
    claimed = try_statements.claim(engine, params)

    assert claimed is not None
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        rows = {
            "delivery": delivery,
            "endpoint": session.get(Endpoint, endpoint_id),
            "message": session.get(Message, delivery.message_id),
        }
        for group, column in try_statements.CLAIM_COLUMNS:
            assert claimed[group][column.key] == getattr(rows[group], column.key), column
        assert delivery.lease_until == params["lease"]
        assert delivery.status == "pending" and delivery.attempt_count == 0
    assert claimed["endpoint"]["id"] == endpoint_id
    assert isinstance(claimed["message"]["payload"], dict)


def test_a_second_claim_gets_nothing_until_the_lease_runs_out(pending, engine):
    delivery_id, _ = pending
    first = _claim_params(delivery_id)
    assert try_statements.claim(engine, first) is not None
    assert try_statements.claim(engine, _claim_params(delivery_id)) is None
    assert _delivery(delivery_id).lease_until == first["lease"]
    # A worker that died holds it no longer once the lease is over.
    later = first["lease"] + timedelta(seconds=1)
    assert try_statements.claim(engine, _claim_params(delivery_id, now=later)) is not None


@pytest.mark.parametrize(
    "change",
    ["not-yet-due", "cancelled", "delivered", "endpoint-disabled", "endpoint-deleted", "later-try"],
)
def test_a_try_that_is_not_to_be_made_now_is_not_claimed(pending, engine, change):
    delivery_id, endpoint_id = pending
    previous = 0
    if change == "not-yet-due":
        # Past the early tolerance, though well within a lease's length.
        _set(Delivery, delivery_id, next_attempt_at=utcnow() + timedelta(seconds=3))
    elif change in ("cancelled", "delivered"):
        _set(Delivery, delivery_id, status=change)
    elif change == "endpoint-disabled":
        _set(Endpoint, endpoint_id, is_active=False)
    elif change == "endpoint-deleted":
        _set(Endpoint, endpoint_id, deleted_at=utcnow())
    else:
        previous = 1  # a task for try 2 while try 1 is still to be made

    assert try_statements.claim(engine, _claim_params(delivery_id, previous=previous)) is None
    assert _delivery(delivery_id).lease_until is None


def test_a_try_due_within_the_early_tolerance_is_claimed(pending, engine):
    delivery_id, _ = pending
    now = utcnow()
    _set(Delivery, delivery_id, next_attempt_at=now + timedelta(seconds=0.3))
    assert try_statements.claim(engine, _claim_params(delivery_id, now=now)) is not None


# ---- record --------------------------------------------------------------------------


def _claimed(engine, delivery_id: str) -> dict:
    claimed = try_statements.claim(engine, _claim_params(delivery_id))
    assert claimed is not None
    return claimed


def test_recording_a_delivered_try_writes_the_delivery_and_one_attempt(pending, engine):
    delivery_id, endpoint_id = pending
    claimed = _claimed(engine, delivery_id)
    _set(Delivery, delivery_id, extra_attempt_count=2)
    now = utcnow()
    params = _record_params(claimed, delivery_id, now)

    assert try_statements.record(engine, "delivered", None, params) == 2

    delivery = _delivery(delivery_id)
    assert delivery.status == "delivered"
    assert delivery.attempt_count == 1
    assert delivery.delivered_at == now
    assert delivery.last_attempt_at == now and delivery.updated_at == now
    assert delivery.next_attempt_at is None and delivery.lease_until is None
    assert delivery.http_status_code == 200 and delivery.error_message is None
    assert delivery.failed_at is None and delivery.last_failure_at is None
    [attempt] = _attempts(delivery_id)
    assert attempt.id == params["p_attempt_id"]
    assert (attempt.endpoint_id, attempt.message_id, attempt.organization_id) == (
        endpoint_id,
        delivery.message_id,
        delivery.organization_id,
    )
    assert attempt.url == claimed["endpoint"]["url"]
    assert (attempt.status, attempt.status_code, attempt.duration_ms) == ("success", 200, 12)
    assert (attempt.trigger, attempt.try_number) == ("scheduled", 1)
    assert (attempt.response_body, attempt.error) == ("ok", None)
    assert attempt.created_at == now


@pytest.mark.parametrize(
    ("status_code", "error", "handed_to_broker"),
    [(503, None, True), (None, "connection refused", False)],
    ids=["http-error-soon", "no-answer-long-wait"],
)
def test_recording_a_try_to_retry_schedules_the_next(
    pending, engine, status_code, error, handed_to_broker
):
    delivery_id, _ = pending
    claimed = _claimed(engine, delivery_id)
    now = utcnow()
    due = now + timedelta(seconds=30 if handed_to_broker else 3600)
    params = _record_params(
        claimed,
        delivery_id,
        now,
        p_status_code=status_code,
        p_error_message=error or f"HTTP {status_code}",
        p_attempt_status="failed",
        p_response_body="busy" if status_code else None,
        p_error=error,
        p_next_attempt_at=due,
        p_enqueued_at=now if handed_to_broker else None,
    )

    assert try_statements.record(engine, "retry", None, params) == 0

    delivery = _delivery(delivery_id)
    assert delivery.status == "pending" and delivery.attempt_count == 1
    assert delivery.next_attempt_at == due
    assert delivery.enqueued_at == (now if handed_to_broker else None)
    assert delivery.last_failure_at == now and delivery.last_attempt_at == now
    assert delivery.delivered_at is None and delivery.failed_at is None
    assert delivery.lease_until is None
    assert delivery.http_status_code == status_code
    assert delivery.error_message == (error or f"HTTP {status_code}")
    [attempt] = _attempts(delivery_id)
    assert (attempt.status, attempt.status_code, attempt.error) == ("failed", status_code, error)
    assert attempt.try_number == 1


def test_recording_a_last_failed_try_fails_the_delivery(pending, engine):
    delivery_id, _ = pending
    claimed = _claimed(engine, delivery_id)
    now = utcnow()
    params = _record_params(
        claimed,
        delivery_id,
        now,
        p_status_code=500,
        p_error_message="HTTP 500",
        p_attempt_status="failed",
    )

    assert try_statements.record(engine, "failed", None, params) == 0

    delivery = _delivery(delivery_id)
    assert delivery.status == "failed" and delivery.attempt_count == 1
    assert delivery.failed_at == now and delivery.last_failure_at == now
    assert delivery.next_attempt_at is None and delivery.delivered_at is None
    assert delivery.lease_until is None
    assert (delivery.http_status_code, delivery.error_message) == (500, "HTTP 500")
    [attempt] = _attempts(delivery_id)
    assert (attempt.status, attempt.status_code) == ("failed", 500)


EARLIER = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "health", "before", "after"),
    [
        ("retry", "failing", None, "now"),
        ("retry", "failing", EARLIER, EARLIER),
        ("delivered", "healthy", EARLIER, None),
        ("retry", None, EARLIER, EARLIER),
        ("delivered", None, None, None),
    ],
    ids=["streak-starts", "streak-goes-on", "streak-ends", "left-alone", "healthy-stays"],
)
def test_recording_marks_the_endpoints_failure_streak(
    pending, engine, outcome, health, before, after
):
    delivery_id, endpoint_id = pending
    _set(Endpoint, endpoint_id, failing_since=before)
    claimed = _claimed(engine, delivery_id)
    now = utcnow()
    params = _record_params(claimed, delivery_id, now, p_next_attempt_at=now)

    assert try_statements.record(engine, outcome, health, params) == 0

    assert _failing_since(endpoint_id) == (now if after == "now" else after)


@pytest.mark.parametrize(
    "moved_on",
    [{"attempt_count": 1}, {"status": "cancelled"}, {"status": "delivered"}],
    ids=["recorded-by-another-run", "cancelled", "delivered-manually"],
)
def test_a_try_whose_delivery_moved_on_is_not_recorded(pending, engine, moved_on):
    delivery_id, endpoint_id = pending
    claimed = _claimed(engine, delivery_id)
    _set(Delivery, delivery_id, **moved_on)
    before = _delivery(delivery_id)
    params = _record_params(
        claimed, delivery_id, utcnow(), p_status_code=500, p_attempt_status="failed"
    )

    assert try_statements.record(engine, "failed", "failing", params) is None

    after = _delivery(delivery_id)
    for column in Delivery.__table__.columns:
        assert getattr(after, column.key) == getattr(before, column.key), column.key
    assert _attempts(delivery_id) == []
    assert _failing_since(endpoint_id) is None


def test_a_second_attempt_for_the_same_try_is_refused_and_nothing_is_written(pending, engine):
    delivery_id, endpoint_id = pending
    claimed = _claimed(engine, delivery_id)
    now = utcnow()
    first = _record_params(claimed, delivery_id, now)
    with session_scope() as session:
        session.add(
            Attempt(
                id=new_id("atm"),
                delivery_id=delivery_id,
                endpoint_id=endpoint_id,
                message_id=claimed["message"]["id"],
                organization_id=claimed["delivery"]["organization_id"],
                url=claimed["endpoint"]["url"],
                status="success",
                status_code=200,
                duration_ms=5,
                trigger="scheduled",
                try_number=1,
            )
        )
    params = {**first, "p_status_code": 500, "p_attempt_status": "failed"}

    with pytest.raises(IntegrityError):
        try_statements.record(engine, "retry", "failing", {**params, "p_next_attempt_at": now})

    # One statement: the delivery's update and the health mark went with the insert.
    delivery = _delivery(delivery_id)
    assert delivery.attempt_count == 0 and delivery.status == "pending"
    assert delivery.lease_until is not None and delivery.http_status_code is None
    assert _failing_since(endpoint_id) is None
    assert len(_attempts(delivery_id)) == 1


def test_sqlite_gets_the_orm_path():
    factory = sessionmaker(bind=create_engine("sqlite://"))
    assert try_statements.autocommit_engine(factory) is None


# ---- a lost connection ---------------------------------------------------------------


def test_a_claim_and_a_record_survive_a_terminated_pooled_connection(pending):
    delivery_id, _ = pending
    # Like the worker's engine: no ping at checkout, so the dead connection is used.
    # One pooled connection, so the statement gets the one whose backend is ended.
    engine = make_engine(get_settings().database_url, pool_size=1, pre_ping=False)
    try:
        doomed = backend_pid(engine)
        terminate_backend(doomed)
        claimed = try_statements.claim(engine, _claim_params(delivery_id))
        assert claimed is not None
        assert _delivery(delivery_id).lease_until is not None
        replacement = backend_pid(engine)
        assert replacement != doomed

        terminate_backend(replacement)
        params = _record_params(claimed, delivery_id, utcnow())
        assert try_statements.record(engine, "delivered", None, params) == 0
        assert _delivery(delivery_id).status == "delivered"
        assert len(_attempts(delivery_id)) == 1
    finally:
        engine.dispose()


# ---- through run_scheduled_try -------------------------------------------------------


def test_a_delivery_cancelled_in_flight_keeps_its_status_and_gets_its_attempt(
    client, org, receiver, no_broker
):
    endpoint_id = _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)

    def cancel_then_fail(_request) -> Reply:
        # The endpoint is disabled while the post is in flight.
        with session_scope() as session:
            cancel_pending_deliveries(session, endpoint_id=endpoint_id, reason="Endpoint disabled")
        return Reply(status=500, body=b"down")

    receiver.responder = cancel_then_fail
    outcome = deliveries.run_scheduled_try(
        get_sessionmaker(), _http(), delivery_id=delivery_id, try_number=1
    )

    assert len(receiver.requests) == 1
    assert outcome.skipped is None
    assert outcome.delivery_status == "cancelled"
    assert outcome.final is True and outcome.next_try is None
    delivery = _delivery(delivery_id)
    assert delivery.status == "cancelled"
    assert delivery.error_message == "Endpoint disabled"
    assert delivery.attempt_count == 1 and delivery.lease_until is None
    assert delivery.next_attempt_at is None and delivery.failed_at is None
    [attempt] = _attempts(delivery_id)
    assert (attempt.try_number, attempt.status, attempt.status_code) == (1, "failed", 500)


def test_a_try_recorded_by_another_run_in_flight_is_not_recorded_twice(
    client, org, receiver, no_broker
):
    endpoint_id = _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    other = new_id("atm")

    def recorded_elsewhere(_request) -> Reply:
        # This post outlived its lease: another worker claimed try 1, made it and
        # recorded it while this post was still in flight.
        with session_scope() as session:
            delivery = session.get(Delivery, delivery_id)
            session.add(
                Attempt(
                    id=other,
                    delivery_id=delivery_id,
                    endpoint_id=endpoint_id,
                    message_id=delivery.message_id,
                    organization_id=delivery.organization_id,
                    url=receiver.url,
                    status="success",
                    status_code=200,
                    duration_ms=1,
                    trigger="scheduled",
                    try_number=1,
                )
            )
            delivery.attempt_count = 1
            delivery.status = "delivered"
            delivery.lease_until = None
        return Reply(status=500)

    receiver.responder = recorded_elsewhere
    outcome = deliveries.run_scheduled_try(
        get_sessionmaker(), _http(), delivery_id=delivery_id, try_number=1
    )

    assert outcome.skipped == "recorded"
    assert [a.id for a in _attempts(delivery_id)] == [other]
    delivery = _delivery(delivery_id)
    assert (delivery.status, delivery.attempt_count) == ("delivered", 1)
    assert delivery.http_status_code is None and delivery.last_failure_at is None
    assert _failing_since(endpoint_id) is None


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
    endpoint_id = _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    rotated_until = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    _set(Endpoint, endpoint_id, failing_since=EARLIER, previous_secret_expires_at=rotated_until)
    engine = try_statements.autocommit_engine(non_utc_factory)
    assert engine is not None

    # Read by the claim straight from the driver, which answers in the session's zone.
    claimed = try_statements.claim(engine, _claim_params(delivery_id))
    assert claimed is not None
    for value, expected in (
        (claimed["endpoint"]["failing_since"], EARLIER),
        (claimed["endpoint"]["previous_secret_expires_at"], rotated_until),
    ):
        assert value == expected
        assert value.utcoffset() == timedelta(0)
    _set(Delivery, delivery_id, lease_until=None)

    # A whole try on that factory: the instants written are the right ones.
    before = utcnow()
    outcome = deliveries.run_scheduled_try(
        non_utc_factory, _http(), delivery_id=delivery_id, try_number=1
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
