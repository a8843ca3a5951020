"""``webhook-sequence`` numbers given at fan-out (docs/api.md §11.3), on real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from shared import queue
from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.models import Delivery, Message, ResourceSequence, utcnow
from shared.services import fanout, ingest, retention
from tests.conftest import PLATFORM


def _endpoint(client, org, ordering: str) -> str:
    body = {"url": "http://127.0.0.1:9/h", "event_types": ["sandbox.stopped"], "ordering": ordering}
    resp = client.post("/v1/webhooks", json=body, headers=org.headers)
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


def _stopped(org, sandbox: str, n: int) -> dict:
    return {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": sandbox,
        "oldState": "started",
        "newState": "stopped",
        "updatedAt": f"2025-12-19T10:30:{n:02d}.000Z",
    }


def _numbers(endpoint_id: str) -> dict[str, list[tuple[int | None, str]]]:
    """By resource: (sequence, updatedAt) of the endpoint's deliveries, by sequence."""
    with session_scope() as session:
        rows = session.execute(
            select(Delivery.resource_id, Delivery.sequence, Message.payload)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.sequence)
        ).all()
    found: dict[str, list] = {}
    for resource, sequence, payload in rows:
        found.setdefault(resource or payload["id"], []).append((sequence, payload["updatedAt"]))
    return found


def test_an_array_numbers_each_resource_in_array_order_on_ordered_endpoints_only(client, org):
    ordered, plain = _endpoint(client, org, "resource"), _endpoint(client, org, "none")
    batch = [_stopped(org, f"sbx-{n % 2}", n) for n in range(6)]
    assert client.post("/api/internal/events", json=batch, headers=PLATFORM).status_code == 202
    batch = [_stopped(org, "sbx-0", 6)]
    assert client.post("/api/internal/events", json=batch, headers=PLATFORM).status_code == 202

    numbers = _numbers(ordered)
    assert [s for s, _ in numbers["sbx-0"]] == [1, 2, 3, 4]
    assert [t[17:19] for _, t in numbers["sbx-0"]] == ["00", "02", "04", "06"]
    assert [s for s, _ in numbers["sbx-1"]] == [1, 2, 3]
    assert {s for runs in _numbers(plain).values() for s, _ in runs} == {None}


def test_fan_out_tasks_run_out_of_order_still_number_in_acceptance_order(client, org):
    # 300 events to two endpoints is past what a request fans out itself: a task fans
    # out each array. Here no task runs until all three are accepted, then in reverse.
    ordered = _endpoint(client, org, "resource")
    _endpoint(client, org, "none")
    sender = queue._sender
    queue.configure(None)
    arrays = []
    try:
        for n in range(3):
            events = [_stopped(org, f"sbx-{i}", n) for i in range(300)]
            with session_scope() as session:
                accepted = ingest.ingest_events(session, raw_events=events, single=False)
                arrays.append([a.message.id for a in accepted])
        for message_ids in reversed(arrays):
            with session_scope() as session:
                fanout.fan_out(session, message_ids=message_ids)
    finally:
        queue.configure(sender)

    numbers = _numbers(ordered)
    assert len(numbers) == 300
    for runs in numbers.values():
        assert [(s, t[17:19]) for s, t in runs] == [(1, "00"), (2, "01"), (3, "02")]


def test_a_fan_out_task_finding_another_at_work_ends_and_that_one_sends_its_messages_on(
    client, org
):
    # Two arrays past the inline limit, each owed a task; the first task is mid-fan-out
    # (its transaction open) when the second runs.
    ordered = _endpoint(client, org, "resource")
    _endpoint(client, org, "none")
    sender = queue._sender
    sent: list[tuple] = []
    queue.configure(lambda task, args, countdown, eta, lane: sent.append((task, args, countdown)))
    try:
        arrays = []
        for n in range(2):
            events = [_stopped(org, f"sbx-{i}", n) for i in range(300)]
            with session_scope() as session:
                accepted = ingest.ingest_events(session, raw_events=events, single=False)
                arrays.append([a.message.id for a in accepted])
        sent.clear()
        factory = get_sessionmaker()
        with factory() as first:
            assert fanout.fan_out(first, message_ids=arrays[0])
            with factory() as second:
                # Not waiting on the first, not polling: no delivery, nothing sent.
                assert fanout.fan_out(second, message_ids=arrays[1]) == []
                second.commit()
            assert [t for t, _, _ in sent if t == "webhooks.fanout"] == []
            first.commit()

        # The first, once committed, sent the second array's messages on (still owed), in
        # acceptance order, a batch per task; each of those sends the rest on in turn.
        def fanouts() -> list[tuple]:
            return [(a[0], c) for t, a, c in sent if t == "webhooks.fanout"]

        assert fanouts() == [(arrays[1][: fanout.OWED_PER_TASK], None)]
        done = 0
        while done < len(fanouts()):
            with factory() as session:
                assert fanout.fan_out(session, message_ids=fanouts()[done][0])
                session.commit()
            done += 1
        assert [ids for ids, _ in fanouts()] == [
            arrays[1][start : start + fanout.OWED_PER_TASK]
            for start in range(0, len(arrays[1]), fanout.OWED_PER_TASK)
        ]
    finally:
        queue.configure(sender)
    numbers = _numbers(ordered)
    assert len(numbers) == 300
    for runs in numbers.values():
        assert [(s, t[17:19]) for s, t in runs] == [(1, "00"), (2, "01")]


def test_a_small_report_waits_for_an_earlier_one_still_owed_its_fan_out(client, org):
    # A large array's fan-out is left to a task that has not run yet; a single event of
    # one of its sandboxes, small enough to fan out at once, must not overtake it.
    ordered = _endpoint(client, org, "resource")
    _endpoint(client, org, "none")
    sender = queue._sender
    queue.configure(None)
    try:
        events = [_stopped(org, f"sbx-{i}", 0) for i in range(300)]
        with session_scope() as session:
            accepted = ingest.ingest_events(session, raw_events=events, single=False)
            array = [a.message.id for a in accepted]
        with session_scope() as session:
            (late,) = ingest.ingest_events(
                session, raw_events=[_stopped(org, "sbx-7", 1)], single=False
            )
        with session_scope() as session:
            assert session.get(Message, late.message.id).fanned_out_at is None
        # The later message's own task fans out the array first.
        with session_scope() as session:
            fanout.fan_out(session, message_ids=[late.message.id])
    finally:
        queue.configure(sender)
    assert [(s, t[17:19]) for s, t in _numbers(ordered)["sbx-7"]] == [(1, "00"), (2, "01")]
    with session_scope() as session:
        assert fanout.fan_out(session, message_ids=array) == []


def test_counters_of_resources_unheard_of_for_the_retention_period_are_purged(client, org):
    ordered = _endpoint(client, org, "resource")
    for sandbox in ("sbx-old", "sbx-new"):
        batch = [_stopped(org, sandbox, 0)]
        assert client.post("/api/internal/events", json=batch, headers=PLATFORM).status_code == 202
    with session_scope() as session:
        session.execute(
            update(ResourceSequence)
            .where(ResourceSequence.resource_id == "sbx-old")
            .values(updated_at=utcnow() - timedelta(days=get_settings().retention_days, hours=1))
        )
    assert retention.purge_expired(get_sessionmaker())["sequences"] == 1
    with session_scope() as session:
        left = session.scalars(select(ResourceSequence.resource_id)).all()
    assert left == ["sbx-new"]
    assert _numbers(ordered)["sbx-old"] == [(1, "2025-12-19T10:30:00.000Z")]
