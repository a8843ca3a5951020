"""Auto-disable after continuous failure, re-enabling, and recovery of failed deliveries.

Real failures from the real worker process to a loopback receiver; beat's task runs
here as beat would run it. The only thing faked is the passing of 120 hours: the start
of the failure streak is moved back in the database.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import select, update

from shared.config import get_settings
from shared.db import session_scope
from shared.models import Attempt, Delivery, Endpoint, utcnow
from shared.payloads import format_timestamp
from tests.conftest import PLATFORM
from tests.support.receiver import Reply
from tests.support.waiting import wait_until
from webhooks_worker import tasks


def _endpoint(client, org, url: str, **extra) -> str:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.stopped"], **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


def _report(client, org, n: int) -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": f"sbx-{n}",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202
    return resp.json["messages"][0]["id"]


def _endpoint_row(endpoint_id: str) -> Endpoint:
    with session_scope() as session:
        return session.get(Endpoint, endpoint_id)


def _statuses(endpoint_id: str) -> list[str]:
    with session_scope() as session:
        return sorted(
            session.scalars(select(Delivery.status).where(Delivery.endpoint_id == endpoint_id))
        )


def test_endpoint_failing_for_the_window_is_disabled_then_re_enabled(
    client, org, receiver, make_receiver, worker
):
    receiver.reply(500, b"down")
    failing = _endpoint(client, org, receiver.url, max_retries=10)
    # Failing too, but for less than the window: it stays active.
    young_receiver = make_receiver()
    young_receiver.reply(500)
    young = _endpoint(client, org, young_receiver.url, max_retries=10)
    _report(client, org, 1)
    _report(client, org, 2)
    wait_until(lambda: _endpoint_row(failing).failing_since and _endpoint_row(young).failing_since)
    hours = get_settings().disable_after_hours
    with session_scope() as session:
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == failing)
            .values(failing_since=utcnow() - timedelta(hours=hours, minutes=1))
        )
        session.execute(
            update(Endpoint)
            .where(Endpoint.id == young)
            .values(failing_since=utcnow() - timedelta(hours=hours, minutes=-5))
        )

    assert tasks.auto_disable() == 1
    assert tasks.auto_disable() == 0  # run twice (two beats): nothing more
    reason = f"Disabled after failing continuously for {hours:g} hours"
    row = _endpoint_row(failing)
    assert row.is_active is False and row.disabled_reason == reason
    assert _endpoint_row(young).is_active is True
    shown = client.get(f"/v1/webhooks/{failing}", headers=org.headers).json["data"]
    assert shown["is_active"] is False
    daytona = client.get(
        f"/api/webhooks/organizations/{org.id}/endpoints/{failing}", headers=org.headers
    ).json
    assert daytona["status"] == "disabled" and daytona["disabledReason"] == reason
    # Its pending deliveries are cancelled with the reason; nothing more is sent.
    assert _statuses(failing) == ["cancelled", "cancelled"]
    with session_scope() as session:
        errors = set(
            session.scalars(select(Delivery.error_message).where(Delivery.endpoint_id == failing))
        )
    assert errors == {reason}
    sent = len(receiver.requests)
    time.sleep(3)  # longer than the test retry schedule's waits
    assert len(receiver.requests) == sent
    assert (
        client.post(
            f"/v1/webhooks/{failing}/recover",
            json={"since": "2020-01-01T00:00:00Z"},
            headers=org.headers,
        ).status_code
        == 409
    )

    # Re-enabled through /v1: active again, the failure clock reset, deliveries resume.
    receiver.reply(200)
    resp = client.put(f"/v1/webhooks/{failing}", json={"is_active": True}, headers=org.headers)
    assert resp.status_code == 200 and resp.json["data"]["is_active"] is True
    row = _endpoint_row(failing)
    assert row.disabled_reason is None and row.failing_since is None
    message_id = _report(client, org, 3)
    wait_until(
        lambda: any(r.headers["webhook-id"] == message_id for r in receiver.requests), timeout=20
    )
    assert tasks.auto_disable() == 0


def test_recover_resends_each_failed_delivery_in_the_window_once(client, org, receiver, worker):
    # Failing for everything but sbx-ok, with no retries: each failure is final.
    receiver.responder = lambda got: Reply(200 if b'"sbx-ok"' in got.body else 500)
    endpoint_id = _endpoint(client, org, receiver.url, max_retries=0)
    since = format_timestamp(utcnow() - timedelta(seconds=1))
    first = [_report(client, org, 1), _report(client, org, 2)]
    delivered = _report(client, org, "ok")
    wait_until(lambda: _statuses(endpoint_id) == ["delivered", "failed", "failed"])
    time.sleep(0.05)
    middle = format_timestamp(utcnow())
    later = _report(client, org, 3)
    wait_until(lambda: _statuses(endpoint_id) == ["delivered", "failed", "failed", "failed"])
    receiver.reply(200)

    def recover(**window) -> int:
        resp = client.post(f"/v1/webhooks/{endpoint_id}/recover", json=window, headers=org.headers)
        assert resp.status_code == 202, resp.json
        assert resp.json["success"] is True
        return resp.json["data"]["recovered"]

    assert recover(since=since, until=middle) == 2
    wait_until(lambda: _statuses(endpoint_id).count("delivered") == 3)
    assert recover(since=since) == 1  # only `later` is still failed
    wait_until(lambda: _statuses(endpoint_id) == ["delivered"] * 4)
    assert recover(since=since) == 0
    time.sleep(1)

    received = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert received == {first[0]: 2, first[1]: 2, later: 2, delivered: 1}
    with session_scope() as session:
        manual = session.scalars(
            select(Attempt).where(Attempt.endpoint_id == endpoint_id, Attempt.trigger == "manual")
        ).all()
    assert sorted(a.message_id for a in manual) == sorted([*first, later])
    assert all(a.status == "success" and a.try_number is None for a in manual)
    # The recovered payloads are the original messages, unchanged.
    bodies = {}
    for request in receiver.requests:
        bodies.setdefault(request.headers["webhook-id"], set()).add(
            json.dumps(json.loads(request.body)["data"], sort_keys=True)
        )
    assert all(len(versions) == 1 for versions in bodies.values())
