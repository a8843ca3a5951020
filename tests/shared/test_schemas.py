"""Tests of the shared renderings: one schema per shape, reused by every face that shows it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import update

from shared.db import session_scope
from shared.models import Attempt, Delivery, Endpoint
from shared.schemas import AttemptEventSchema, EndpointSchema
from shared.services.deliveries import Outcome
from tests.conftest import PLATFORM, ROOT

MOMENT = datetime(2025, 12, 19, 10, 30, 0, 123456, tzinfo=UTC)


def _endpoint(**changes) -> Endpoint:
    values = dict(
        id="whk-abcdefghijklmno",
        organization_id="org-abcdefghijklmno",
        user_id=None,
        scope="account",
        url="https://hooks.example.com/a",
        name=None,
        description="d",
        event_types=["sandbox.created"],
        is_active=True,
        disabled_reason=None,
        payload_format="daytona",
        timeout_seconds=30,
        max_retries=3,
        category=None,
        created_at=MOMENT,
        updated_at=MOMENT,
    )
    values.update(changes)
    return Endpoint(**values)


def test_a_worker_renders_the_socket_endpoint_without_importing_flask():
    script = (
        "import sys, json\n"
        "from shared import notify\n"
        "from shared.models import Endpoint\n"
        "e = Endpoint(id='whk-1', url='https://x.test/', event_types=[], is_active=False)\n"
        "print(json.dumps(notify.EndpointSchema().dump(e)))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('flask', 'flask_smorest', 'webhooks_api')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    shape, imported = done.stdout.splitlines()
    assert json.loads(shape)["status"] == "disabled"
    assert imported == "[]"


def test_an_endpoint_renders_its_state_times_and_nulls_as_the_organization_service_shows_it():
    shown = EndpointSchema().dump(_endpoint(is_active=False, disabled_reason="gone"))
    assert list(shown) == [
        "id", "name", "url", "description", "eventTypes", "status", "disabledReason",
        "payloadFormat", "timeoutSeconds", "maxRetries", "ordering", "rateLimit", "scope",
        "category", "headers", "filter", "createdAt", "updatedAt", "resourceId", "expiresAt",
        "deletedReason", "failing",
    ]  # fmt: skip
    assert shown["status"] == "disabled"
    assert shown["disabledReason"] == "gone"
    assert shown["name"] is None and shown["category"] is None
    assert shown["headers"] == {}
    assert shown["createdAt"] == "2025-12-19T10:30:00.123Z"
    assert EndpointSchema().dump(_endpoint())["status"] == "active"
    assert shown["failing"] is None and shown["resourceId"] is None


def test_a_standing_failing_notice_renders_with_its_cause():
    shown = EndpointSchema().dump(
        _endpoint(
            failing_since=MOMENT,
            failing_notified_at=MOMENT,
            failing_status_code=503,
            failing_error="HTTP 503",
        )
    )
    assert shown["failing"] == {
        "since": "2025-12-19T10:30:00.123Z",
        "notifiedAt": "2025-12-19T10:30:00.123Z",
        "lastStatusCode": 503,
        "lastError": "HTTP 503",
    }


def test_the_live_attempt_event_names_its_fields_in_order_and_says_whether_more_tries_follow():
    attempt = Attempt(
        id="wha-abcdefghijklmno",
        delivery_id="whd-abcdefghijklmno",
        endpoint_id="whk-abcdefghijklmno",
        message_id="evt-abcdefghijklmno",
        organization_id="org-abcdefghijklmno",
        url="https://hooks.example.com/a",
        status="failed",
        status_code=500,
        duration_ms=12,
        trigger="manual",
        created_at=MOMENT,
    )
    retrying = Outcome(
        delivery_id=attempt.delivery_id,
        attempt=attempt,
        delivery_status="pending",
        event_type="sandbox.created",
        attempt_number=2,
    )
    data = AttemptEventSchema().dump(retrying)
    assert data == {
        "organizationId": "org-abcdefghijklmno",
        "endpointId": "whk-abcdefghijklmno",
        "messageId": "evt-abcdefghijklmno",
        "deliveryId": "whd-abcdefghijklmno",
        "eventType": "sandbox.created",
        "attemptNumber": 2,
        "statusCode": 500,
        "durationMs": 12,
        "trigger": "manual",
        "final": False,
        "timestamp": "2025-12-19T10:30:00.123Z",
    }
    assert list(data)[-2:] == ["final", "timestamp"]
    failed = Outcome(delivery_id=attempt.delivery_id, attempt=attempt, delivery_status="failed")
    assert AttemptEventSchema().dump(failed)["final"] is True
    # Without a delivery status (a test attempt), the task's own word decides.
    assert (
        AttemptEventSchema().dump(Outcome(delivery_id="d", attempt=attempt, final=True))["final"]
        is True
    )


V1_BODY = {"url": "https://hooks.example.com/b", "event_types": ["sandbox.created"]}


def test_a_created_endpoint_answers_the_endpoint_shape_plus_its_secret_on_every_face(client, org):
    base = f"/api/webhooks/organizations/{org.id}/endpoints"
    created = client.post(
        base, json={"url": "https://hooks.example.com/a", "eventTypes": ["sandbox.created"]},
        headers=org.headers,
    ).json  # fmt: skip
    fetched = client.get(f"{base}/{created['id']}", headers=org.headers).json
    assert list(created) == [*fetched, "secret"]
    assert {k: v for k, v in created.items() if k != "secret"} == fetched
    assert created["secret"].startswith("whsec_")

    v1 = client.post("/v1/webhooks", json=V1_BODY, headers=org.headers).json["data"]
    v1_fetched = client.get(f"/v1/webhooks/{v1['endpoint_id']}", headers=org.headers).json["data"]
    assert list(v1) == [*v1_fetched, "secret"]

    hook_body = {"url": "https://hooks.example.com/c", "events": ["kill"]}
    hook = client.post("/events/webhooks/sandboxes", json=hook_body, headers=org.headers).json
    assert hook == {
        "teamID": org.id,
        "url": "https://hooks.example.com/c",
        "events": ["kill"],
        "signatureSecret": hook["signatureSecret"],
    }
    assert hook["signatureSecret"].startswith("whsec_")


def test_a_deliverys_attempt_number_counts_manual_attempts_on_both_faces(client, org):
    created = client.post("/v1/webhooks", json=V1_BODY, headers=org.headers)
    endpoint_id = created.json["data"]["endpoint_id"]
    message_id = client.post(
        "/api/internal/events",
        json={"event": "sandbox.created", "organizationId": org.id, "id": "sbx-1",
              "state": "started", "class": "small", "createdAt": "2025-12-19T10:30:00.000Z"},
        headers=PLATFORM,
    ).json["messages"][0]["id"]  # fmt: skip
    with session_scope() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.message_id == message_id)
            .values(attempt_count=2, extra_attempt_count=1)
        )
    v1 = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=org.headers).json
    assert [d["attempt_number"] for d in v1["data"]["deliveries"]] == [3]
    detail = client.get(
        f"/api/webhooks/organizations/{org.id}/messages/{message_id}", headers=org.headers
    ).json
    assert [d["attemptNumber"] for d in detail["deliveries"]] == [3]
