"""End to end: an ingested event reaches a subscribed /v1 endpoint, signed, via a real worker."""

from __future__ import annotations

import json
import time

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from shared.db import session_scope
from shared.models import Attempt
from tests.conftest import PLATFORM
from tests.support.receiver import Reply
from tests.support.waiting import wait_until


def _create_v1(client, org, url, event_types, **extra):
    resp = client.post(
        "/v1/webhooks", json={"url": url, "event_types": event_types, **extra}, headers=org.headers
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]


def test_resumed_event_reaches_resumed_subscriber_signed(client, org, make_receiver, worker):
    resumed, stopped = make_receiver(), make_receiver()
    endpoint = _create_v1(client, org, resumed.url + "/hook", ["sandbox.resumed"])
    _create_v1(client, org, stopped.url + "/hook", ["sandbox.stopped"])

    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": "sbx-1",
            "oldState": "paused",
            "newState": "started",
            "updatedAt": "2025-12-19T10:30:00.000Z",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202
    message_id = resp.json["messages"][0]["id"]

    got = resumed.wait_for(1)[0]
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert got.headers["webhook-id"] == message_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("sandbox-webhooks/")
    assert payload["id"] == message_id
    assert payload["type"] == "sandbox.resumed"
    assert payload["data"]["sandbox_id"] == "sbx-1"
    assert payload["data"]["status"] == "running"
    assert json.loads(got.body)["data"]["old_state"] == "paused"

    def delivered():
        rows = client.get(
            f"/v1/webhooks/{endpoint['endpoint_id']}/deliveries", headers=org.headers
        ).json["data"]["deliveries"]
        return rows if rows and rows[0]["status"] == "delivered" else None

    rows = wait_until(delivered)
    assert rows[0]["event_id"] == message_id
    assert rows[0]["http_status_code"] == 200
    assert rows[0]["attempt_number"] == 1
    assert stopped.requests == []


def _ingest(client, org, **fields):
    event = {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": "sbx-1",
        "oldState": "started",
        "newState": "stopped",
        **fields,
    }
    resp = client.post("/api/internal/events", json=event, headers=PLATFORM)
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _deliveries(client, org, endpoint_id):
    return client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=org.headers).json["data"][
        "deliveries"
    ]


def _settled(client, org, endpoint_id, status):
    def check():
        rows = _deliveries(client, org, endpoint_id)
        return rows if rows and rows[0]["status"] == status else None

    return wait_until(check, timeout=30)


def test_failing_receiver_gets_max_retries_plus_one_attempts_then_failed(
    client, org, receiver, worker
):
    receiver.reply(500, b"boom")
    endpoint = _create_v1(client, org, receiver.url, ["sandbox.stopped"], max_retries=2)
    message_id = _ingest(client, org)

    rows = _settled(client, org, endpoint["endpoint_id"], "failed")
    got = receiver.requests
    assert len(got) == 3
    assert {r.headers["webhook-id"] for r in got} == {message_id}
    # The shortened schedule is 1 s then 2 s, each with up to 20% jitter added.
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert 0.9 <= gaps[0] <= 1.2 + 0.8
    assert 1.9 <= gaps[1] <= 2.4 + 0.8
    row = rows[0]
    assert row["attempt_number"] == 3 and row["max_attempts"] == 3
    assert row["http_status_code"] == 500 and row["error_message"] == "HTTP 500"
    assert row["failed_at"] and row["next_retry_at"] is None and row["delivered_at"] is None
    stats = client.get(f"/v1/webhooks/{endpoint['endpoint_id']}", headers=org.headers).json["data"]
    assert (stats["total_deliveries"], stats["failed_deliveries"]) == (1, 1)
    assert stats["successful_deliveries"] == 0 and stats["last_failure_at"]
    time.sleep(2.5)
    assert len(receiver.requests) == 3


def test_recovering_receiver_is_delivered_on_retry(client, org, receiver, worker):
    answers = iter([Reply(503), Reply(200, b"thanks")])
    receiver.responder = lambda _r: next(answers)
    endpoint = _create_v1(client, org, receiver.url, ["sandbox.stopped"])
    _ingest(client, org)
    row = _settled(client, org, endpoint["endpoint_id"], "delivered")[0]
    assert row["attempt_number"] == 2 and row["http_status_code"] == 200
    assert row["delivered_at"] and row["error_message"] is None
    stats = client.get(f"/v1/webhooks/{endpoint['endpoint_id']}", headers=org.headers).json["data"]
    assert (stats["successful_deliveries"], stats["failed_deliveries"]) == (1, 0)


def test_retry_after_is_honoured(client, org, receiver, worker):
    answers = iter([Reply(429, headers={"Retry-After": "3"}), Reply(200)])
    receiver.responder = lambda _r: next(answers)
    endpoint = _create_v1(client, org, receiver.url, ["sandbox.stopped"])
    _ingest(client, org)
    _settled(client, org, endpoint["endpoint_id"], "delivered")
    first, second = receiver.requests
    assert second.at - first.at >= 2.9


def test_receiver_that_never_answers_is_cut_at_timeout(client, org, receiver, worker):
    receiver.reply(200, delay=30)
    endpoint = _create_v1(
        client, org, receiver.url, ["sandbox.stopped"], timeout_seconds=5, max_retries=0
    )
    message_id = _ingest(client, org)
    _settled(client, org, endpoint["endpoint_id"], "failed")
    attempts = _attempts(message_id)
    assert len(attempts) == 1
    assert attempts[0].status == "failed" and attempts[0].status_code is None
    assert "timeout" in attempts[0].error
    assert 4500 <= attempts[0].duration_ms <= 6500


def test_redirect_is_not_followed(client, org, make_receiver, worker):
    first, target = make_receiver(), make_receiver()
    first.reply(307, b"", headers={"Location": target.url + "/elsewhere"})
    endpoint = _create_v1(client, org, first.url, ["sandbox.stopped"], max_retries=0)
    message_id = _ingest(client, org)
    row = _settled(client, org, endpoint["endpoint_id"], "failed")[0]
    assert row["http_status_code"] == 307
    assert len(first.requests) == 1 and target.requests == []
    assert _attempts(message_id)[0].status == "failed"


def test_gone_disables_endpoint_and_cancels_its_pending_deliveries(client, org, receiver, worker):
    answers = iter([Reply(503), Reply(410)] + [Reply(503)] * 10)
    receiver.responder = lambda _r: next(answers)
    endpoint = _create_v1(client, org, receiver.url, ["sandbox.stopped"], max_retries=5)
    _ingest(client, org)
    receiver.wait_for(1)
    _ingest(client, org, id="sbx-2")
    wait_until(
        lambda: (
            not client.get(f"/v1/webhooks/{endpoint['endpoint_id']}", headers=org.headers).json[
                "data"
            ]["is_active"]
        ),
        timeout=30,
    )
    statuses = sorted(r["status"] for r in _deliveries(client, org, endpoint["endpoint_id"]))
    assert statuses == ["cancelled", "failed"]
    time.sleep(2.5)
    assert len(receiver.requests) == 2


def _attempts(message_id):
    with session_scope() as session:
        return list(
            session.scalars(
                select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.created_at)
            )
        )


def test_one_event_reaches_every_face_in_its_own_format_and_no_other_org(
    client, org, make_org, make_receiver, worker
):
    v1, daytona, team, stranger = (make_receiver() for _ in range(4))
    v1_endpoint = _create_v1(client, org, v1.url, ["sandbox.paused"])
    resp = client.post(
        f"/api/webhooks/organizations/{org.id}/endpoints",
        json={"url": daytona.url, "eventTypes": ["sandbox.*"], "name": "all sandbox events"},
        headers=org.headers,
    )
    assert resp.status_code == 201
    daytona_secret = resp.json["secret"]
    resp = client.post(
        "/events/webhooks/sandboxes",
        json={"url": team.url, "events": ["pause", "kill"]},
        headers=org.headers,
    )
    assert resp.status_code == 201
    team_secret = resp.json["signatureSecret"]
    other = make_org("Other")
    _create_v1(client, other, stranger.url, ["sandbox.paused"])

    message_id = _ingest(
        client,
        org,
        id="sbx-7",
        oldState="started",
        newState="paused",
        updatedAt="2026-01-01T00:00:00.000Z",
        templateId="tpl-1",
        metadata={"owner": "ci"},
    )
    envelope = Webhook(v1_endpoint["secret"]).verify(*_one(v1))
    flat = Webhook(daytona_secret).verify(*_one(daytona))
    e2b = Webhook(team_secret).verify(*_one(team))
    ids = {r.headers["webhook-id"] for r in (v1.requests + daytona.requests + team.requests)}
    assert ids == {message_id}

    assert envelope["type"] == "sandbox.paused" and envelope["id"] == message_id
    assert envelope["data"]["sandbox_id"] == "sbx-7"
    assert envelope["data"]["status"] == "paused"
    assert envelope["data"]["organization_id"] == org.id
    assert flat["event"] == "sandbox.state.updated"
    assert flat["id"] == "sbx-7" and flat["newState"] == "paused"
    assert flat["organizationId"] == org.id and flat["metadata"] == {"owner": "ci"}
    assert e2b["eventLabel"] == "pause" and e2b["eventCategory"] == "lifecycle"
    assert e2b["sandboxId"] == "sbx-7" and e2b["sandboxTeamId"] == org.id
    assert e2b["sandboxTemplateId"] == "tpl-1" and e2b["sandboxBuildId"] == ""
    assert e2b["eventData"] == {"sandbox_metadata": {"owner": "ci"}}
    time.sleep(1)
    assert stranger.requests == []


def _one(receiver):
    got = receiver.wait_for(1)[0]
    return got.body, got.headers
