"""The E2B-style team lifecycle hook at /events/webhooks/sandboxes, end to end."""

from __future__ import annotations

import json
import re
import time

import pytest
from standardwebhooks.webhooks import Webhook

from tests.conftest import PLATFORM
from tests.support.waiting import wait_until

HOOK = "/events/webhooks/sandboxes"
E2B_KEYS = [
    "eventCategory",
    "eventLabel",
    "eventData",
    "sandboxBuildId",
    "sandboxExecutionId",
    "sandboxId",
    "sandboxTeamId",
    "sandboxTemplateId",
    "timestamp",
]
ISO_MILLIS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _register(client, org, url, events=("create", "kill", "update", "pause", "resume")):
    resp = client.post(HOOK, json={"url": url, "events": list(events)}, headers=org.headers)
    assert resp.status_code == 201, resp.json
    return resp.json


def _assert_error(resp, status: int) -> str:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.json
    assert set(body) == {"code", "message"}, body
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


def _ingest(client, events: list[dict]) -> list[str]:
    resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
    assert resp.status_code == 202, resp.json
    return [m["id"] for m in resp.json["messages"]]


def _state(org, sandbox_id: str, old: str, new: str, **extra) -> dict:
    return {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": sandbox_id,
        "oldState": old,
        "newState": new,
        "updatedAt": "2025-12-19T10:30:00.000Z",
        **extra,
    }


def test_e2b_flow_register_get_patch_test_delete(client, org, make_receiver, worker):
    first, second = make_receiver(), make_receiver()

    created = _register(client, org, first.url + "/webhook", ["create", "kill", "update"])
    assert list(created) == ["teamID", "url", "events", "signatureSecret"]
    assert created["teamID"] == org.id
    assert created["url"] == first.url + "/webhook"
    assert created["events"] == ["create", "kill", "update"]
    assert created["signatureSecret"].startswith("whsec_")

    again = client.post(
        HOOK, json={"url": second.url + "/other", "events": ["kill"]}, headers=org.headers
    )
    _assert_error(again, 409)

    got = client.get(HOOK, headers=org.headers)
    assert got.status_code == 200
    assert got.json == {
        "teamID": org.id,
        "url": first.url + "/webhook",
        "events": created["events"],
    }

    patched = client.patch(
        HOOK, json={"url": second.url + "/updated", "events": ["kill"]}, headers=org.headers
    )
    assert patched.status_code == 200
    assert patched.json == {"teamID": org.id, "url": second.url + "/updated", "events": ["kill"]}
    assert client.get(HOOK, headers=org.headers).json == patched.json

    # The hook only subscribes to `kill`, yet the test is a `create` (docs/api.md §6.3).
    tested = client.post(HOOK + "/test", headers=org.headers)
    assert tested.status_code == 200
    assert tested.json["queued"] is True
    assert tested.json["eventLabel"] == "create"
    message_id = tested.json["messageId"]
    assert message_id.startswith("evt-")

    got = second.wait_for(1)[0]
    assert got.path == "/updated"
    payload = Webhook(created["signatureSecret"]).verify(got.body, got.headers)
    assert got.headers["webhook-id"] == message_id
    assert got.headers["content-type"] == "application/json"
    assert list(json.loads(got.body)) == E2B_KEYS
    assert payload["eventCategory"] == "lifecycle"
    assert payload["eventLabel"] == "create"
    assert payload["eventData"] == {"sandbox_metadata": {}}
    assert payload["sandboxTeamId"] == org.id
    assert isinstance(payload["sandboxId"], str) and payload["sandboxId"]
    # Every id an e2b receiver parses carries an example value.
    for key in ("sandboxBuildId", "sandboxExecutionId", "sandboxTemplateId"):
        assert isinstance(payload[key], str) and payload[key], key
    assert ISO_MILLIS_Z.fullmatch(payload["timestamp"])
    assert first.requests == []

    hook_id = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"][0][
        "endpoint_id"
    ]

    def test_delivery():
        rows = client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=org.headers).json["data"][
            "deliveries"
        ]
        return rows if rows and rows[0]["status"] == "delivered" else None

    rows = wait_until(test_delivery)
    assert [(r["event_id"], r["event_type"]) for r in rows] == [(message_id, "create")]

    deleted = client.delete(HOOK, headers=org.headers)
    assert deleted.status_code == 200
    assert deleted.json == {"deleted": True}
    _assert_error(client.get(HOOK, headers=org.headers), 404)
    _assert_error(client.delete(HOOK, headers=org.headers), 404)
    _assert_error(client.patch(HOOK, json={"events": ["kill"]}, headers=org.headers), 404)
    _assert_error(client.post(HOOK + "/test", headers=org.headers), 404)

    # Deleted, the team may register a new hook, with a new secret.
    renewed = _register(client, org, first.url + "/webhook", ["create"])
    assert renewed["signatureSecret"] != created["signatureSecret"]


def test_platform_events_reach_the_hook_with_their_e2b_labels(client, org, make_receiver, worker):
    receiver = make_receiver()
    hook = _register(client, org, receiver.url + "/e2b")
    at = "2026-01-02T03:04:05.678Z"
    message_ids = _ingest(
        client,
        [
            {
                "event": "sandbox.created",
                "organizationId": org.id,
                "id": "sbx-create",
                "state": "started",
                "class": "small",
                "createdAt": at,
                "templateId": "rki5dems9wqfm4r03t7g",
                "buildId": "a979a14b-bdcc-49e6-bc04-1189fc9fe7c2",
                "executionId": "1dae9a1c-9957-4ce7-a236-a99d5779aadf",
                "metadata": {"owner": "alice", "purpose": "ci"},
                "timestamp": at,
            },
            _state(org, "sbx-kill-destroyed", "stopped", "destroyed"),
            _state(org, "sbx-kill-terminated", "started", "TERMINATED"),
            _state(org, "sbx-pause", "started", "paused", metadata={"k": "v"}),
            _state(org, "sbx-resume", "paused", "started"),
            {
                "event": "sandbox.updated",
                "organizationId": org.id,
                "id": "sbx-update",
                "updatedAt": at,
                "changes": {"class": {"old": "small", "new": "large"}},
            },
            # No E2B label: never delivered to the hook.
            _state(org, "sbx-stop", "started", "stopped"),
            _state(org, "sbx-start", "stopped", "started"),
            {
                "event": "snapshot.created",
                "organizationId": org.id,
                "id": "snap-1",
                "name": "s",
                "state": "active",
            },
        ],
    )

    requests = receiver.wait_for(6)
    by_sandbox = {}
    for got in requests:
        payload = Webhook(hook["signatureSecret"]).verify(got.body, got.headers)
        assert list(json.loads(got.body)) == E2B_KEYS
        assert payload["eventCategory"] == "lifecycle"
        assert payload["sandboxTeamId"] == org.id
        by_sandbox[payload["sandboxId"]] = (payload, got.headers["webhook-id"])
    assert {sid: p["eventLabel"] for sid, (p, _) in by_sandbox.items()} == {
        "sbx-create": "create",
        "sbx-kill-destroyed": "kill",
        "sbx-kill-terminated": "kill",
        "sbx-pause": "pause",
        "sbx-resume": "resume",
        "sbx-update": "update",
    }

    create, create_id = by_sandbox["sbx-create"]
    assert create_id == message_ids[0]
    assert create == {
        "eventCategory": "lifecycle",
        "eventLabel": "create",
        "eventData": {"sandbox_metadata": {"owner": "alice", "purpose": "ci"}},
        "sandboxBuildId": "a979a14b-bdcc-49e6-bc04-1189fc9fe7c2",
        "sandboxExecutionId": "1dae9a1c-9957-4ce7-a236-a99d5779aadf",
        "sandboxId": "sbx-create",
        "sandboxTeamId": org.id,
        "sandboxTemplateId": "rki5dems9wqfm4r03t7g",
        "timestamp": at,
    }
    # Fields the platform did not report are null; metadata defaults to {}.
    kill, _ = by_sandbox["sbx-kill-destroyed"]
    assert kill["sandboxBuildId"] == ""
    assert kill["sandboxExecutionId"] == ""
    assert kill["sandboxTemplateId"] == ""
    assert kill["eventData"] == {"sandbox_metadata": {}}
    assert ISO_MILLIS_Z.fullmatch(kill["timestamp"])
    assert by_sandbox["sbx-pause"][0]["eventData"] == {"sandbox_metadata": {"k": "v"}}

    time.sleep(0.5)
    assert len(receiver.requests) == 6


def test_unsubscribed_label_is_not_delivered(client, org, make_receiver, worker):
    receiver = make_receiver()
    _register(client, org, receiver.url + "/kills", ["kill"])
    hook_id = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"][0][
        "endpoint_id"
    ]
    _ingest(
        client,
        [
            {"event": "sandbox.created", "organizationId": org.id, "id": "sbx-1"},
            _state(org, "sbx-1", "started", "paused"),
            _state(org, "sbx-1", "paused", "started"),
            {"event": "sandbox.updated", "organizationId": org.id, "id": "sbx-1"},
            _state(org, "sbx-1", "stopped", "destroyed"),
        ],
    )

    got = receiver.wait_for(1)
    assert json.loads(got[0].body)["eventLabel"] == "kill"
    # One batch is fanned out in one transaction: every delivery exists by now.
    rows = client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=org.headers).json["data"][
        "deliveries"
    ]
    assert [row["event_type"] for row in rows] == ["kill"]
    time.sleep(0.5)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    "events",
    [[], ["create", "explode"], ["sandbox.created"], ["*"], "create", [1], {"create": True}, None],
)
def test_bad_events_are_400_in_the_face_shape(client, org, events):
    message = _assert_error(
        client.post(
            HOOK, json={"url": "https://hooks.example.com/x", "events": events}, headers=org.headers
        ),
        400,
    )
    assert "events" in message or "event" in message.lower()
    _assert_error(client.get(HOOK, headers=org.headers), 404)

    _register(client, org, "https://hooks.example.com/x", ["create"])
    _assert_error(client.patch(HOOK, json={"events": events}, headers=org.headers), 400)
    assert client.get(HOOK, headers=org.headers).json["events"] == ["create"]


def test_bad_bodies_are_400_naming_the_problem(client, org):
    cases = [
        ({"events": ["create"]}, "url"),
        ({"url": "https://hooks.example.com/x"}, "events"),
        ({"url": "https://hooks.example.com/x", "events": ["create"], "secret": "x"}, "secret"),
        ({"url": "ftp://hooks.example.com/x", "events": ["create"]}, "http"),
        ({"url": 42, "events": ["create"]}, "url"),
        (["create"], ""),
        # The SSRF checks every endpoint gets (loopback is opened for the tests only).
        ({"url": "http://169.254.169.254/latest/meta-data", "events": ["create"]}, ""),
        ({"url": "http://10.0.0.1/hook", "events": ["create"]}, ""),
    ]
    for body, needle in cases:
        message = _assert_error(client.post(HOOK, json=body, headers=org.headers), 400)
        assert needle in message, (body, message)
    not_json = client.post(
        HOOK, data="url=x", headers={**org.headers, "Content-Type": "text/plain"}
    )
    _assert_error(not_json, 400)
    broken = client.post(
        HOOK, data="{", headers={**org.headers, "Content-Type": "application/json"}
    )
    _assert_error(broken, 400)
    _assert_error(client.get(HOOK, headers=org.headers), 404)

    _register(client, org, "https://hooks.example.com/x", ["create"])
    message = _assert_error(client.patch(HOOK, json={"description": "x"}, headers=org.headers), 400)
    assert "description" in message
    _assert_error(client.patch(HOOK, json={"url": None}, headers=org.headers), 400)
    _assert_error(
        client.patch(HOOK, json={"url": "http://user:pw@hooks.example.com/"}, headers=org.headers),
        400,
    )
    assert client.get(HOOK, headers=org.headers).json["url"] == "https://hooks.example.com/x"


def test_patch_changes_only_what_it_is_given(client, org):
    _register(client, org, "https://hooks.example.com/a", ["create", "kill"])
    before = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"][0]

    only_url = client.patch(HOOK, json={"url": "https://hooks.example.com/b"}, headers=org.headers)
    assert only_url.json == {
        "teamID": org.id,
        "url": "https://hooks.example.com/b",
        "events": ["create", "kill"],
    }
    only_events = client.patch(HOOK, json={"events": ["pause", "pause"]}, headers=org.headers)
    assert only_events.json["url"] == "https://hooks.example.com/b"
    assert only_events.json["events"] == ["pause"]
    nothing = client.patch(HOOK, json={}, headers=org.headers)
    assert nothing.status_code == 200
    assert nothing.json == only_events.json

    after = client.get(f"/v1/webhooks/{before['endpoint_id']}", headers=org.headers).json["data"]
    for field in ("endpoint_id", "scope", "payload_format", "timeout_seconds", "max_retries"):
        assert after[field] == before[field]
    assert after["is_active"] is True


def test_member_reads_and_tests_but_cannot_change(client, org, add_user):
    member, admin = add_user(org, "member"), add_user(org, "admin")
    body = {"url": "https://hooks.example.com/m", "events": ["create"]}

    _assert_error(client.post(HOOK, json=body, headers=member.headers), 403)
    _assert_error(client.get(HOOK, headers=member.headers), 404)
    assert client.post(HOOK, json=body, headers=admin.headers).status_code == 201

    got = client.get(HOOK, headers=member.headers)
    assert got.status_code == 200
    assert got.json == {"teamID": org.id, "url": body["url"], "events": ["create"]}
    tested = client.post(HOOK + "/test", headers=member.headers)
    assert tested.status_code == 200 and tested.json["queued"] is True

    _assert_error(client.post(HOOK, json=body, headers=member.headers), 403)
    _assert_error(client.patch(HOOK, json={"events": ["kill"]}, headers=member.headers), 403)
    _assert_error(client.delete(HOOK, headers=member.headers), 403)
    assert client.get(HOOK, headers=member.headers).json["events"] == ["create"]

    # Admins run the hook as root does.
    assert client.patch(HOOK, json={"events": ["kill"]}, headers=admin.headers).status_code == 200
    assert client.delete(HOOK, headers=admin.headers).json == {"deleted": True}


def test_another_organization_sees_nothing(client, org, make_org):
    other = make_org("Other")
    _register(client, org, "https://hooks.example.com/mine", ["create"])

    _assert_error(client.get(HOOK, headers=other.headers), 404)
    _assert_error(client.patch(HOOK, json={"events": ["kill"]}, headers=other.headers), 404)
    _assert_error(client.delete(HOOK, headers=other.headers), 404)
    _assert_error(client.post(HOOK + "/test", headers=other.headers), 404)

    theirs = _register(client, other, "https://hooks.example.com/theirs", ["kill"])
    assert theirs["teamID"] == other.id
    assert client.get(HOOK, headers=org.headers).json == {
        "teamID": org.id,
        "url": "https://hooks.example.com/mine",
        "events": ["create"],
    }


def test_credentials_errors_are_401_in_the_face_shape(client, org):
    body = {"url": "https://hooks.example.com/x", "events": ["create"]}
    for headers in ({}, {"X-API-Key": "wrong-key"}, PLATFORM, {"Authorization": "Bearer nope"}):
        _assert_error(client.get(HOOK, headers=headers), 401)
        _assert_error(client.post(HOOK, json=body, headers=headers), 401)
        _assert_error(client.patch(HOOK, json=body, headers=headers), 401)
        _assert_error(client.delete(HOOK, headers=headers), 401)
        _assert_error(client.post(HOOK + "/test", headers=headers), 401)
    # Authorization: Bearer <key> works as X-API-Key does.
    bearer = {"Authorization": f"Bearer {org.key}"}
    assert client.post(HOOK, json=body, headers=bearer).status_code == 201


def test_credentials_are_checked_before_the_body(client, org):
    bad_bodies = [
        ("POST", {"json": {"url": "https://hooks.example.com/x", "events": ["explode"]}}),
        ("POST", {"json": {"url": "https://hooks.example.com/x", "events": ["create"], "x": 1}}),
        ("POST", {"data": "url=x", "content_type": "application/x-www-form-urlencoded"}),
        ("PATCH", {"data": "{", "content_type": "application/json"}),
        ("PATCH", {}),
    ]
    for headers in ({}, {"X-API-Key": "wrong-key"}, PLATFORM):
        for method, kwargs in bad_bodies:
            _assert_error(client.open(HOOK, method=method, headers=headers, **kwargs), 401)
    # With the team's key, the same bodies are 400.
    for method, kwargs in bad_bodies:
        _assert_error(client.open(HOOK, method=method, headers=org.headers, **kwargs), 400)


def test_unknown_routes_wrong_methods_and_large_bodies_use_the_face_shape(client, org):
    _assert_error(client.get(HOOK + "/nope", headers=org.headers), 404)
    _assert_error(client.get("/events/webhooks/other", headers=org.headers), 404)
    wrong = client.put(HOOK, json={}, headers=org.headers)
    _assert_error(wrong, 405)
    assert "PATCH" in wrong.headers["Allow"]
    _assert_error(client.get(HOOK + "/test", headers=org.headers), 405)
    huge = {"url": "https://hooks.example.com/x", "events": ["create"], "pad": "x" * 300_000}
    _assert_error(client.post(HOOK, json=huge, headers=org.headers), 413)


def test_test_on_a_disabled_hook_is_409(client, org):
    _register(client, org, "https://hooks.example.com/x", ["create"])
    hook_id = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"][0][
        "endpoint_id"
    ]
    resp = client.put(f"/v1/webhooks/{hook_id}", json={"is_active": False}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    _assert_error(client.post(HOOK + "/test", headers=org.headers), 409)
    assert client.get(HOOK, headers=org.headers).status_code == 200


def test_hook_is_listed_on_v1_as_an_account_endpoint(client, org, add_user):
    _register(client, org, "https://hooks.example.com/x", ["create", "kill"])
    member = add_user(org, "member")
    for caller in (org, member):
        hooks = client.get("/v1/webhooks", headers=caller.headers).json["data"]["webhooks"]
        assert len(hooks) == 1
        hook = hooks[0]
        assert hook["endpoint_id"].startswith("whk-")
        assert hook["scope"] == "account"
        assert hook["user_id"] is None
        assert hook["payload_format"] == "e2b"
        assert hook["event_types"] == ["create", "kill"]
        assert hook["url"] == "https://hooks.example.com/x"


def test_openapi_documents_the_face(client):
    spec = client.get("/openapi.json").json
    path = spec["paths"][HOOK]
    assert set(path) >= {"get", "post", "patch", "delete"}
    assert "post" in spec["paths"][HOOK + "/test"]
    assert "422" not in path["post"]["responses"]
    assert path["post"]["responses"]["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TeamHookError"
    }
    created = spec["components"]["schemas"]["TeamHookCreated"]["properties"]
    assert list(created) == ["teamID", "url", "events", "signatureSecret"]
    labels = spec["components"]["schemas"]["TeamHookCreate"]["properties"]["events"]["items"]
    assert labels["enum"] == ["create", "kill", "update", "pause", "resume"]


def test_racing_registrations_leave_one_hook_and_a_conflict(org):
    """Two registrations that both pass the existence check: the unique index decides."""
    import threading

    from shared.db import get_sessionmaker
    from shared.errors import Conflict
    from shared.services import team_hooks
    from shared.services.auth import Principal

    root = Principal(user_id=org.user_id, organization_id=org.id, role="root")
    factory = get_sessionmaker()
    outcome: dict[str, object] = {}

    with factory() as first:
        team_hooks.register(
            first, principal=root, url="https://hooks.example.com/a", events=["kill"]
        )

        def second() -> None:
            with factory() as session:
                try:
                    team_hooks.register(
                        session,
                        principal=root,
                        url="https://hooks.example.com/b",
                        events=["create"],
                    )
                    session.commit()
                    outcome["second"] = "registered"
                except Conflict as exc:
                    session.rollback()
                    outcome["second"] = exc

        racer = threading.Thread(target=second)
        racer.start()
        # The second insert waits on the first transaction's index entry.
        time.sleep(0.5)
        first.commit()
        racer.join(timeout=10)

    assert isinstance(outcome["second"], Conflict)
    with factory() as session:
        hook = team_hooks.get(session, principal=root)
        assert hook.url == "https://hooks.example.com/a"


def test_routes_without_a_body_refuse_fields_sent_to_them(client, org, receiver):
    _register(client, org, receiver.url + "/hook")
    message = _assert_error(client.delete(HOOK, json={"force": True}, headers=org.headers), 400)
    assert "force" in message
    assert client.get(HOOK, headers=org.headers).status_code == 200  # still there
    _assert_error(client.post(HOOK + "/test", json=[1], headers=org.headers), 400)
    # An empty object is no body at all.
    assert client.delete(HOOK, json={}, headers=org.headers).status_code == 200
