"""The delivery service run directly: claims, idempotence, the sweep of lost tries."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import queue
from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.http import DeliveryClient
from shared.models import Attempt, Delivery, Endpoint, ManualRequest, new_id, utcnow
from shared.services import deliveries, fanout, ingest
from shared.services.deliveries import sweep
from tests.conftest import PLATFORM
from tests.support.unqueued import accept_without_broker
from tests.support.waiting import wait_until


def _client() -> DeliveryClient:
    return DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )


def _endpoint(client, org, url, **extra):
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.stopped"], **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201
    return resp.json["data"]["endpoint_id"]


def _attempt_count(delivery_id: str) -> int:
    with session_scope() as session:
        return len(
            list(session.scalars(select(Attempt.id).where(Attempt.delivery_id == delivery_id)))
        )


def test_a_try_run_twice_records_one_attempt(client, org, receiver):
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    factory, http = get_sessionmaker(), _client()

    first = deliveries.run_scheduled_try(factory, http, delivery_id=delivery_id, try_number=1)
    again = deliveries.run_scheduled_try(factory, http, delivery_id=delivery_id, try_number=1)
    assert first.delivery_status == "delivered"
    assert again.skipped == "done"
    assert len(receiver.requests) == 1
    assert _attempt_count(delivery_id) == 1


def test_concurrent_runs_of_one_try_make_one_request(client, org, receiver):
    receiver.reply(200, delay=0.5)
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    factory, http = get_sessionmaker(), _client()
    results = []

    def run() -> None:
        results.append(
            deliveries.run_scheduled_try(factory, http, delivery_id=delivery_id, try_number=1)
        )

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.skipped or "ran" for r in results) == ["leased", "leased", "leased", "ran"]
    assert len(receiver.requests) == 1
    assert _attempt_count(delivery_id) == 1


def test_a_stale_task_for_an_earlier_try_does_nothing(client, org, receiver):
    receiver.reply(500)
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    factory, http = get_sessionmaker(), _client()
    queue_sender = queue._sender
    queue.configure(None)  # keep the retry out of the broker; this test drives tries itself
    try:
        deliveries.run_scheduled_try(factory, http, delivery_id=delivery_id, try_number=1)
        stale = deliveries.run_scheduled_try(factory, http, delivery_id=delivery_id, try_number=1)
    finally:
        queue.configure(queue_sender)
    assert stale.skipped == "done"
    with session_scope() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery.attempt_count == 1 and delivery.status == "pending"
        assert delivery.next_attempt_at > utcnow()
    assert _attempt_count(delivery_id) == 1


def test_sweep_enqueues_a_lost_try_and_the_worker_delivers_it(client, org, receiver, worker):
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    with session_scope() as session:
        # Fanned out and due 20 s ago, never picked up: its task was lost with the broker.
        then = utcnow() - timedelta(seconds=20)
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(next_attempt_at=then, enqueued_at=then, created_at=then)
        )
    with session_scope() as session:
        counts = deliveries.sweep_due(session)
    assert counts["deliveries"] == 1
    receiver.wait_for(1)
    wait_until(lambda: _attempt_count(delivery_id) == 1)
    with session_scope() as session:
        assert session.get(Delivery, delivery_id).status == "delivered"
    # A second sweep right after finds nothing to do.
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 0


def test_sweep_fans_out_messages_whose_fanout_task_was_lost(
    client, org, receiver, worker, monkeypatch
):
    _endpoint(client, org, receiver.url)
    # More deliveries than the ingest makes itself: the messages go to a fan-out task.
    monkeypatch.setattr(ingest, "INLINE_FANOUT_DELIVERIES", 5)
    count = 6
    queue_sender = queue._sender
    queue.configure(None)
    try:
        resp = client.post(
            "/api/internal/events",
            json=[
                {
                    "event": "sandbox.state.updated",
                    "organizationId": org.id,
                    "id": f"sbx-{n}",
                    "newState": "stopped",
                }
                for n in range(count)
            ],
            headers=PLATFORM,
        )
    finally:
        queue.configure(queue_sender)
    assert resp.status_code == 202
    assert receiver.requests == []
    from shared.models import Message

    with session_scope() as session:
        assert not session.scalars(select(Delivery.id)).all()
        session.execute(update(Message).values(created_at=utcnow() - timedelta(seconds=30)))
    with session_scope() as session:
        assert deliveries.sweep_due(session)["fanouts"] == count
    got = receiver.wait_for(count)
    assert {r.headers["webhook-id"] for r in got} == {m["id"] for m in resp.json["messages"]}


def test_a_small_ingest_makes_its_deliveries_in_its_own_transaction(client, org, receiver):
    _endpoint(client, org, receiver.url)
    queue_sender = queue._sender
    queue.configure(None)  # nothing reaches the broker: what exists was made by the request
    try:
        resp = client.post(
            "/api/internal/events",
            json={
                "event": "sandbox.state.updated",
                "organizationId": org.id,
                "id": "sbx-9",
                "newState": "stopped",
            },
            headers=PLATFORM,
        )
    finally:
        queue.configure(queue_sender)
    assert resp.status_code == 202
    message_id = resp.json["messages"][0]["id"]
    with session_scope() as session:
        made = session.scalars(select(Delivery).where(Delivery.message_id == message_id)).all()
        from shared.models import Message

        assert session.get(Message, message_id).fanned_out_at is not None
    assert [(d.status, d.attempt_count) for d in made] == [("pending", 0)]
    # Its first try was never enqueued: the sweep sends it once it is overdue.
    with session_scope() as session:
        earlier = utcnow() - timedelta(seconds=30)  # as if 30 s had passed
        session.execute(update(Delivery).values(next_attempt_at=earlier, enqueued_at=earlier))
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 1


@pytest.mark.parametrize("backlog", [sweep.BACKLOG_LIMIT, None], ids=["long", "unknown"])
def test_sweep_leaves_overdue_tries_alone_while_the_broker_is_backlogged(
    client, org, receiver, backlog
):
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    with session_scope() as session:
        then = utcnow() - timedelta(seconds=20)
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(next_attempt_at=then, enqueued_at=then, created_at=then)
        )
    queue_sender = queue._sender
    queue.configure(None)
    try:
        with session_scope() as session:
            # Behind a long queue (or one that may be) the try is most likely waiting.
            counts = deliveries.sweep_due(session, backlog=backlog)
        assert counts == {"deliveries": 0, "fanouts": 0, "manual": 0, "released": 0}
        with session_scope() as session:
            assert deliveries.sweep_due(session, backlog=3)["deliveries"] == 1
    finally:
        queue.configure(queue_sender)


def _delivery(delivery_id: str) -> Delivery:
    with session_scope() as session:
        return session.get(Delivery, delivery_id)


def test_a_resend_that_creates_a_delivery_is_pending_until_its_attempt_fails(client, org, receiver):
    _endpoint(client, org, receiver.url + "/subscribed")
    message_id = _message_of(accept_without_broker(org.id))
    unsubscribed = _endpoint(client, org, receiver.url + "/other", event_types=["sandbox.created"])
    receiver.reply(500)
    # The manual task is run below, by hand.
    delivery_id = _resend_without_broker(client, org, message_id, unsubscribed)
    before = _delivery(delivery_id)
    assert (before.status, before.attempt_count, before.next_attempt_at) == ("pending", 0, None)
    assert before.max_attempts == 4  # max_retries 3 + 1, as every delivery

    outcome = deliveries.run_manual_attempt(
        get_sessionmaker(), _client(), delivery_id=delivery_id, attempt_id=new_id("atm")
    )
    after = _delivery(delivery_id)
    assert outcome.delivery_status == after.status == "failed"
    assert after.failed_at is not None and after.http_status_code == 500
    assert after.attempt_count + after.extra_attempt_count == 1


def test_a_410_on_a_manual_attempt_disables_the_endpoint_and_cancels_the_rest(
    client, org, receiver
):
    endpoint_id = _endpoint(client, org, receiver.url)
    delivered = accept_without_broker(org.id)
    factory, http = get_sessionmaker(), _client()
    assert (
        deliveries.run_scheduled_try(
            factory, http, delivery_id=delivered, try_number=1
        ).delivery_status
        == "delivered"
    )
    waiting = accept_without_broker(org.id, id="sbx-2")
    receiver.reply(410)
    deliveries.run_manual_attempt(factory, http, delivery_id=delivered, attempt_id=new_id("atm"))

    with session_scope() as session:
        endpoint = session.get(Endpoint, endpoint_id)
        assert endpoint.is_active is False
        assert "410" in endpoint.disabled_reason
    kept = _delivery(delivered)
    # Delivered stays delivered, with its own status code; the attempt row has the 410.
    assert (kept.status, kept.http_status_code) == ("delivered", 200)
    assert _delivery(waiting).status == "cancelled"
    with session_scope() as session:
        codes = sorted(
            session.scalars(select(Attempt.status_code).where(Attempt.delivery_id == delivered))
        )
    assert codes == [200, 410]


def _message_of(delivery_id: str) -> str:
    return _delivery(delivery_id).message_id


def _post_without_broker(client, body):
    sender = queue._sender
    queue.configure(None)  # nothing reaches the broker: what exists was made by the request
    try:
        resp = client.post("/api/internal/events", json=body, headers=PLATFORM)
    finally:
        queue.configure(sender)
    assert resp.status_code == 202, resp.json
    return [m["id"] for m in resp.json["messages"]]


def _stopped(org, n: int) -> dict:
    return {"event": "sandbox.state.updated", "organizationId": org.id, "id": f"sbx-{n}",
            "newState": "stopped"}  # fmt: skip


def test_an_array_to_an_organization_without_endpoints_needs_no_fan_out_task(client, org):
    from shared.models import Message

    ids = _post_without_broker(client, [_stopped(org, n) for n in range(100)])
    with session_scope() as session:
        marks = session.scalars(select(Message.fanned_out_at).where(Message.id.in_(ids))).all()
        assert len(marks) == 100 and None not in marks
        assert session.scalars(select(Delivery.id)).all() == []
    # Nothing is left for the sweep either.
    with session_scope() as session:
        session.execute(update(Message).values(created_at=utcnow() - timedelta(seconds=30)))
    with session_scope() as session:
        assert deliveries.sweep_due(session)["fanouts"] == 0


def test_an_array_within_the_delivery_budget_makes_its_deliveries_in_the_request(
    client, org, receiver
):
    endpoint_id = _endpoint(client, org, receiver.url)
    ids = _post_without_broker(client, [_stopped(org, n) for n in range(20)])
    with session_scope() as session:
        made = session.execute(select(Delivery.message_id, Delivery.endpoint_id, Delivery.status))
        assert sorted(made) == sorted((i, endpoint_id, "pending") for i in ids)


def test_a_fan_out_run_twice_makes_each_delivery_once(client, org, receiver, monkeypatch):
    first = _endpoint(client, org, receiver.url + "/a")
    second = _endpoint(client, org, receiver.url + "/b")
    monkeypatch.setattr(ingest, "INLINE_FANOUT_DELIVERIES", 0)  # always a fan-out task
    ids = _post_without_broker(client, [_stopped(org, n) for n in range(3)])
    with session_scope() as session:
        assert session.scalars(select(Delivery.id)).all() == []
    sender = queue._sender
    queue.configure(None)
    try:
        with session_scope() as session:
            made = fanout.fan_out(session, message_ids=ids)
        with session_scope() as session:
            again = fanout.fan_out(session, message_ids=ids)
    finally:
        queue.configure(sender)
    assert len(made) == 6 and again == []
    with session_scope() as session:
        rows = session.execute(
            select(Delivery.message_id, Delivery.endpoint_id, Delivery.event_type)
        )
        assert sorted(rows) == sorted(
            (i, e, "sandbox.stopped") for i in ids for e in (first, second)
        )


def test_a_single_event_to_more_endpoints_than_the_request_fans_out_goes_to_a_task(
    client, org, receiver, monkeypatch
):
    from shared.models import Message

    monkeypatch.setattr(ingest, "INLINE_FANOUT_ENDPOINTS", 2)
    made = [_endpoint(client, org, f"{receiver.url}/{n}") for n in range(3)]
    (message_id,) = _post_without_broker(client, _stopped(org, 1))
    with session_scope() as session:
        assert session.get(Message, message_id).fanned_out_at is None
        assert session.scalars(select(Delivery.id)).all() == []
    with session_scope() as session:
        assert len(fanout.fan_out(session, message_ids=[message_id])) == 3
    with session_scope() as session:
        assert sorted(session.scalars(select(Delivery.endpoint_id))) == sorted(made)


def test_a_repeated_single_event_writes_no_second_message_or_delivery(client, org, receiver):
    _endpoint(client, org, receiver.url)
    event = {**_stopped(org, 1), "eventId": "once"}
    (first,) = _post_without_broker(client, event)
    resp = client.post("/api/internal/events", json=event, headers=PLATFORM)
    assert resp.json["messages"] == [{"id": first, "eventId": "once", "duplicate": True}]
    with session_scope() as session:
        assert session.scalars(select(Delivery.message_id)).all() == [first]


def _resend_without_broker(client, org, message_id: str, endpoint_id: str) -> str:
    """Ask for a manual resend whose task never reaches the broker; the delivery id."""
    sender = queue._sender
    queue.configure(None)
    try:
        resp = client.post(
            f"/api/webhooks/organizations/{org.id}/messages/{message_id}"
            f"/endpoints/{endpoint_id}/resend",
            headers=org.headers,
        )
    finally:
        queue.configure(sender)
    assert resp.status_code == 202, resp.json
    return resp.json["deliveryId"]


def _requests(delivery_id: str) -> list[ManualRequest]:
    with session_scope() as session:
        return list(
            session.scalars(select(ManualRequest).where(ManualRequest.delivery_id == delivery_id))
        )


def test_a_resend_whose_task_the_broker_lost_is_sent_again_by_the_sweep(
    client, org, receiver, worker
):
    _endpoint(client, org, receiver.url + "/subscribed")
    message_id = _message_of(accept_without_broker(org.id))
    # An endpoint the message did not go to: the resend creates its delivery, pending.
    other = _endpoint(client, org, receiver.url + "/other", event_types=["sandbox.created"])
    delivery_id = _resend_without_broker(client, org, message_id, other)
    (request,) = _requests(delivery_id)
    with session_scope() as session:
        assert deliveries.sweep_due(session)["manual"] == 0  # it may still be on its way
        then = utcnow() - sweep.REENQUEUE_EVERY - timedelta(seconds=1)
        session.execute(
            update(ManualRequest).where(ManualRequest.id == request.id).values(enqueued_at=then)
        )
    with session_scope() as session:
        assert deliveries.sweep_due(session)["manual"] == 1

    (got,) = receiver.wait_for(1)
    assert got.path == "/other"
    wait_until(lambda: _delivery(delivery_id).status == "delivered")
    with session_scope() as session:
        (attempt,) = session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id))
    assert (attempt.id, attempt.trigger) == (request.id, "manual")
    assert _requests(delivery_id) == []
    with session_scope() as session:  # nothing left for a later sweep
        session.execute(update(ManualRequest).values(enqueued_at=then))
        assert deliveries.sweep_due(session)["manual"] == 0


def test_a_manual_attempt_run_three_times_at_once_posts_once(client, org, receiver):
    receiver.reply(200, delay=0.5)
    endpoint_id = _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    _resend_without_broker(client, org, _message_of(delivery_id), endpoint_id)
    (request,) = _requests(delivery_id)
    factory, http = get_sessionmaker(), _client()
    results = []

    def run() -> None:
        results.append(
            deliveries.run_manual_attempt(
                factory, http, delivery_id=delivery_id, attempt_id=request.id
            )
        )

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.skipped or "ran" for r in results) == ["leased", "leased", "ran"]
    assert len(receiver.requests) == 1
    assert _attempt_count(delivery_id) == 1
    assert _requests(delivery_id) == []
    # Run again later (the sweep's duplicate): recorded already, nothing posted.
    again = deliveries.run_manual_attempt(
        factory, http, delivery_id=delivery_id, attempt_id=request.id
    )
    assert again.skipped == "recorded" and len(receiver.requests) == 1


def test_a_manual_request_for_a_deleted_endpoint_is_dropped(client, org, receiver):
    endpoint_id = _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    _resend_without_broker(client, org, _message_of(delivery_id), endpoint_id)
    (request,) = _requests(delivery_id)
    assert client.delete(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 200
    outcome = deliveries.run_manual_attempt(
        get_sessionmaker(), _client(), delivery_id=delivery_id, attempt_id=request.id
    )
    assert outcome.skipped == "cancelled"
    assert receiver.requests == []
    assert _requests(delivery_id) == []


def _attempt_starts(delivery_id: str) -> list:
    """When each attempt of a delivery began, oldest first."""
    with session_scope() as session:
        rows = session.execute(
            select(Attempt.created_at, Attempt.duration_ms)
            .where(Attempt.delivery_id == delivery_id)
            .order_by(Attempt.created_at)
        ).all()
    return [created - timedelta(milliseconds=ms or 0) for created, ms in rows]


def test_a_retry_due_in_more_than_a_minute_waits_for_the_sweep_not_in_a_worker(
    client, org, receiver, worker
):
    # Retry-After asks for 2 minutes: past what a worker is given to hold.
    receiver.reply(503, headers={"Retry-After": "120"})
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    before = utcnow()
    outcome = deliveries.run_scheduled_try(
        get_sessionmaker(), _client(), delivery_id=delivery_id, try_number=1
    )
    assert (outcome.delivery_status, outcome.next_try) == ("pending", 2)
    assert outcome.countdown >= 120
    delivery = _delivery(delivery_id)
    assert delivery.enqueued_at is None  # no task: the row alone knows it is due
    assert delivery.next_attempt_at >= before + timedelta(seconds=120)
    # Not yet: the sweep hands a try over only shortly before it is due.
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 0
    receiver.reply(200)
    due = utcnow() + timedelta(seconds=2)
    with session_scope() as session:
        session.execute(update(Delivery).values(next_attempt_at=due))
        # The Retry-After paused the whole endpoint as long (docs/api.md §11.6): over too.
        session.execute(update(Endpoint).values(paused_until=None))
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 1
        assert deliveries.sweep_due(session)["deliveries"] == 0  # handed over once
    # The worker holds it until its due time, then posts it.
    receiver.wait_for(2)
    wait_until(lambda: _delivery(delivery_id).status == "delivered")
    second = _attempt_starts(delivery_id)[1]
    assert due <= second <= due + timedelta(seconds=2)
    assert len(receiver.requests) == 2


def test_one_sweep_hands_over_every_due_try_in_batches(client, org, receiver, worker, monkeypatch):
    monkeypatch.setattr(sweep, "SWEEP_BATCH", 3)
    _endpoint(client, org, receiver.url)
    for n in range(7):
        accept_without_broker(org.id, id=f"sbx-{n}")
    with session_scope() as session:
        soon = utcnow() + timedelta(seconds=1)
        session.execute(update(Delivery).values(next_attempt_at=soon, enqueued_at=None))
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 7
    receiver.wait_for(7)

    def delivered() -> int:
        with session_scope() as session:
            return session.scalars(select(Delivery.status)).all().count("delivered")

    wait_until(lambda: delivered() == 7)
    assert len(receiver.requests) == 7


def test_a_try_that_comes_far_too_early_is_left_to_the_sweep(client, org, receiver):
    _endpoint(client, org, receiver.url)
    delivery_id = accept_without_broker(org.id)
    with session_scope() as session:
        # Its due time moved five minutes on while a task for it was in the broker.
        session.execute(
            update(Delivery).values(
                next_attempt_at=utcnow() + timedelta(seconds=300), enqueued_at=utcnow()
            )
        )
    outcome = deliveries.run_scheduled_try(
        get_sessionmaker(), _client(), delivery_id=delivery_id, try_number=1
    )
    assert outcome.skipped == "early"
    assert receiver.requests == []
    # Marked as in no broker, so that the sweep hands it over before it is due.
    assert _delivery(delivery_id).enqueued_at is None
