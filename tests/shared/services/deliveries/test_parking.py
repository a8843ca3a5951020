"""Ordered deliveries made parked at fan-out, and let go one by one (docs/api.md §11.3).

A fan-out makes the first pending delivery of each (endpoint, resource) due and every
later one parked (no due time, no task), marking the one it waits behind; the end of a
marked delivery lets the next one go. Run on both storage backends.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import queue
from shared.config import get_settings
from shared.crypto import encrypt, new_signing_secret
from shared.http import DeliveryClient
from shared.models import Delivery, Endpoint, Message, Organization, new_id, utcnow
from shared.payloads import format_timestamp
from shared.services import deliveries, fanout, ingest_statements, retention
from shared.services.deliveries import ordering
from shared.transitions import Skip


@pytest.fixture
def ordered(factory: sessionmaker[Session], receiver) -> tuple[str, str, str]:
    """An organization with an ordered and an unordered endpoint: (org, ordered, plain)."""
    now = utcnow()
    org_id = new_id("org")
    ids = [new_id("whk"), new_id("whk")]
    with factory() as session:
        session.add(Organization(id=org_id, name="Acme", created_at=now))
        session.flush()
        for endpoint_id, ordering in zip(ids, ("resource", "none"), strict=True):
            session.add(
                Endpoint(
                    id=endpoint_id, organization_id=org_id, scope="account", url=receiver.url,
                    event_types=["sandbox.created"], payload_format="envelope",
                    timeout_seconds=5, max_retries=3, ordering=ordering,
                    secret_encrypted=encrypt(new_signing_secret()), created_at=now, updated_at=now,
                )
            )  # fmt: skip
        session.commit()
    return org_id, ids[0], ids[1]


def _fan_out(factory, org_id: str, sandboxes: list[str]) -> None:
    """One fan-out of one message per sandbox given, in that order (no broker here)."""
    now = utcnow()
    with factory() as session:
        messages = []
        for sandbox in sandboxes:
            message = Message(
                id=new_id("evt"), organization_id=org_id, event_type="sandbox.created",
                payload={"id": sandbox, "organizationId": org_id, "state": "started"},
                timestamp=format_timestamp(now), custom=False, test=False,
                fanned_out_at=now, created_at=now,
            )  # fmt: skip
            session.add(message)
            messages.append(message)
        session.flush()
        targets = session.execute(
            select(*ingest_statements.TARGET_COLUMNS).where(Endpoint.organization_id == org_id)
        ).all()
        fanout.create_deliveries(session, messages, {org_id: targets}, now)
        session.commit()


def _rows(factory, endpoint_id: str) -> dict[str, list[tuple]]:
    """By sandbox, in sequence order: (sequence, status, due?, successor_waits, id)."""
    with factory() as session:
        found = session.execute(
            select(Delivery, Message.payload)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.endpoint_id == endpoint_id)
            .order_by(Delivery.sequence, Delivery.created_at)
        ).all()
    by_sandbox: dict[str, list[tuple]] = {}
    for delivery, payload in found:
        by_sandbox.setdefault(payload["id"], []).append(
            (
                delivery.sequence,
                delivery.status,
                delivery.next_attempt_at is not None,
                delivery.successor_waits,
                delivery.id,
            )
        )
    return by_sandbox


def _shape(rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    return {sandbox: [row[:4] for row in runs] for sandbox, runs in rows.items()}


def _deliver(factory, delivery_id: str) -> None:
    client = DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )
    outcome = deliveries.run_scheduled_try(factory, client, delivery_id=delivery_id, try_number=1)
    assert outcome.delivery_status == "delivered", outcome


def test_later_deliveries_of_a_resource_are_made_parked_and_go_one_by_one(
    factory, ordered, no_broker
):
    org_id, endpoint_id, plain_id = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a", "sbx-b"])
    _fan_out(factory, org_id, ["sbx-a", "sbx-b", "sbx-c"])

    # Each sandbox's first delivery is due; the others are parked, each behind a marked one.
    assert _shape(_rows(factory, endpoint_id)) == {
        "sbx-a": [
            (1, "pending", True, True),
            (2, "pending", False, True),
            (3, "pending", False, False),
        ],
        "sbx-b": [(1, "pending", True, True), (2, "pending", False, False)],
        "sbx-c": [(1, "pending", True, False)],
    }
    plain = _rows(factory, plain_id)
    assert all(row[:4] == (None, "pending", True, False) for runs in plain.values() for row in runs)

    # The end of a marked delivery lets the next one of its sandbox go, and only that one.
    rows = _rows(factory, endpoint_id)
    _deliver(factory, rows["sbx-a"][0][4])
    # (Its release cleared the ended one's mark: nothing is owed.)
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [
        (1, "delivered", False, False),
        (2, "pending", True, True),
        (3, "pending", False, False),
    ]
    _deliver(factory, rows["sbx-a"][1][4])
    _deliver(factory, rows["sbx-b"][0][4])
    after = _shape(_rows(factory, endpoint_id))
    assert after["sbx-a"][2] == (3, "pending", True, False)
    assert after["sbx-b"][1] == (2, "pending", True, False)

    # An unmarked one ends with nothing behind it; the next event of its sandbox is due at once.
    _deliver(factory, rows["sbx-c"][0][4])
    _fan_out(factory, org_id, ["sbx-c"])
    assert _shape(_rows(factory, endpoint_id))["sbx-c"] == [
        (1, "delivered", False, False),
        (2, "pending", True, False),
    ]


def test_a_delivery_made_behind_one_that_ended_out_of_turn_is_held_at_its_claim(
    factory, ordered, no_broker
):
    org_id, endpoint_id, _ = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a"])
    head, second = (row[4] for row in _rows(factory, endpoint_id)["sbx-a"])
    # The one before the new delivery ended meanwhile (a manual resend delivered it out of
    # turn): the new one is made due, and its claim finds the head still pending.
    with factory() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == second)
            .values(status="delivered", next_attempt_at=None, delivered_at=utcnow())
        )
        session.commit()
    _fan_out(factory, org_id, ["sbx-a"])
    third = _rows(factory, endpoint_id)["sbx-a"][2][4]
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [
        (1, "pending", True, True),
        (2, "delivered", False, False),
        (3, "pending", True, False),
    ]
    client = DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )
    held = deliveries.run_scheduled_try(factory, client, delivery_id=third, try_number=1)
    assert held.skipped == Skip.HELD
    assert _shape(_rows(factory, endpoint_id))["sbx-a"][2] == (3, "pending", False, False)
    # The head was marked when the second was made: its end lets the third go.
    _deliver(factory, head)
    assert _shape(_rows(factory, endpoint_id))["sbx-a"][2] == (3, "pending", True, False)


def _end_without_release(factory, delivery_id: str, *, ago: timedelta) -> None:
    """The delivery's attempt recorded as delivered ``ago``, by a worker that died right after."""
    ended = utcnow() - ago
    with factory() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status="delivered", next_attempt_at=None, delivered_at=ended, updated_at=ended)
        )
        session.commit()


def test_the_sweep_makes_the_release_a_dead_worker_owed(factory, ordered, no_broker):
    org_id, endpoint_id, _ = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a", "sbx-a"])
    head = _rows(factory, endpoint_id)["sbx-a"][0][4]
    # Just ended: its worker is about to release, the sweep leaves it alone.
    _end_without_release(factory, head, ago=timedelta(seconds=1))
    with factory() as session:
        assert deliveries.sweep_due(session)["released"] == 0
        session.commit()
    assert _shape(_rows(factory, endpoint_id))["sbx-a"][1] == (2, "pending", False, True)
    _end_without_release(factory, head, ago=ordering.OWED_AFTER + timedelta(seconds=1))
    with factory() as session:
        assert deliveries.sweep_due(session)["released"] == 1
        session.commit()
    # The next one goes, the one after it still waits; the ended one's mark is cleared.
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [
        (1, "delivered", False, False),
        (2, "pending", True, True),
        (3, "pending", False, False),
    ]
    with factory() as session:
        assert deliveries.sweep_due(session)["released"] == 0


def test_the_hourly_look_lets_go_what_waits_behind_a_purged_delivery(factory, ordered, no_broker):
    org_id, endpoint_id, _ = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a"])
    head, waiting = (row[4] for row in _rows(factory, endpoint_id)["sbx-a"])
    with factory() as session:
        session.execute(delete(Delivery).where(Delivery.id == head))
        session.commit()
    # Nothing ended, so the sweep owes nothing; retention's look finds it.
    with factory() as session:
        assert deliveries.sweep_due(session)["released"] == 0
        session.commit()
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [(2, "pending", False, False)]
    assert retention.purge_expired(factory)["released"] == 1
    assert _rows(factory, endpoint_id)["sbx-a"][0][2:4] == (True, False)
    assert _rows(factory, endpoint_id)["sbx-a"][0][4] == waiting


def test_a_head_delivered_on_its_retry_lets_the_next_go(factory, ordered, receiver, no_broker):
    org_id, endpoint_id, _ = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a"])
    head = _rows(factory, endpoint_id)["sbx-a"][0][4]
    client = DeliveryClient(
        allow=get_settings().allow_private_targets, user_agent=deliveries.user_agent()
    )
    receiver.reply(500)
    failed = deliveries.run_scheduled_try(factory, client, delivery_id=head, try_number=1)
    assert failed.delivery_status == "pending"
    # A failed try is no end: the next one stays parked, the head keeps its mark.
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [
        (1, "pending", True, True),
        (2, "pending", False, False),
    ]
    receiver.reply(200)
    with factory() as session:  # its retry made due now
        session.execute(
            update(Delivery).where(Delivery.id == head).values(next_attempt_at=utcnow())
        )
        session.commit()
    outcome = deliveries.run_scheduled_try(factory, client, delivery_id=head, try_number=2)
    assert outcome.delivery_status == "delivered", outcome
    assert _shape(_rows(factory, endpoint_id))["sbx-a"] == [
        (1, "delivered", False, False),
        (2, "pending", True, False),
    ]


def test_the_next_delivery_let_go_is_sent_in_its_organizations_lane(factory, ordered, no_broker):
    org_id, endpoint_id, _ = ordered
    _fan_out(factory, org_id, ["sbx-a", "sbx-a"])
    head, second = (row[4] for row in _rows(factory, endpoint_id)["sbx-a"])
    sender = queue._sender
    sent: list[tuple] = []
    queue.configure(
        lambda task, args, countdown, eta, organization: sent.append((task, args, organization))
    )
    try:
        _deliver(factory, head)
    finally:
        queue.configure(sender)
    assert sent == [("webhooks.deliver", (second, 1), org_id)]
