"""The platform's face at /api/internal: organizations, users and event ingestion."""

from __future__ import annotations

from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Message
from tests.conftest import PLATFORM


def _messages() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Message))


def _event(org, **extra):
    return {
        "event": "sandbox.created",
        "organizationId": org.id,
        "id": "sbx-1",
        "state": "started",
        "class": "small",
        "createdAt": "2025-12-19T10:30:00.000Z",
        **extra,
    }


def test_create_organization_returns_root_user_and_key_once(client):
    resp = client.post(
        "/api/internal/organizations",
        json={"id": "org-abcdefghij12345", "name": "Acme"},
        headers=PLATFORM,
    )
    assert resp.status_code == 201
    body = resp.json
    assert body["organization"]["id"] == "org-abcdefghij12345"
    assert body["organization"]["name"] == "Acme"
    assert body["organization"]["createdAt"].endswith("Z")
    assert body["user"]["role"] == "root" and body["user"]["id"].startswith("usr-")
    key = body["apiKey"]
    assert client.get("/v1/webhooks", headers={"X-API-Key": key}).status_code == 200
    again = client.post(
        "/api/internal/organizations",
        json={"id": "org-abcdefghij12345", "name": "Again"},
        headers=PLATFORM,
    )
    assert again.status_code == 409
    assert again.json["statusCode"] == 409 and again.json["error"] == "Conflict"


def test_organization_input_is_validated(client):
    for body, status in [
        ({"name": ""}, 400),
        ({}, 400),
        ({"name": "x", "id": "acme"}, 400),
        ({"name": "x", "id": "org-UPPERCASE12345"}, 400),
        ({"name": "x", "plan": "pro"}, 400),
    ]:
        resp = client.post("/api/internal/organizations", json=body, headers=PLATFORM)
        assert resp.status_code == status, body
        assert set(resp.json) == {"statusCode", "error", "message"}


def test_an_organization_id_with_a_trailing_newline_is_400(client):
    resp = client.post(
        "/api/internal/organizations",
        json={"id": "org-abcdefghijklmno\n", "name": "Acme"},
        headers=PLATFORM,
    )
    assert resp.status_code == 400, resp.json
    assert resp.json["message"].startswith("id must be 'org-'")


def test_users_get_keys_of_their_role(client, org):
    resp = client.post(
        f"/api/internal/organizations/{org.id}/users", json={"role": "member"}, headers=PLATFORM
    )
    assert resp.status_code == 201
    assert resp.json["user"]["role"] == "member"
    member = {"X-API-Key": resp.json["apiKey"]}
    assert client.get("/v1/webhooks", headers=member).status_code == 200
    bad = client.post(
        f"/api/internal/organizations/{org.id}/users", json={"role": "owner"}, headers=PLATFORM
    )
    assert bad.status_code == 400
    missing = client.post(
        "/api/internal/organizations/org-000000000000000/users",
        json={"role": "admin"},
        headers=PLATFORM,
    )
    assert missing.status_code == 404
    for unlike_an_id in (f"{org.id}%00", f"{org.id}x", "org-ABC"):
        strange = client.post(
            f"/api/internal/organizations/{unlike_an_id}/users",
            json={"role": "admin"},
            headers=PLATFORM,
        )
        assert strange.status_code == 404, (unlike_an_id, strange.json)
        assert set(strange.json) == {"statusCode", "error", "message"}


def test_only_the_platform_token_opens_the_internal_face(client, org):
    assert client.post("/api/internal/events", json=_event(org)).status_code == 401
    resp = client.post("/api/internal/events", json=_event(org), headers=org.headers)
    assert resp.status_code == 403
    resp = client.post(
        "/api/internal/organizations", json={"name": "x"}, headers={"Authorization": "Bearer no"}
    )
    assert resp.status_code == 401
    assert _messages() == 0


def test_the_platform_token_is_checked_before_the_body(client, org):
    bad = [
        ("/api/internal/organizations", {"json": {"name": "x", "plan": "pro"}}),
        ("/api/internal/organizations", {"data": "name=x", "content_type": "text/plain"}),
        (f"/api/internal/organizations/{org.id}/users", {"json": {"role": "owner"}}),
        ("/api/internal/events", {"data": "[", "content_type": "application/json"}),
    ]
    for headers, status in (({}, 401), ({"Authorization": "Bearer no"}, 401), (org.headers, 403)):
        for path, kwargs in bad:
            resp = client.post(path, headers=headers, **kwargs)
            assert resp.status_code == status, (path, headers, resp.json)
            assert set(resp.json) == {"statusCode", "error", "message"}
    for path, kwargs in bad:
        assert client.post(path, headers=PLATFORM, **kwargs).status_code == 400


def test_single_event_is_accepted_and_deduplicated_by_event_id(client, org):
    first = client.post("/api/internal/events", json=_event(org, eventId="e-1"), headers=PLATFORM)
    assert first.status_code == 202
    [accepted] = first.json["messages"]
    assert accepted["id"].startswith("evt-") and accepted["eventId"] == "e-1"
    assert accepted["duplicate"] is False
    again = client.post("/api/internal/events", json=_event(org, eventId="e-1"), headers=PLATFORM)
    assert again.status_code == 202
    assert again.json["messages"] == [{"id": accepted["id"], "eventId": "e-1", "duplicate": True}]
    assert _messages() == 1


def test_array_answers_in_input_order_with_duplicates_marked(client, org, make_org):
    other = make_org("Other")
    events = [
        _event(org, eventId="a"),
        _event(org, id="sbx-2"),
        _event(org, eventId="a"),
        _event(other, eventId="a"),
    ]
    resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
    assert resp.status_code == 202
    got = resp.json["messages"]
    assert [m["duplicate"] for m in got] == [False, False, True, False]
    assert got[2]["id"] == got[0]["id"]
    assert got[3]["id"] != got[0]["id"]  # eventId is unique per organization
    assert _messages() == 3


def test_given_timestamp_becomes_the_payload_timestamp(client, org):
    resp = client.post(
        "/api/internal/events",
        json=_event(org, timestamp="2025-12-19T10:30:00Z"),
        headers=PLATFORM,
    )
    message_id = resp.json["messages"][0]["id"]
    with session_scope() as session:
        message = session.get(Message, message_id)
        assert message.timestamp == "2025-12-19T10:30:00.000Z"
        assert "timestamp" not in message.payload and "event" not in message.payload
        assert list(message.payload) == ["organizationId", "id", "state", "class", "createdAt"]


def test_a_bad_event_rejects_the_whole_array_naming_its_index(client, org):
    events = [_event(org), _event(org, id="sbx-2"), {"event": "sandbox.exploded", "id": "x"}]
    resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
    assert resp.status_code == 400
    assert resp.json["message"].startswith("event 2: ")
    unknown_org = [_event(org), {**_event(org), "organizationId": "org-000000000000000"}]
    resp = client.post("/api/internal/events", json=unknown_org, headers=PLATFORM)
    assert resp.status_code == 400 and resp.json["message"].startswith("event 1: ")
    assert _messages() == 0


def test_single_event_errors(client, org):
    cases = [
        ({"organizationId": org.id, "id": "x"}, 400, "event is required"),
        ({"event": "sandbox.unknown", "organizationId": org.id, "id": "x"}, 400,
         "Invalid event type: sandbox.unknown"),
        ({"event": "sandbox.created", "id": "x"}, 400, "organizationId is required"),
        ({"event": "sandbox.created", "organizationId": org.id}, 400, "id is required"),
        ({"event": "sandbox.created", "organizationId": org.id, "id": 5}, 400,
         "id must be a string"),
        ({"event": "sandbox.created", "organizationId": 5, "id": "x"}, 400,
         "organizationId must be a string"),
        ({"event": 5, "organizationId": org.id, "id": "x"}, 400, "event must be a string"),
        ({"event": "sandbox.created", "organizationId": org.id, "id": ""}, 400,
         "id must not be empty"),
        (_event(org, timestamp="yesterday"), 400, None),
        (_event(org, eventId=""), 400, None),
        # A state event must say the state it reports: a misspelt field would match nothing.
        ({"event": "sandbox.state.updated", "organizationId": org.id, "id": "x",
          "new_state": "stopped"}, 400, "newState is required"),
        ({"event": "volume.state.updated", "organizationId": org.id, "id": "x",
          "newState": 3}, 400, "newState must be a string"),
        ({"event": "sandbox.desired-state.updated", "organizationId": org.id, "id": "x",
          "newState": "stopped"}, 400, "newDesiredState is required"),
        ({**_event(org), "organizationId": "org-000000000000000"}, 404, None),
        ([], 400, None),
        ("text", 400, None),
    ]  # fmt: skip
    for body, status, message in cases:
        resp = client.post("/api/internal/events", json=body, headers=PLATFORM)
        assert resp.status_code == status, body
        if message:
            assert resp.json["message"] == message
    too_many = [_event(org, id=f"s{i}") for i in range(1001)]
    assert client.post("/api/internal/events", json=too_many, headers=PLATFORM).status_code in (
        400,
        413,
    )
    assert _messages() == 0
