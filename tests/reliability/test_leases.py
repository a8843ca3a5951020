"""Claims of tries: renewed while a live worker posts, free soon after a worker dies.

The service code runs here directly (as the worker runs it) on the test database, with
a real receiver that answers slowly.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import select, update

from shared import queue
from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.http import DeliveryClient
from shared.models import Attempt, Delivery, utcnow
from shared.services import deliveries
from tests.support.unqueued import accept_without_broker


def _pending_delivery(client, org, url: str, timeout_seconds: int) -> str:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.stopped"], "timeout_seconds": timeout_seconds},
        headers=org.headers,
    )
    assert resp.status_code == 201
    # Drive the tries here, with no broker.
    return accept_without_broker(org.id)


def _lease(delivery_id: str):
    with session_scope() as session:
        return session.get(Delivery, delivery_id).lease_until


def test_a_live_workers_claim_is_renewed_past_the_lease_length(client, org, receiver):
    # The answer takes longer than a lease renewal period; the endpoint allows 30 s.
    receiver.reply(200, delay=deliveries.LEASE_RENEW_EVERY + 1.5)
    delivery_id = _pending_delivery(client, org, receiver.url, timeout_seconds=30)
    http = DeliveryClient(allow=get_settings().allow_private_targets, user_agent="test")
    outcome = []
    started = utcnow()
    worker = threading.Thread(
        target=lambda: outcome.append(
            deliveries.run_scheduled_try(
                get_sessionmaker(), http, delivery_id=delivery_id, try_number=1
            )
        )
    )
    worker.start()
    receiver.wait_for(1)
    first = _lease(delivery_id)
    assert first <= started + timedelta(seconds=deliveries.LEASE_SECONDS + 1)
    time.sleep(deliveries.LEASE_RENEW_EVERY + 0.7)
    renewed = _lease(delivery_id)
    assert renewed > first + timedelta(seconds=deliveries.LEASE_RENEW_EVERY - 1)
    # While the claim is held, the sweep hands nothing out and a second run does nothing.
    with session_scope() as session:
        assert deliveries.sweep_due(session)["deliveries"] == 0
    again = deliveries.run_scheduled_try(
        get_sessionmaker(), http, delivery_id=delivery_id, try_number=1
    )
    assert again.skipped == "leased"
    worker.join(30)
    assert outcome[0].delivery_status == "delivered"
    assert len(receiver.requests) == 1
    with session_scope() as session:
        recorded = session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id))
        assert len(recorded.all()) == 1
        assert session.get(Delivery, delivery_id).lease_until is None


def test_renewal_leaves_a_try_recorded_meanwhile_alone(client, org, receiver):
    delivery_id = _pending_delivery(client, org, receiver.url, timeout_seconds=30)
    factory = get_sessionmaker()
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(attempt_count=1, lease_until=None, next_attempt_at=utcnow())
        )
    # A late renewal of try 1 must not put a claim on try 2.
    assert deliveries.renew_leases(factory, [(delivery_id, 1)]) == 0
    assert _lease(delivery_id) is None
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(lease_until=utcnow() + timedelta(seconds=1))
        )
    assert deliveries.renew_leases(factory, [(delivery_id, 2)]) == 1
    assert _lease(delivery_id) > utcnow() + timedelta(seconds=deliveries.LEASE_SECONDS - 2)


def test_a_dead_workers_claim_frees_the_try_for_the_sweep(client, org, receiver):
    delivery_id = _pending_delivery(client, org, receiver.url, timeout_seconds=300)
    # A worker claimed try 1 and died: nothing renews the claim after this.
    claimed_at = utcnow() - timedelta(seconds=deliveries.LEASE_SECONDS + 1)
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(
                lease_until=claimed_at + timedelta(seconds=deliveries.LEASE_SECONDS),
                next_attempt_at=claimed_at,
                enqueued_at=claimed_at,
            )
        )
    sender = queue._sender
    queue.configure(None)
    try:
        with session_scope() as session:
            # Freed LEASE_SECONDS after the claim, not after the endpoint's 300 s timeout.
            assert deliveries.sweep_due(session)["deliveries"] == 1
    finally:
        queue.configure(sender)
