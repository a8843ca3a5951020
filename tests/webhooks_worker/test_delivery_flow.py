"""End to end: an ingested event reaches a subscribed /v1 endpoint, signed, via a real worker."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from tests.conftest import PLATFORM
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
