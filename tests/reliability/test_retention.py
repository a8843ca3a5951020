"""Retention purge (docs/api.md §5): old messages and attempts go, in batches; recent ones stay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.models import Attempt, Delivery, Message, new_id, utcnow
from shared.services import retention
from webhooks_worker import tasks

OLD_MESSAGES = 2500  # more than two purge batches


def _seed(org_id: str, endpoint_id: str) -> dict[str, list[str]]:
    """Old and recent messages, each with a delivery and an attempt; old attempts of a
    recent message too (a long-retried delivery)."""
    now = utcnow()
    old = now - timedelta(days=get_settings().retention_days, hours=1)
    recent = now - timedelta(days=get_settings().retention_days - 1)
    ids: dict[str, list[str]] = {"old": [], "recent": [], "old_attempts": [], "kept_attempts": []}
    messages, deliveries, attempts = [], [], []
    for index in range(OLD_MESSAGES + 5):
        when = old if index < OLD_MESSAGES else recent
        message_id, delivery_id, attempt_id = new_id("evt"), new_id("whd"), new_id("atm")
        ids["old" if when is old else "recent"].append(message_id)
        messages.append(
            {
                "id": message_id,
                "organization_id": org_id,
                "event_type": "sandbox.created",
                "payload": {"id": f"sbx-{index}", "organizationId": org_id},
                "timestamp": "2026-01-01T00:00:00.000Z",
                "created_at": when,
                "fanned_out_at": when,
            }
        )
        deliveries.append(
            {
                "id": delivery_id,
                "message_id": message_id,
                "endpoint_id": endpoint_id,
                "organization_id": org_id,
                "event_type": "sandbox.created",
                "status": "delivered",
                "attempt_count": 1,
                "extra_attempt_count": 0,
                "max_attempts": 4,
                "created_at": when,
                "updated_at": when,
            }
        )
        for attempt_when, try_number in ((when, 1), (old, 2)) if when is recent else ((when, 1),):
            attempt_id = new_id("atm")
            kind = "old_attempts" if attempt_when is old else "kept_attempts"
            ids[kind].append(attempt_id)
            attempts.append(
                {
                    "id": attempt_id,
                    "delivery_id": delivery_id,
                    "endpoint_id": endpoint_id,
                    "message_id": message_id,
                    "organization_id": org_id,
                    "url": "http://127.0.0.1:9/hook",
                    "status": "success",
                    "status_code": 200,
                    "duration_ms": 5,
                    "trigger": "scheduled",
                    "try_number": try_number,
                    "created_at": attempt_when,
                }
            )
    with session_scope() as session:
        session.execute(insert(Message), messages)
        session.execute(insert(Delivery), deliveries)
        session.execute(insert(Attempt), attempts)
    return ids


def _count(model, ids: list[str]) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.id.in_(ids)))


def test_purge_removes_expired_rows_in_batches_and_keeps_recent_ones(client, org):
    endpoint_id = client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["sandbox.created"]},
        headers=org.headers,
    ).json["data"]["endpoint_id"]
    ids = _seed(org.id, endpoint_id)

    # One batch is one short transaction of at most PURGE_BATCH rows.
    first = retention.purge_expired(get_sessionmaker(), max_batches=1)
    assert first == {
        "attempts": retention.PURGE_BATCH,
        "messages": retention.PURGE_BATCH,
        "sequences": 0,
        "released": 0,
    }
    assert _count(Message, ids["old"]) == OLD_MESSAGES - retention.PURGE_BATCH

    rest = tasks.purge()  # beat's task, as beat runs it
    assert rest["messages"] == OLD_MESSAGES - retention.PURGE_BATCH
    assert _count(Message, ids["old"]) == 0
    assert _count(Attempt, ids["old_attempts"]) == 0
    with session_scope() as session:
        orphans = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.message_id.in_(ids["old"]))
        )
    assert orphans == 0
    # Recent messages keep their deliveries and their recent attempts.
    assert _count(Message, ids["recent"]) == 5
    assert _count(Attempt, ids["kept_attempts"]) == 5
    with session_scope() as session:
        kept = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.message_id.in_(ids["recent"]))
        )
    assert kept == 5
    # Run twice: nothing more.
    assert tasks.purge() == {"messages": 0, "attempts": 0, "sequences": 0, "released": 0}
