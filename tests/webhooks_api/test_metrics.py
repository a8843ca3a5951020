"""GET /metrics: Prometheus text whose counts match the database (worker too)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import case, func, select

from shared.db import session_scope
from shared.models import Attempt, Delivery, Message, new_id, utcnow
from tests.conftest import PLATFORM
from tests.support.waiting import wait_until


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    resp = client.get("/metrics")
    assert resp.status_code == 200, resp.data
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def _create_v1(client, org, url, **extra) -> dict:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.created"], **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]


def _ingest(client, org, count: int) -> None:
    events = [
        {
            "event": "sandbox.created",
            "organizationId": org.id,
            "id": f"sbx-{i}",
            "state": "started",
            "class": "small",
            "createdAt": "2026-01-01T00:00:00.000Z",
        }
        for i in range(count)
    ]
    resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
    assert resp.status_code == 202, resp.json


def test_each_message_is_counted_once_whichever_path_fans_it_out(
    client, org, make_receiver, worker, monkeypatch
):
    from shared.services import ingest

    receiver = make_receiver()
    endpoint = _create_v1(client, org, receiver.url + "/ok")
    _ingest(client, org, 2)  # fanned out by the request itself
    monkeypatch.setattr(ingest, "INLINE_FANOUT_DELIVERIES", 0)
    _ingest(client, org, 3)  # fanned out by a fan-out task on the worker
    once = {"event": "sandbox.created", "organizationId": org.id, "id": "sbx-9", "eventId": "e-1"}
    for _ in range(2):  # the repeat is a duplicate: no new message
        resp = client.post("/api/internal/events", json=once, headers=PLATFORM)
        assert resp.status_code == 202
    resp = client.post(
        f"/api/webhooks/organizations/{org.id}/endpoints/{endpoint['endpoint_id']}/test",
        json={"eventType": "sandbox.created"},
        headers=org.headers,
    )
    assert resp.status_code == 202
    receiver.wait_for(7)

    def counted():
        samples = scrape(client)
        by_kind = {
            kind: total(samples, "webhooks_messages_ingested_total", kind=kind)
            for kind in ("event", "test", "custom")
        }
        return by_kind if by_kind == {"event": 6, "test": 1, "custom": 0} else None

    wait_until(counted, timeout=10)


def test_metrics_after_deliveries_match_the_database(client, org, make_receiver, worker):
    good, bad = make_receiver(), make_receiver()
    bad.reply(500, b"down")
    _create_v1(client, org, good.url + "/ok")
    _create_v1(client, org, bad.url + "/down", max_retries=1)
    _ingest(client, org, 3)
    good.wait_for(3)
    bad.wait_for(6)  # two tries each, the retry after ~1 s

    def settled() -> bool:
        with session_scope() as session:
            return not session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
            )

    wait_until(settled, timeout=30)

    def database_figures() -> dict[str, float]:
        with session_scope() as session:
            code = Attempt.status_code
            answer_class = case(
                (code.between(200, 299), "2xx"), (code.between(500, 599), "5xx"), else_="other"
            )
            by_class = dict(
                session.execute(select(answer_class, func.count()).group_by(answer_class)).all()
            )
            statuses = select(Delivery.status, func.count()).group_by(Delivery.status)
            by_status = dict(session.execute(statuses).all())
            messages = session.scalar(select(func.count()).select_from(Message))
        return {
            "2xx": by_class.get("2xx", 0),
            "5xx": by_class.get("5xx", 0),
            "other": by_class.get("other", 0),
            "delivered": by_status.get("delivered", 0),
            "failed": by_status.get("failed", 0),
            "messages": messages,
        }

    expected = database_figures()
    assert expected == {
        "2xx": 3,
        "5xx": 6,
        "other": 0,
        "delivered": 3,
        "failed": 3,
        # Each delivery that failed for good was reported as a message of its own
        # (message.attempt.exhausted, docs/api.md §11.5).
        "messages": 6,
    }

    def metrics_match():
        samples = scrape(client)
        seen = {
            "2xx": total(samples, "webhooks_attempts_total", status_class="2xx"),
            "5xx": total(samples, "webhooks_attempts_total", status_class="5xx"),
            "other": sum(
                total(samples, "webhooks_attempts_total", status_class=c)
                for c in ("3xx", "4xx", "error")
            ),
            "delivered": total(samples, "webhooks_deliveries_completed_total", outcome="delivered"),
            "failed": total(samples, "webhooks_deliveries_completed_total", outcome="failed"),
            "messages": total(samples, "webhooks_messages_ingested_total", kind="event"),
        }
        # The worker adds its counters just after its commit: allow it that moment.
        return samples if seen == expected else None

    samples = wait_until(metrics_match, timeout=10)
    assert total(samples, "webhooks_attempts_total", trigger="scheduled") == 9
    assert total(samples, "webhooks_attempt_duration_seconds_count") == 9
    assert total(samples, "webhooks_attempt_duration_seconds_bucket", le="+Inf") == 9
    assert 0 < total(samples, "webhooks_attempt_duration_seconds_sum") < 9 * 5
    assert total(samples, "webhooks_deliveries_pending") == 0
    assert total(samples, "webhooks_deliveries_due") == 0
    assert total(samples, "webhooks_endpoints", status="active") == 2
    for part in ("counters", "database", "broker"):
        assert total(samples, "webhooks_up", part=part) == 1


def test_due_but_unsent_deliveries_and_oldest_pending_age(client, org, make_receiver):
    endpoint = _create_v1(client, org, make_receiver().url)
    now = utcnow()
    # A delivery whose try is a minute overdue and that no broker holds: what beat's sweep
    # exists for, and what an operator must see.
    with session_scope() as session:
        message = Message(
            id=new_id("evt"),
            organization_id=org.id,
            event_type="sandbox.created",
            payload={"id": "sbx-1", "organizationId": org.id},
            timestamp="2026-01-01T00:00:00.000Z",
            fanned_out_at=now - timedelta(minutes=2),
            created_at=now - timedelta(minutes=2),
        )
        session.add(message)
        session.flush()
        session.add(
            Delivery(
                id=new_id("whd"),
                message_id=message.id,
                endpoint_id=endpoint["endpoint_id"],
                organization_id=org.id,
                event_type="sandbox.created",
                status="pending",
                attempt_count=0,
                extra_attempt_count=0,
                max_attempts=4,
                next_attempt_at=now - timedelta(minutes=1),
                created_at=now - timedelta(minutes=2),
                updated_at=now - timedelta(minutes=2),
            )
        )
    samples = scrape(client)
    assert total(samples, "webhooks_deliveries_pending") == 1
    assert total(samples, "webhooks_deliveries_due") == 1
    assert 60 <= total(samples, "webhooks_deliveries_due_lag_seconds") < 120
    assert 120 <= total(samples, "webhooks_oldest_pending_delivery_age_seconds") < 180


def _blocked_clients(redis_client) -> int:
    """Connections to the test db waiting in a blocking command (a worker's BRPOP)."""
    db = str(redis_client.connection_pool.connection_kwargs.get("db", 0))
    return sum(
        1 for c in redis_client.client_list() if c.get("db") == db and "b" in c.get("flags", "")
    )


def test_queue_depth_counts_waiting_tasks_and_retries_have_their_own_queue(
    client, worker, redis_client
):
    from shared.lanes import ALL_QUEUES
    from webhooks_worker.celery_app import app as celery

    # Every queue the worker reads: the shared ones and each organization lane (shared.lanes).
    queues = ALL_QUEUES
    # Stop the worker from taking tasks, so that they wait in Redis. The session has one
    # worker: its reply ends the wait (a broadcast otherwise waits out the whole timeout).
    for queue in queues:
        assert celery.control.cancel_consumer(queue, reply=True, timeout=5, limit=1)
    # A pop the worker began before the cancel (kombu blocks on the queues for up to 1 s)
    # would still take a task: wait until it has ended.
    wait_until(lambda: _blocked_clients(redis_client) == 0, timeout=10)
    try:
        celery.send_task("webhooks.purge")
        celery.send_task("webhooks.purge")
        celery.send_task("webhooks.deliver", args=["whd-nonexistent00000", 1])
        celery.send_task("webhooks.deliver", args=["whd-nonexistent00000", 2])
        celery.send_task("webhooks.sweep")  # it goes with the retries it hands over
        # A family's depth counts its lanes too.
        celery.send_task("webhooks.deliver", args=["whd-nonexistent00000", 1], queue="webhooks.3")
        celery.send_task(
            "webhooks.deliver", args=["whd-nonexistent00000", 2], queue="webhooks.retry.3"
        )
        samples = scrape(client)
        assert total(samples, "webhooks_queue_depth", queue="webhooks") == 4
        assert total(samples, "webhooks_queue_depth", queue="webhooks.retry") == 3
    finally:
        for queue in queues:
            celery.control.add_consumer(queue, reply=True, timeout=5, limit=1)
    wait_until(lambda: total(scrape(client), "webhooks_queue_depth") == 0)


def test_counter_store_adds_whole_and_fractional_seconds():
    from shared.courier import get_courier
    from shared.metrics import CounterStore, attempt_increments
    from tests.conftest import TEST_REDIS_URL

    store = CounterStore(TEST_REDIS_URL)
    courier = get_courier(TEST_REDIS_URL)
    assert courier.flush()
    # What the worker of earlier tests may still add meanwhile is not this test's.
    before = store.read()
    # A 0 ms attempt after a 12 ms one: whole seconds must not break the float sum.
    for status_code, trigger, duration_ms in ((200, "scheduled", 12), (500, "scheduled", 0),
                                              (None, "manual", 1000)):  # fmt: skip
        store.add(attempt_increments(status_code, trigger, duration_ms))
    assert courier.flush()
    counts = {k: v - before.get(k, 0) for k, v in store.read().items()}
    assert counts["attempts|status_class=2xx|trigger=scheduled"] == 1
    assert counts["attempts|status_class=5xx|trigger=scheduled"] == 1
    assert counts["attempts|status_class=error|trigger=manual"] == 1
    assert counts["attempt_duration_count"] == 3
    assert counts["attempt_duration_sum"] == pytest.approx(1.012)
    assert counts["attempt_duration_bucket|le=0.05"] == 2
    assert counts["attempt_duration_bucket|le=1.0"] == 1
