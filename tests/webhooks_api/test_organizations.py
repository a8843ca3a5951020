"""The Daytona-style /api/webhooks face (docs/api.md §6.2), end to end through a real worker."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.db import session_scope
from shared.models import Endpoint
from shared.services.endpoint_secrets import MAX_SIGNING_SECRETS
from tests.conftest import JWT_SECRET, PLATFORM
from tests.support.daytona_examples import DAYTONA_DOC_EXAMPLES
from tests.support.outage import without_database
from tests.support.waiting import wait_until

API = "/api/webhooks"
BASE = f"{API}/organizations"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ENDPOINT_KEYS = {
    "id",
    "name",
    "url",
    "description",
    "eventTypes",
    "status",
    "disabledReason",
    "payloadFormat",
    "timeoutSeconds",
    "maxRetries",
    "ordering",
    "rateLimit",
    "scope",
    "category",
    "headers",
    "filter",
    "createdAt",
    "updatedAt",
    "resourceId",
    "expiresAt",
    "deletedReason",
    "failing",
}
MESSAGE_KEYS = {"id", "eventType", "eventId", "timestamp", "test", "payload"}
DELIVERY_KEYS = {
    "id",
    "endpointId",
    "status",
    "attemptNumber",
    "maxAttempts",
    "nextRetryAt",
    "deliveredAt",
    "failedAt",
    "httpStatusCode",
    "errorMessage",
}
ATTEMPT_KEYS = {
    "id",
    "deliveryId",
    "endpointId",
    "messageId",
    "url",
    "status",
    "statusCode",
    "durationMs",
    "trigger",
    "responseBody",
    "error",
    "timestamp",
}

DOC_EXAMPLES = DAYTONA_DOC_EXAMPLES


def _for_org(example: dict, org_id: str) -> dict:
    return {**example, "organizationId": org_id}


def _create(client, org, url, event_types, expect=201, **extra) -> dict:
    resp = client.post(
        f"{BASE}/{org.id}/endpoints",
        json={"url": url, "eventTypes": event_types, **extra},
        headers=org.headers,
    )
    assert resp.status_code == expect, resp.json
    return resp.json


def _patch(client, org, endpoint_id, body, expect=200) -> dict:
    resp = client.patch(f"{BASE}/{org.id}/endpoints/{endpoint_id}", json=body, headers=org.headers)
    assert resp.status_code == expect, resp.json
    return resp.json


def _ingest(client, event: dict) -> str:
    resp = client.post("/api/internal/events", json=event, headers=PLATFORM)
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _sandbox_event(org_id: str, sandbox_id: str = "sbx-1", **extra) -> dict:
    return {
        "event": "sandbox.created",
        "organizationId": org_id,
        "id": sandbox_id,
        "state": "started",
        "class": "small",
        "createdAt": "2025-12-19T10:30:00.000Z",
        **extra,
    }


def _attempts(client, org, message_id) -> list[dict]:
    resp = client.get(f"{BASE}/{org.id}/messages/{message_id}/attempts", headers=org.headers)
    assert resp.status_code == 200, resp.json
    return resp.json["items"]


def _token(user_id: str, org_id: str, *, exp: float | None = None) -> dict[str, str]:
    claims = {"sub": user_id, "org": org_id, "exp": int(exp or time.time() + 300)}
    return {"Authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}


def _assert_error(resp, status: int) -> None:
    assert resp.status_code == status, (resp.status_code, resp.json)
    body = resp.json
    assert set(body) == {"statusCode", "error", "message"}, body
    assert body["statusCode"] == status
    assert isinstance(body["message"], str) and body["message"]


# ---- endpoints ---------------------------------------------------------------------------


def test_create_answers_the_endpoint_shape_with_its_secret_only_once(client, org, receiver):
    created = _create(
        client, org, receiver.url + "/hook", ["sandbox.created"], name="Prod", description="d"
    )
    assert set(created) == ENDPOINT_KEYS | {"secret"}
    assert created["secret"].startswith("whsec_")
    assert created["id"].startswith("whk-")
    assert created["name"] == "Prod"
    assert created["description"] == "d"
    assert created["eventTypes"] == ["sandbox.created"]
    assert created["status"] == "active"
    assert created["disabledReason"] is None
    assert created["payloadFormat"] == "daytona"
    assert created["scope"] == "account"
    assert created["category"] is None
    assert created["timeoutSeconds"] == 30
    assert created["maxRetries"] == 3
    assert ISO_MS.match(created["createdAt"]) and ISO_MS.match(created["updatedAt"])

    got = client.get(f"{BASE}/{org.id}/endpoints/{created['id']}", headers=org.headers)
    assert got.status_code == 200
    assert set(got.json) == ENDPOINT_KEYS
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers)
    assert listed.status_code == 200
    assert listed.json["total"] == 1
    assert [e["id"] for e in listed.json["items"]] == [created["id"]]
    assert "secret" not in listed.json["items"][0]
    # One model: the /v1 face lists the same endpoint under the same id.
    v1 = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"]
    assert [e["endpoint_id"] for e in v1] == [created["id"]]


def test_patch_maps_every_field_and_status(client, org, receiver):
    created = _create(client, org, receiver.url + "/a", [])
    updated = _patch(
        client,
        org,
        created["id"],
        {
            "url": receiver.url + "/b",
            "eventTypes": ["sandbox.*", "custom.thing"],
            "description": "new",
            "name": "Renamed",
            "payloadFormat": "envelope",
            "timeoutSeconds": 10,
            "maxRetries": 0,
        },
    )
    assert updated["url"] == receiver.url + "/b"
    assert updated["eventTypes"] == ["sandbox.*", "custom.thing"]
    assert (updated["description"], updated["name"]) == ("new", "Renamed")
    assert (updated["payloadFormat"], updated["timeoutSeconds"], updated["maxRetries"]) == (
        "envelope",
        10,
        0,
    )
    disabled = _patch(client, org, created["id"], {"status": "disabled"})
    assert disabled["status"] == "disabled"
    assert disabled["disabledReason"]
    enabled = _patch(client, org, created["id"], {"status": "active"})
    assert enabled["status"] == "active"
    assert enabled["disabledReason"] is None
    assert enabled["url"] == receiver.url + "/b"


def test_delete_answers_204_and_cancels_pending_deliveries(client, org, receiver, worker):
    # A receiver that always fails keeps the delivery pending between retries.
    receiver.reply(500)
    created = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    receiver.wait_for(1)
    resp = client.delete(f"{BASE}/{org.id}/endpoints/{created['id']}", headers=org.headers)
    assert resp.status_code == 204
    assert resp.data == b""
    gone = client.get(f"{BASE}/{org.id}/endpoints/{created['id']}", headers=org.headers)
    _assert_error(gone, 404)
    assert client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["total"] == 0
    detail = client.get(f"{BASE}/{org.id}/messages/{message_id}", headers=org.headers).json
    assert [d["status"] for d in detail["deliveries"]] == ["cancelled"]


def test_rotate_secret_signs_with_both_and_root_reads_the_current_one(
    client, org, add_user, receiver, worker
):
    created = _create(client, org, receiver.url + "/hook", [])
    rotated = client.post(
        f"{BASE}/{org.id}/endpoints/{created['id']}/rotate-secret", headers=org.headers
    )
    assert rotated.status_code == 200
    new_secret = rotated.json["secret"]
    assert new_secret.startswith("whsec_") and new_secret != created["secret"]
    shown = client.get(f"{BASE}/{org.id}/endpoints/{created['id']}/secret", headers=org.headers)
    assert shown.status_code == 200
    assert shown.json == {"secret": new_secret}
    for role in ("admin", "member"):
        user = add_user(org, role)
        denied = client.get(
            f"{BASE}/{org.id}/endpoints/{created['id']}/secret", headers=user.headers
        )
        _assert_error(denied, 403)

    _ingest(client, _sandbox_event(org.id))
    got = receiver.wait_for(1)[0]
    # Receivers on either secret verify the same request during the overlap.
    Webhook(created["secret"]).verify(got.body, got.headers)
    Webhook(new_secret).verify(got.body, got.headers)
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def _expire_oldest_previous_secret(endpoint_id: str) -> None:
    """Move the first rotated-out secret past its 24 hours (the others keep theirs)."""
    with session_scope() as session:
        endpoint = session.get(Endpoint, endpoint_id)
        entries = json.loads(endpoint.previous_secret_encrypted)
        entries[0]["expiresAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        endpoint.previous_secret_encrypted = json.dumps(entries)


def test_two_rotations_within_a_day_sign_with_every_secret_until_each_expires(
    client, org, receiver, worker
):
    created = _create(client, org, receiver.url + "/hook", [])
    rotate = f"{BASE}/{org.id}/endpoints/{created['id']}/rotate-secret"
    secrets = [created["secret"]]
    for _ in range(2):
        resp = client.post(rotate, headers=org.headers)
        assert resp.status_code == 200, resp.json
        secrets.append(resp.json["secret"])
    assert len(set(secrets)) == 3

    _ingest(client, _sandbox_event(org.id))
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 3
    for secret in secrets:
        Webhook(secret).verify(got.body, got.headers)

    _expire_oldest_previous_secret(created["id"])
    _ingest(client, _sandbox_event(org.id, sandbox_id="sbx-2"))
    got = receiver.wait_for(2)[1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in secrets[1:]:
        Webhook(secret).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secrets[0]).verify(got.body, got.headers)


def test_rotations_stop_at_the_signing_secret_cap_until_the_oldest_expires(
    client, org, receiver, worker
):
    created = _create(client, org, receiver.url + "/hook", [])
    rotate = f"{BASE}/{org.id}/endpoints/{created['id']}/rotate-secret"
    secrets = [created["secret"]]
    for _ in range(MAX_SIGNING_SECRETS - 1):
        resp = client.post(rotate, headers=org.headers)
        assert resp.status_code == 200, resp.json
        secrets.append(resp.json["secret"])

    refused = client.post(rotate, headers=org.headers)
    assert refused.status_code == 409
    assert refused.json["statusCode"] == 409 and refused.json["error"] == "Conflict"
    assert refused.json["message"].startswith("Too many rotations: 10 secrets would sign")
    assert re.search(r"stops signing at \d{4}-\d\d-\d\dT[\d:]+\.\d{3}Z", refused.json["message"])
    # The refused rotation changed nothing: every secret still signs.
    _ingest(client, _sandbox_event(org.id))
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split(" ")) == MAX_SIGNING_SECRETS
    for secret in secrets:
        Webhook(secret).verify(got.body, got.headers)

    _expire_oldest_previous_secret(created["id"])
    assert client.post(rotate, headers=org.headers).status_code == 200


# ---- payloads of the Daytona docs ---------------------------------------------------------


def test_documented_daytona_examples_arrive_exactly_as_documented(client, org, receiver, worker):
    created = _create(client, org, receiver.url + "/hook", [e["event"] for e in DOC_EXAMPLES])
    message_ids = {}
    for example in DOC_EXAMPLES:
        # The platform reports the documented fields and timestamp, for the real organization.
        message_ids[example["event"]] = _ingest(client, _for_org(example, org.id))

    got = receiver.wait_for(len(DOC_EXAMPLES))
    assert len(got) == len(DOC_EXAMPLES)
    by_event = {}
    for request in got:
        payload = Webhook(created["secret"]).verify(request.body, request.headers)
        by_event[payload["event"]] = (request, payload)
    for example in DOC_EXAMPLES:
        request, payload = by_event[example["event"]]
        expected = _for_org(example, org.id)
        # Exactly the documented keys and values, every one a string as documented.
        assert payload == expected
        # Key for key in the documented order, too.
        assert list(request.json()) == list(expected)
        assert all(isinstance(value, str) for value in payload.values())
        assert request.headers["webhook-id"] == message_ids[example["event"]]


def test_test_route_sends_the_example_to_that_endpoint_only(
    client, org, add_user, make_receiver, worker
):
    target, other = make_receiver(), make_receiver()
    created = _create(client, org, target.url + "/hook", ["volume.*"])
    _create(client, org, other.url + "/hook", [])
    member = add_user(org, "member")
    resp = client.post(
        f"{BASE}/{org.id}/endpoints/{created['id']}/test",
        json={"eventType": "snapshot.created"},
        headers=member.headers,
    )
    assert resp.status_code == 202, resp.json
    message = resp.json
    assert set(message) == MESSAGE_KEYS
    assert message["test"] is True
    assert message["eventType"] == "snapshot.created"
    assert message["payload"]["organizationId"] == org.id

    got = target.wait_for(1)[0]
    payload = Webhook(created["secret"]).verify(got.body, got.headers)
    expected = _for_org(DOC_EXAMPLES[2], org.id)
    assert {k: v for k, v in payload.items() if k != "timestamp"} == {
        k: v for k, v in expected.items() if k != "timestamp"
    }
    attempts = wait_until(lambda: _attempts(client, org, message["id"]))
    assert [(a["trigger"], a["endpointId"]) for a in attempts] == [("test", created["id"])]
    time.sleep(0.3)
    assert other.requests == []


def test_a_test_is_one_attempt_and_shows_the_endpoints_max_attempts(client, org, receiver, worker):
    receiver.reply(500)
    created = _create(client, org, receiver.url + "/hook", [])  # maxRetries 3 by default
    resp = client.post(
        f"{BASE}/{org.id}/endpoints/{created['id']}/test",
        json={"eventType": "sandbox.created"},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.json

    def settled():
        body = client.get(f"{BASE}/{org.id}/messages/{resp.json['id']}", headers=org.headers).json
        done = [d for d in body["deliveries"] if d["status"] != "pending"]
        return done or None

    (delivery,) = wait_until(settled)
    assert delivery["status"] == "failed"
    assert (delivery["attemptNumber"], delivery["maxAttempts"]) == (1, 4)
    assert delivery["nextRetryAt"] is None
    time.sleep(1.5)  # past the first retry's wait in the tests' schedule (1 s + 20%)
    assert len(receiver.requests) == 1


def test_test_route_sends_any_type_to_an_e2b_endpoint(client, org, make_receiver, worker):
    # docs/api.md §6.2: the test sends "that type's example to this endpoint only,
    # whatever it subscribes to", the team hook (labels only) included.
    receiver = make_receiver()
    resp = client.post(
        "/events/webhooks/sandboxes",
        json={"url": receiver.url + "/e2b", "events": ["create"]},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    secret = resp.json["signatureSecret"]
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["items"]
    (hook,) = [e for e in listed if e["category"] == "team-hook"]

    labels = {}
    for event_type in ("snapshot.created", "sandbox.stopped", "pause"):
        tested = client.post(
            f"{BASE}/{org.id}/endpoints/{hook['id']}/test",
            json={"eventType": event_type},
            headers=org.headers,
        )
        assert tested.status_code == 202, tested.json
        labels[tested.json["id"]] = None
    for got in receiver.wait_for(3):
        payload = Webhook(secret).verify(got.body, got.headers)
        labels[got.headers["webhook-id"]] = payload["eventLabel"]
    # The E2B label where the event has one, else the canonical name (docs/api.md §4.2).
    assert sorted(labels.values()) == ["pause", "sandbox.state.updated", "snapshot.created"]


def test_e2b_format_endpoint_gets_every_event_any_of_its_names_matches(
    client, org, make_receiver, worker
):
    sandbox, everything = make_receiver(), make_receiver()
    by_wildcard = _create(client, org, sandbox.url + "/hook", ["sandbox.*"])
    by_star = _create(client, org, everything.url + "/hook", ["*"])
    for endpoint in (by_wildcard, by_star):
        _patch(client, org, endpoint["id"], {"payloadFormat": "e2b"})

    stopped = _ingest(
        client,
        {
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": "sbx-stop",
            "oldState": "started",
            "newState": "stopped",
        },
    )
    paused = _ingest(
        client,
        {
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": "sbx-pause",
            "oldState": "started",
            "newState": "paused",
        },
    )
    snapshot = _ingest(
        client,
        {"event": "snapshot.created", "organizationId": org.id, "id": "snap-1", "name": "s"},
    )
    sent = client.post(
        f"{BASE}/{org.id}/send",
        json={"eventType": "order.created", "payload": {"orderId": "o-1"}},
        headers=org.headers,
    )
    assert sent.status_code == 202, sent.json

    def labels(receiver, secret, count):
        got = {}
        for request in receiver.wait_for(count):
            payload = Webhook(secret).verify(request.body, request.headers)
            got[request.headers["webhook-id"]] = payload["eventLabel"]
        return got

    assert labels(sandbox, by_wildcard["secret"], 2) == {
        stopped: "sandbox.state.updated",
        paused: "pause",
    }
    assert labels(everything, by_star["secret"], 3) == {
        stopped: "sandbox.state.updated",
        paused: "pause",
        snapshot: "snapshot.created",
    }
    # Custom events never go to e2b endpoints; nothing else arrives either.
    time.sleep(0.5)
    assert len(sandbox.requests) == 2 and len(everything.requests) == 3


# ---- custom sends and messages ------------------------------------------------------------


def test_send_with_the_same_event_id_makes_one_message_and_one_delivery_per_endpoint(
    client, org, add_user, make_receiver, worker
):
    first, second = make_receiver(), make_receiver()
    one = _create(client, org, first.url + "/hook", ["order.*"])
    _create(client, org, second.url + "/hook", [])
    member = add_user(org, "member")
    body = {"eventType": "order.created", "payload": {"orderId": "o-1", "n": 2}, "eventId": "k-1"}
    sent = client.post(f"{BASE}/{org.id}/send", json=body, headers=member.headers)
    assert sent.status_code == 202, sent.json
    assert set(sent.json) == MESSAGE_KEYS | {"duplicate"}
    assert sent.json["duplicate"] is False
    assert sent.json["eventId"] == "k-1"
    assert sent.json["payload"] == {"orderId": "o-1", "n": 2}
    again = client.post(f"{BASE}/{org.id}/send", json=body, headers=org.headers)
    assert again.status_code == 200
    assert again.json["duplicate"] is True
    assert again.json["id"] == sent.json["id"]

    got = first.wait_for(1)[0]
    second.wait_for(1)
    payload = Webhook(one["secret"]).verify(got.body, got.headers)
    assert payload["event"] == "order.created"
    assert payload["orderId"] == "o-1" and payload["n"] == 2
    assert ISO_MS.match(payload["timestamp"])
    time.sleep(0.5)
    assert len(first.requests) == 1 and len(second.requests) == 1
    listed = client.get(f"{BASE}/{org.id}/messages", headers=org.headers).json
    assert [m["id"] for m in listed["items"]] == [sent.json["id"]]
    detail = client.get(f"{BASE}/{org.id}/messages/{sent.json['id']}", headers=org.headers).json
    assert len(detail["deliveries"]) == 2


def test_send_refuses_platform_event_types(client, org):
    resp = client.post(
        f"{BASE}/{org.id}/send",
        json={"eventType": "sandbox.created", "payload": {}},
        headers=org.headers,
    )
    _assert_error(resp, 400)
    assert "sandbox.created" in resp.json["message"]


def test_messages_filter_and_page_with_a_cursor(client, org, make_receiver, worker):
    ok, failing = make_receiver(), make_receiver()
    failing.reply(500)
    sandbox_ep = _create(client, org, ok.url + "/s", ["sandbox.*"])
    snapshot_ep = _create(client, org, failing.url + "/v", ["snapshot.*"])
    _patch(client, org, snapshot_ep["id"], {"maxRetries": 0})
    ids = []
    middle = None
    for index in range(6):
        if index == 3:
            time.sleep(0.02)
            middle = datetime.now(UTC)
            time.sleep(0.02)
        if index % 2 == 0:
            ids.append(_ingest(client, _sandbox_event(org.id, f"sbx-{index}")))
        else:
            event = {**DOC_EXAMPLES[2], "organizationId": org.id, "id": f"snap-{index}"}
            del event["timestamp"]  # stamped when reported, as the sandbox events are
            ids.append(_ingest(client, event))
        time.sleep(0.005)
    newest_first = list(reversed(ids))

    def settled():
        failed = client.get(
            f"{BASE}/{org.id}/messages", query_string={"status": "failed"}, headers=org.headers
        ).json["items"]
        delivered = client.get(
            f"{BASE}/{org.id}/messages", query_string={"status": "delivered"}, headers=org.headers
        ).json["items"]
        notices = client.get(
            f"{BASE}/{org.id}/messages",
            query_string={"eventType": "message.attempt.exhausted"},
            headers=org.headers,
        ).json["items"]
        done = len(failed) == 3 and len(delivered) == 3 and len(notices) == 3
        return (failed, delivered) if done else None

    failed, delivered = wait_until(settled)
    assert [m["id"] for m in failed] == newest_first[0::2]
    assert [m["id"] for m in delivered] == newest_first[1::2]

    def page(**query):
        resp = client.get(f"{BASE}/{org.id}/messages", query_string=query, headers=org.headers)
        assert resp.status_code == 200, resp.json
        return resp.json

    def reported(items):
        # Each snapshot delivery that failed for good was reported as a message of its own
        # (docs/api.md §11.5), listed with the others.
        return [m["id"] for m in items if m["eventType"] != "message.attempt.exhausted"]

    everything = page()
    assert reported(everything["items"]) == newest_first
    notices = [m for m in everything["items"] if m["id"] not in newest_first]
    assert sorted(m["payload"]["messageId"] for m in notices) == sorted(newest_first[0::2])
    assert everything["nextCursor"] is None
    assert set(everything["items"][0]) == MESSAGE_KEYS

    by_type = page(eventType="snapshot.created")
    assert [m["id"] for m in by_type["items"]] == newest_first[0::2]
    by_endpoint = page(endpointId=sandbox_ep["id"])
    assert [m["id"] for m in by_endpoint["items"]] == newest_first[1::2]
    stamp = middle.isoformat().replace("+00:00", "Z")
    assert reported(page(before=stamp)["items"]) == newest_first[3:]
    assert reported(page(after=stamp)["items"]) == newest_first[:3]

    seen = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 4}
        if cursor:
            query["cursor"] = cursor
        result = page(**query)
        seen += reported(result["items"])
        pages += 1
        cursor = result["nextCursor"]
        if cursor is None:
            break
    assert pages == 3  # six messages and three notices, four a page
    assert seen == newest_first
    # Filters and the cursor combine.
    first = page(limit=2, eventType="sandbox.created")
    rest = page(limit=2, eventType="sandbox.created", cursor=first["nextCursor"])
    assert [m["id"] for m in first["items"] + rest["items"]] == newest_first[1::2]
    assert rest["nextCursor"] is None


def test_message_detail_and_attempts(client, org, receiver, worker):
    receiver.reply(200, b"thanks")
    created = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id, eventId="sbx-1-created"))
    receiver.wait_for(1)

    def delivered():
        body = client.get(f"{BASE}/{org.id}/messages/{message_id}", headers=org.headers).json
        return body if body["deliveries"][0]["status"] == "delivered" else None

    detail = wait_until(delivered)
    assert set(detail) == MESSAGE_KEYS | {"deliveries"}
    assert detail["eventType"] == "sandbox.created"
    assert detail["eventId"] == "sbx-1-created"
    assert detail["test"] is False
    assert detail["payload"] == {
        "organizationId": org.id,
        "id": "sbx-1",
        "state": "started",
        "class": "small",
        "createdAt": "2025-12-19T10:30:00.000Z",
    }
    delivery = detail["deliveries"][0]
    assert set(delivery) == DELIVERY_KEYS
    assert delivery["endpointId"] == created["id"]
    assert (delivery["attemptNumber"], delivery["maxAttempts"]) == (1, 4)
    assert delivery["httpStatusCode"] == 200
    assert ISO_MS.match(delivery["deliveredAt"])
    assert delivery["failedAt"] is None and delivery["nextRetryAt"] is None

    attempts = _attempts(client, org, message_id)
    assert len(attempts) == 1
    attempt = attempts[0]
    assert set(attempt) == ATTEMPT_KEYS
    assert attempt["deliveryId"] == delivery["id"]
    assert attempt["messageId"] == message_id
    assert attempt["url"] == receiver.url + "/hook"
    assert (attempt["status"], attempt["statusCode"], attempt["trigger"]) == (
        "success",
        200,
        "scheduled",
    )
    assert attempt["responseBody"] == "thanks"
    assert attempt["error"] is None
    assert isinstance(attempt["durationMs"], int)
    assert ISO_MS.match(attempt["timestamp"])


def test_resend_to_a_disabled_endpoint_is_409_and_queues_nothing(client, org, receiver):
    created = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    _patch(client, org, created["id"], {"status": "disabled"})
    resp = client.post(
        f"{BASE}/{org.id}/messages/{message_id}/endpoints/{created['id']}/resend",
        headers=org.headers,
    )
    _assert_error(resp, 409)
    time.sleep(0.3)
    assert [a for a in _attempts(client, org, message_id) if a["trigger"] == "manual"] == []


def test_resend_makes_a_manual_attempt(client, org, add_user, receiver, worker):
    created = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    receiver.wait_for(1)
    wait_until(lambda: _attempts(client, org, message_id))
    member = add_user(org, "member")
    resp = client.post(
        f"{BASE}/{org.id}/messages/{message_id}/endpoints/{created['id']}/resend",
        headers=member.headers,
    )
    assert resp.status_code == 202, resp.json
    assert resp.json["queued"] is True
    assert resp.json["deliveryId"].startswith("whd-")
    got = receiver.wait_for(2)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == message_id
    attempts = wait_until(lambda: (a := _attempts(client, org, message_id)) and len(a) == 2 and a)
    assert [a["trigger"] for a in attempts] == ["manual", "scheduled"]
    assert attempts[0]["deliveryId"] == resp.json["deliveryId"]


def test_stats_and_recover_follow_the_deliveries(client, org, receiver, worker):
    receiver.reply(500)
    created = _create(client, org, receiver.url + "/hook", [])
    _patch(client, org, created["id"], {"maxRetries": 0})
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    _ingest(client, _sandbox_event(org.id))
    stats_url = f"{BASE}/{org.id}/endpoints/{created['id']}/stats"

    def failed_stats():
        body = client.get(stats_url, headers=org.headers).json
        return body if body["failed"] == 1 else None

    stats = wait_until(failed_stats)
    assert set(stats) == {
        "total",
        "successful",
        "failed",
        "pending",
        "lastDeliveryAt",
        "lastSuccessAt",
        "lastFailureAt",
    }
    assert (stats["total"], stats["successful"], stats["pending"]) == (1, 0, 0)
    assert stats["lastSuccessAt"] is None
    assert ISO_MS.match(stats["lastFailureAt"]) and ISO_MS.match(stats["lastDeliveryAt"])

    receiver.reply(200)
    resp = client.post(
        f"{BASE}/{org.id}/endpoints/{created['id']}/recover",
        json={"since": since},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.json
    assert resp.json == {"recovered": 1}
    receiver.wait_for(2)

    def recovered():
        body = client.get(stats_url, headers=org.headers).json
        return body if body["successful"] == 1 else None

    stats = wait_until(recovered)
    assert (stats["total"], stats["failed"]) == (1, 0)
    assert ISO_MS.match(stats["lastSuccessAt"])


# ---- catalog, preconfigured table, status --------------------------------------------------


def test_event_types_list_the_catalog_with_full_examples(client, org):
    resp = client.get(f"{API}/event-types", headers=org.headers)
    assert resp.status_code == 200
    items = {item["name"]: item for item in resp.json["items"]}
    created = items["sandbox.created"]
    assert set(created) == {
        "name",
        "description",
        "category",
        "accountLevel",
        "example",
        "v1Types",
        "e2bLabels",
    }
    assert created["example"] == _for_org(DOC_EXAMPLES[0], org.id)
    assert (created["v1Types"], created["e2bLabels"], created["accountLevel"]) == (
        ["sandbox.created"],
        ["create"],
        False,
    )
    assert items["payment.succeeded"]["accountLevel"] is True
    for example in DOC_EXAMPLES:
        assert items[example["event"]]["example"] == _for_org(example, org.id)


def test_preconfigured_table_is_listed_for_any_key(client, org, add_user):
    member = add_user(org, "member")
    resp = client.get(f"{API}/preconfigured-endpoints", headers=member.headers)
    assert resp.status_code == 200
    items = resp.json["items"]
    assert [(i["category"], i["eventTypes"]) for i in items] == [
        ("sandbox-events", ["sandbox.*"]),
        ("snapshot-events", ["snapshot.*"]),
        ("volume-events", ["volume.*"]),
        ("audit-events", ["audit-log.*"]),
        ("all-events", ["*"]),
    ]
    # No WEBHOOKS_PRECONFIGURED_BASE_URL in the tests: nothing is created, so no template.
    assert all(i["urlTemplate"] is None and i["description"] for i in items)


def test_status_reports_every_part_healthy(client, worker):
    resp = client.get(f"{API}/status", headers=PLATFORM)
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert isinstance(body["database"]["latencyMs"], float | int)
    assert body["broker"] == {"ok": True}
    assert body["workers"]["ok"] is True and body["workers"]["count"] >= 1


def test_status_without_the_database_is_503_with_retry_after():
    (answer,) = without_database(("GET", f"{API}/status", PLATFORM, {}))
    assert (answer.status, answer.retry_after) == (503, "5"), answer
    assert answer.body["status"] == "degraded"
    assert answer.body["database"] == {"ok": False, "latencyMs": None}


# ---- credentials and permissions ----------------------------------------------------------


def test_jwt_works_like_an_api_key(client, org, make_org, receiver):
    headers = _token(org.user_id, org.id)
    created = client.post(
        f"{BASE}/{org.id}/endpoints",
        json={"url": receiver.url + "/hook", "eventTypes": []},
        headers=headers,
    )
    assert created.status_code == 201, created.json
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=headers)
    assert listed.status_code == 200 and listed.json["total"] == 1
    # Root only: the role comes from the database, and this user is root.
    secret = client.get(f"{BASE}/{org.id}/endpoints/{created.json['id']}/secret", headers=headers)
    assert secret.status_code == 200

    other = make_org("Other")
    wrong_org = _token(org.user_id, other.id)
    _assert_error(client.get(f"{BASE}/{org.id}/endpoints", headers=wrong_org), 401)
    _assert_error(client.get(f"{BASE}/{other.id}/endpoints", headers=wrong_org), 401)
    expired = _token(org.user_id, org.id, exp=time.time() - 10)
    _assert_error(client.get(f"{BASE}/{org.id}/endpoints", headers=expired), 401)
    forged = {
        "Authorization": "Bearer "
        + jwt.encode(
            {"sub": org.user_id, "org": org.id, "exp": int(time.time()) + 60},
            "another-secret-0123456789abcdef-xyz",
            algorithm="HS256",
        )
    }
    _assert_error(client.get(f"{BASE}/{org.id}/endpoints", headers=forged), 401)
    bearer_key = {"Authorization": f"Bearer {org.key}"}
    assert client.get(f"{BASE}/{org.id}/endpoints", headers=bearer_key).status_code == 200


def test_missing_or_wrong_credentials_are_401(client, org):
    for headers in ({}, {"X-API-Key": "whk_live_nope"}, PLATFORM):
        _assert_error(client.get(f"{BASE}/{org.id}/endpoints", headers=headers), 401)
        _assert_error(client.get(f"{API}/event-types", headers=headers), 401)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/initialization-stats"),
        ("post", "/retry-failed-initializations"),
        ("post", "/update-all-endpoints"),
        ("get", "/status"),
    ],
)
def test_platform_routes_take_the_platform_token_only(client, org, method, path):
    _assert_error(getattr(client, method)(API + path), 401)
    _assert_error(getattr(client, method)(API + path, headers=org.headers), 403)
    if path != "/status":  # the status route needs a worker; it has its own test
        assert getattr(client, method)(API + path, headers=PLATFORM).status_code == 200


def _all_org_routes(org_id: str, endpoint_id: str, message_id: str) -> list[tuple]:
    org_path = f"{BASE}/{org_id}"
    ep = f"{org_path}/endpoints/{endpoint_id}"
    msg = f"{org_path}/messages/{message_id}"
    return [
        ("get", f"{org_path}/endpoints", None),
        ("post", f"{org_path}/endpoints", {"url": "https://example.com/h", "eventTypes": []}),
        ("get", ep, None),
        ("patch", ep, {"name": "x"}),
        ("delete", ep, None),
        ("post", f"{ep}/rotate-secret", None),
        ("get", f"{ep}/secret", None),
        ("post", f"{ep}/recover", {"since": "2025-01-01T00:00:00Z"}),
        ("get", f"{ep}/stats", None),
        ("post", f"{ep}/test", {"eventType": "sandbox.created"}),
        ("post", f"{org_path}/send", {"eventType": "custom.event", "payload": {}}),
        ("get", f"{org_path}/messages", None),
        ("get", msg, None),
        ("get", f"{msg}/attempts", None),
        ("post", f"{msg}/endpoints/{endpoint_id}/resend", None),
        ("post", f"{org_path}/preconfigured-endpoints", None),
        ("post", f"{org_path}/initialize", None),
        ("get", f"{org_path}/initialization-status", None),
    ]


def test_a_key_of_another_organization_gets_404_for_everything(client, org, make_org, receiver):
    endpoint = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    other = make_org("Other")
    for method, path, body in _all_org_routes(org.id, endpoint["id"], message_id):
        resp = getattr(client, method)(path, json=body, headers=other.headers)
        _assert_error(resp, 404)
    # Its own organization's paths with the first organization's ids are 404 too.
    for method, path, body in _all_org_routes(other.id, endpoint["id"], message_id):
        if path.endswith(("/endpoints", "/send", "/messages", "-endpoints", "/initialize")):
            continue
        if path.endswith("-status"):
            continue
        resp = getattr(client, method)(path, json=body, headers=other.headers)
        _assert_error(resp, 404)
    # Nothing of the first organization changed.
    still = client.get(f"{BASE}/{org.id}/endpoints/{endpoint['id']}", headers=org.headers)
    assert still.status_code == 200 and still.json["name"] is None


def test_member_admin_and_root_permissions(client, org, add_user, receiver):
    admin, member = add_user(org, "admin"), add_user(org, "member")
    endpoint = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    routes = _all_org_routes(org.id, endpoint["id"], message_id)
    # Routes a member may not use (docs/api.md §6.2 "who"), by (method, last path part).
    admin_only = {
        ("post", "endpoints"),
        ("patch", endpoint["id"]),
        ("delete", endpoint["id"]),
        ("post", "rotate-secret"),
        ("post", "recover"),
        ("post", "preconfigured-endpoints"),
        ("post", "initialize"),
        ("get", "initialization-status"),
    }
    for method, path, body in routes:
        key = (method, path.rsplit("/", 1)[1])
        if key == ("delete", endpoint["id"]):
            continue
        resp = getattr(client, method)(path, json=body, headers=member.headers)
        if key in admin_only or key == ("get", "secret"):
            _assert_error(resp, 403)
        else:
            assert resp.status_code in (200, 201, 202), (method, path, resp.json)
    _assert_error(
        client.delete(f"{BASE}/{org.id}/endpoints/{endpoint['id']}", headers=member.headers), 403
    )

    for method, path, body in routes:
        key = (method, path.rsplit("/", 1)[1])
        if key == ("delete", endpoint["id"]):
            continue
        resp = getattr(client, method)(path, json=body, headers=admin.headers)
        if key == ("get", "secret"):
            _assert_error(resp, 403)
        else:
            assert resp.status_code in (200, 201, 202), (method, path, resp.json)
    assert client.get(f"{BASE}/{org.id}/endpoints/{endpoint['id']}/secret", headers=org.headers)
    resp = client.delete(f"{BASE}/{org.id}/endpoints/{endpoint['id']}", headers=admin.headers)
    assert resp.status_code == 204


def test_account_level_types_need_root(client, org, add_user, receiver):
    admin = add_user(org, "admin")
    url = receiver.url + "/hook"
    resp = client.post(
        f"{BASE}/{org.id}/endpoints",
        json={"url": url, "eventTypes": ["payment.succeeded"]},
        headers=admin.headers,
    )
    _assert_error(resp, 403)
    created = _create(client, org, url, ["payment.succeeded"])
    assert created["eventTypes"] == ["payment.succeeded"]


def test_member_sees_account_endpoints_and_its_own_only(client, org, add_user, receiver):
    member, other_member = add_user(org, "member"), add_user(org, "member")
    account = _create(client, org, receiver.url + "/a", [])
    mine = client.post(
        "/v1/webhooks",
        json={"url": receiver.url + "/m", "event_types": ["sandbox.created"]},
        headers=member.headers,
    ).json["data"]
    theirs = client.post(
        "/v1/webhooks",
        json={"url": receiver.url + "/t", "event_types": ["sandbox.created"]},
        headers=other_member.headers,
    ).json["data"]
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=member.headers).json
    assert {e["id"] for e in listed["items"]} == {account["id"], mine["endpoint_id"]}
    assert listed["total"] == 2
    hidden = client.get(
        f"{BASE}/{org.id}/endpoints/{theirs['endpoint_id']}", headers=member.headers
    )
    _assert_error(hidden, 404)
    admin_view = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json
    assert admin_view["total"] == 3


# ---- bad input ----------------------------------------------------------------------------


def _bad_requests(org_id: str, endpoint_id: str, message_id: str) -> list[tuple]:
    org_path = f"{BASE}/{org_id}"
    ep = f"{org_path}/endpoints/{endpoint_id}"
    ok_url = "https://example.com/hook"
    return [
        ("post", f"{org_path}/endpoints", {"url": ok_url}, "eventTypes"),
        ("post", f"{org_path}/endpoints", {"eventTypes": []}, "url"),
        ("post", f"{org_path}/endpoints", {"url": ok_url, "eventTypes": [], "x": 1}, "x"),
        ("post", f"{org_path}/endpoints", {"url": ok_url, "eventTypes": "sandbox.*"}, "eventTypes"),
        ("post", f"{org_path}/endpoints", {"url": ok_url, "eventTypes": ["Bad Name"]}, "Bad Name"),
        ("post", f"{org_path}/endpoints", {"url": "ftp://x/y", "eventTypes": []}, "http"),
        (
            "post",
            f"{org_path}/endpoints",
            {"url": "http://169.254.169.254/", "eventTypes": []},
            "private",
        ),
        (
            "post",
            f"{org_path}/endpoints",
            {"url": ok_url, "eventTypes": [], "name": "a\x00b"},
            "NUL",
        ),
        (
            "post",
            f"{org_path}/endpoints",
            {"url": ok_url, "eventTypes": [], "name": "n" * 201},
            "name",
        ),
        (
            "post",
            f"{org_path}/endpoints",
            {"url": ok_url, "eventTypes": [], "timeoutSeconds": 10},
            "timeoutSeconds",
        ),
        ("post", f"{org_path}/endpoints", [], None),
        ("patch", ep, {"status": "paused"}, "status"),
        ("patch", ep, {"timeoutSeconds": 4}, "timeoutSeconds"),
        ("patch", ep, {"timeoutSeconds": "30"}, "timeoutSeconds"),
        ("patch", ep, {"maxRetries": 11}, "maxRetries"),
        ("patch", ep, {"payloadFormat": "xml"}, "payloadFormat"),
        ("patch", ep, {"scope": "user"}, "scope"),
        ("patch", ep, {"eventTypes": ["sandbox.*", 3]}, "eventTypes"),
        ("patch", ep, {"url": "http://user:pw@example.com/"}, "credentials"),
        ("post", f"{ep}/recover", {}, "since"),
        ("post", f"{ep}/recover", {"since": "yesterday"}, "since"),
        (
            "post",
            f"{ep}/recover",
            {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "until",
        ),
        ("post", f"{ep}/test", {}, "eventType"),
        ("post", f"{ep}/test", {"eventType": "no.such-type"}, "no.such-type"),
        ("post", f"{org_path}/send", {"eventType": "custom.event"}, "payload"),
        ("post", f"{org_path}/send", {"eventType": "custom.event", "payload": [1]}, "payload"),
        ("post", f"{org_path}/send", {"eventType": "Custom", "payload": {}}, "Custom"),
        (
            "post",
            f"{org_path}/send",
            {"eventType": "custom.event", "payload": {}, "eventId": "e" * 300},
            "eventId",
        ),
        (
            "post",
            f"{org_path}/send",
            {"eventType": "custom.event", "payload": {"a": "\x00"}},
            "NUL",
        ),
        (
            "post",
            f"{org_path}/send",
            {"eventType": "custom.event", "payload": {"a": "\ud800"}},
            None,
        ),
        ("get", f"{org_path}/messages?status=weird", None, "status"),
        ("get", f"{org_path}/messages?eventType=a%00b", None, "eventType"),
        ("get", f"{org_path}/messages?cursor=a%00b", None, "cursor"),
        ("get", f"{org_path}/messages?before=not-a-date", None, "before"),
        ("get", f"{org_path}/messages?after=0001-01-01T00:00:00%2B01:00", None, "after"),
        ("get", f"{org_path}/messages?limit=0", None, "limit"),
        ("get", f"{org_path}/messages?limit=201", None, "limit"),
        ("get", f"{org_path}/messages?limit=abc", None, "limit"),
        ("get", f"{org_path}/messages?cursor=%21%21notacursor", None, "cursor"),
        ("get", f"{org_path}/endpoints?limit=0", None, "limit"),
        ("get", f"{org_path}/endpoints?offset=100000000000000000000", None, "offset"),
    ]


def test_bad_input_is_a_clear_400_in_this_face_shape(client, org, receiver):
    endpoint = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    for method, path, body, mentioned in _bad_requests(org.id, endpoint["id"], message_id):
        resp = getattr(client, method)(path, json=body, headers=org.headers)
        assert resp.status_code == 400, (method, path, body, resp.status_code, resp.json)
        _assert_error(resp, 400)
        assert resp.json["error"] == "Bad Request"
        if mentioned:
            assert mentioned in resp.json["message"], (path, body, resp.json)
    # Nothing was written by any of them.
    unchanged = client.get(f"{BASE}/{org.id}/endpoints/{endpoint['id']}", headers=org.headers)
    assert unchanged.json["url"] == receiver.url + "/hook"
    assert client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["total"] == 1
    assert len(client.get(f"{BASE}/{org.id}/messages", headers=org.headers).json["items"]) == 1


def test_credentials_and_the_organization_are_checked_before_the_body(
    client, org, make_org, receiver
):
    endpoint = _create(client, org, receiver.url + "/hook", [])
    message_id = _ingest(client, _sandbox_event(org.id))
    other = make_org("Other")
    requests = [
        (method.upper(), path, {"json": body})
        for method, path, body, _ in _bad_requests(org.id, endpoint["id"], message_id)
    ]
    for content_type, data in (("text/plain", "url=x"), ("application/json", "{not json")):
        kwargs = {"data": data, "content_type": content_type}
        requests.append(("POST", f"{BASE}/{org.id}/endpoints", kwargs))
    wrong = []
    for headers, status in ((other.headers, 404), ({}, 401), ({"X-API-Key": "whk_live_no"}, 401)):
        for method, path, kwargs in requests:
            resp = client.open(path, method=method, headers=headers, **kwargs)
            if resp.status_code != status or set(resp.json) != {"statusCode", "error", "message"}:
                wrong.append((status, method, path, resp.status_code, resp.json))
    assert wrong == []
    unchanged = client.get(f"{BASE}/{org.id}/endpoints/{endpoint['id']}", headers=org.headers)
    assert unchanged.json["url"] == receiver.url + "/hook"


def test_non_json_unknown_routes_and_wrong_methods_answer_in_this_face_shape(client, org):
    resp = client.post(
        f"{BASE}/{org.id}/endpoints",
        data="url=x",
        headers=org.headers,
        content_type="application/x-www-form-urlencoded",
    )
    _assert_error(resp, 400)
    resp = client.post(
        f"{BASE}/{org.id}/endpoints",
        data="{not json",
        headers=org.headers,
        content_type="application/json",
    )
    _assert_error(resp, 400)
    _assert_error(client.get(f"{BASE}/{org.id}/nothing-here", headers=org.headers), 404)
    _assert_error(client.put(f"{BASE}/{org.id}/endpoints", json={}, headers=org.headers), 405)
    for weird in ("whk-%00", "%ff%fe", "x" * 300):
        _assert_error(client.get(f"{BASE}/{org.id}/endpoints/{weird}", headers=org.headers), 404)
        _assert_error(client.get(f"{BASE}/{org.id}/messages/{weird}", headers=org.headers), 404)


def test_a_jwt_naming_a_user_id_no_user_can_have_is_401(client, org):
    # Signed with the right secret, but its subject holds a NUL, which no id can.
    headers = _token(org.user_id + "\x00", org.id)
    _assert_error(client.get(f"{BASE}/{org.id}/endpoints", headers=headers), 401)


def test_options_needs_credentials_like_every_other_method(client, org):
    _assert_error(client.options(f"{BASE}/{org.id}/endpoints"), 401)
    allowed = client.options(f"{BASE}/{org.id}/endpoints", headers=org.headers)
    assert allowed.status_code == 200
    assert {"GET", "POST"} <= set(allowed.headers["Allow"].split(", "))
    v1 = client.options("/v1/webhooks")
    assert v1.status_code == 401 and v1.json["success"] is False
    hook = client.options("/events/webhooks/sandboxes")
    assert hook.status_code == 401 and set(hook.json) == {"code", "message"}


def _report(client, org_id: str, event_id: str, **fields) -> str:
    event = {**_sandbox_event(org_id, event_id), **fields}
    resp = client.post("/api/internal/events", json=event, headers=PLATFORM)
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def test_messages_before_and_after_compare_the_timestamp_shown_and_exclude_it(client, org):
    old = _report(client, org.id, "sbx-old", timestamp="2024-01-01T00:00:00.000Z")
    first = _report(client, org.id, "sbx-1")
    time.sleep(0.005)
    second = _report(client, org.id, "sbx-2")

    def ids(**query) -> list[str]:
        resp = client.get(f"{BASE}/{org.id}/messages", query_string=query, headers=org.headers)
        assert resp.status_code == 200, resp.json
        return [m["id"] for m in resp.json["items"]]

    # A past timestamp the platform gave is where it says, though it was reported last-but-two.
    assert ids(before="2025-01-01T00:00:00Z") == [old]
    assert old not in ids(after="2025-01-01T00:00:00Z")
    shown = {m["id"]: m["timestamp"] for m in client.get(
        f"{BASE}/{org.id}/messages", headers=org.headers
    ).json["items"]}  # fmt: skip
    # Exclusive at the millisecond shown: after= a message's own timestamp leaves it out.
    assert first not in ids(after=shown[first])
    assert second in ids(after=shown[first])
    assert ids(before=shown[old]) == []
    assert ids(after="9999-12-31T23:59:59.999Z") == []
    assert set(ids(before="9999-12-31T23:59:59.9999Z")) == {old, first, second}


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"],
    ids=["before-year-1", "after-year-9999", "no-zone"],
)
def test_a_forged_cursor_is_400(client, org, moment):
    import base64

    cursor = base64.urlsafe_b64encode(json.dumps([moment, "evt-a"]).encode()).decode()
    resp = client.get(
        f"{BASE}/{org.id}/messages", query_string={"cursor": cursor.rstrip("=")},
        headers=org.headers,
    )  # fmt: skip
    _assert_error(resp, 400)
    assert "cursor" in resp.json["message"]


def test_resend_refuses_fields_it_does_not_take(client, org, receiver):
    endpoint = _create(client, org, receiver.url, [])
    message_id = _report(client, org.id, "sbx-1")
    path = f"{BASE}/{org.id}/messages/{message_id}/endpoints/{endpoint['id']}/resend"
    resp = client.post(path, json={"trigger": "test"}, headers=org.headers)
    _assert_error(resp, 400)
    assert resp.json["message"] == "Unknown field: trigger"
