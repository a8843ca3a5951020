"""The /v1/webhooks face: envelope, validation, scoping, pagination, rotation, deletion."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Endpoint
from shared.services.endpoint_secrets import MAX_SIGNING_SECRETS
from tests.conftest import ADMIN_TOKEN, PLATFORM
from tests.support.outage import without_database

HOOK = "http://127.0.0.1:9/hook"


def _endpoint_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Endpoint))


def _create(client, org, **body):
    body.setdefault("url", HOOK)
    body.setdefault("event_types", ["sandbox.started"])
    return client.post("/v1/webhooks", json=body, headers=org.headers)


def test_create_answers_envelope_with_secret_once(client, org):
    resp = _create(client, org, description="Production lifecycle webhook")
    assert resp.status_code == 201
    body = resp.json
    assert body["success"] is True and body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["endpoint_id"].startswith("whk-") and len(data["endpoint_id"]) == 19
    assert data["secret"].startswith("whsec_")
    assert data["event_types"] == ["sandbox.started"]
    assert data["is_active"] is True
    assert (data["timeout_seconds"], data["max_retries"]) == (30, 3)
    assert data["scope"] == "user" and data["user_id"] == org.user_id
    assert data["account_id"] == org.id
    assert data["payload_format"] == "envelope"
    assert data["total_deliveries"] == 0 and data["last_delivery_at"] is None
    fetched = client.get(f"/v1/webhooks/{data['endpoint_id']}", headers=org.headers).json["data"]
    assert "secret" not in fetched
    listed = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"]
    assert all("secret" not in w for w in listed)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"event_types": ["sandbox.unknown"]}, "Invalid event type: sandbox.unknown"),
        ({"event_types": ["sandbox.*"]}, "Invalid event type: sandbox.*"),
        ({"event_types": ["sandbox.state.updated"]}, "Invalid event type: sandbox.state.updated"),
        ({"event_types": []}, "event_types must be a non-empty list"),
        ({"event_types": "sandbox.started"}, "event_types: Not a valid list."),
        ({"url": "ftp://example.com/x"}, "URL must use http or https"),
        ({"url": "example.com/hook"}, "URL must use http or https"),
        (
            {"url": "http://exa mple.com/"},
            "URL must not contain spaces, control characters or backslashes",
        ),
        ({"url": "http://user:pw@127.0.0.1:9/x"}, "URL must not contain credentials"),
        ({"scope": "team"}, "scope must be 'user' or 'account'"),
        ({"timeout_seconds": 4}, "timeout_seconds must be an integer between 5 and 300"),
        ({"timeout_seconds": 301}, "timeout_seconds must be an integer between 5 and 300"),
        ({"timeout_seconds": "30"}, "timeout_seconds: Not a valid integer."),
        ({"max_retries": -1}, "max_retries must be an integer between 0 and 10"),
        ({"max_retries": 11}, "max_retries must be an integer between 0 and 10"),
        ({"colour": "red"}, "Unknown field: colour"),
    ],
)
def test_create_rejects_bad_input_with_envelope_and_no_row(client, org, body, error):
    resp = _create(client, org, **body)
    assert resp.status_code == 400
    assert resp.json["success"] is False
    assert resp.json["error"] == error
    assert resp.json["timestamp"].endswith("Z")
    assert _endpoint_count() == 0


def test_missing_required_fields_and_malformed_bodies_are_400(client, org):
    resp = client.post("/v1/webhooks", json={"url": HOOK}, headers=org.headers)
    assert resp.status_code == 400
    assert resp.json["error"] == "event_types: Missing data for required field."
    resp = client.post(
        "/v1/webhooks",
        data="{not json",
        headers={**org.headers, "Content-Type": "application/json"},
    )
    assert (resp.status_code, resp.json["error"]) == (400, "Request body is not valid JSON")
    resp = client.post(
        "/v1/webhooks", data="url=x", headers={**org.headers, "Content-Type": "text/plain"}
    )
    assert resp.status_code == 400 and resp.json["success"] is False
    resp = client.post("/v1/webhooks", json=[1, 2], headers=org.headers)
    assert resp.status_code == 400
    resp = client.post(
        "/v1/webhooks",
        data='{"url": "http://127.0.0.1:9/x", "event_types": ["sandbox.started"], "n": NaN}',
        headers={**org.headers, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert _endpoint_count() == 0


def test_credentials_are_required(client, org):
    assert client.get("/v1/webhooks").status_code == 401
    resp = client.get("/v1/webhooks", headers={"X-API-Key": "whk_live_wrong"})
    assert resp.status_code == 401 and resp.json["success"] is False
    # The platform token opens only the platform's routes.
    assert client.get("/v1/webhooks", headers=PLATFORM).status_code == 401
    bearer = {"Authorization": f"Bearer {org.key}"}
    assert client.get("/v1/webhooks", headers=bearer).status_code == 200
    assert ADMIN_TOKEN not in client.get("/v1/webhooks", headers=PLATFORM).get_data(as_text=True)


# Bodies each refused with 400 once the caller is known: bad field, not JSON, broken JSON,
# unknown field, no body on an update, a missing required field, a bad query.
BAD_REQUESTS = [
    ("POST", "/v1/webhooks", {"json": {"url": 5, "event_types": ["sandbox.started"]}}),
    ("POST", "/v1/webhooks", {"data": "url=x", "content_type": "text/plain"}),
    ("POST", "/v1/webhooks", {"data": "{", "content_type": "application/json"}),
    ("PUT", "/v1/webhooks/{id}", {"json": {"colour": "red"}}),
    ("PUT", "/v1/webhooks/{id}", {}),
    ("POST", "/v1/webhooks/{id}/recover", {"json": {}}),
    ("GET", "/v1/webhooks?limit=abc", {}),
]


@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "whk_live_wrong"}, PLATFORM], ids=["none", "wrong", "platform"]
)
def test_credentials_are_checked_before_the_body(client, org, headers):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    for method, path, kwargs in BAD_REQUESTS:
        path = path.format(id=endpoint_id)
        assert client.open(path, method=method, headers=org.headers, **kwargs).status_code == 400
        resp = client.open(path, method=method, headers=headers, **kwargs)
        assert resp.status_code == 401, (method, path, resp.json)
        assert resp.json["success"] is False and resp.json["error"]


def test_a_database_outage_while_authenticating_is_503_with_retry_after(org):
    answers = without_database(
        *[(m, p.format(id="whk-x"), org.headers, kwargs) for m, p, kwargs in BAD_REQUESTS]
    )
    assert [(a.status, a.retry_after) for a in answers] == [(503, "5")] * len(BAD_REQUESTS)
    assert all(a.body["success"] is False for a in answers)


def test_another_organizations_endpoint_is_404(client, org, make_org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    other = make_org("Other")
    for method, suffix, body in [
        ("get", "", None),
        ("put", "", {"description": "x"}),
        ("delete", "", None),
        ("get", "/deliveries", None),
        ("post", "/rotate-secret", None),
        ("post", "/recover", {"since": "2025-01-01T00:00:00Z"}),
    ]:
        resp = getattr(client, method)(
            f"/v1/webhooks/{endpoint_id}{suffix}", json=body, headers=other.headers
        )
        assert resp.status_code == 404, (method, suffix)
        assert resp.json["error"] == f"Webhook endpoint {endpoint_id} not found"
    assert client.get("/v1/webhooks", headers=other.headers).json["data"]["webhooks"] == []


def test_member_scope_rules(client, org, add_user):
    member = add_user(org, "member")
    other_member = add_user(org, "member")
    admin = add_user(org, "admin")
    account = _create(client, admin, scope="account").json["data"]
    assert account["user_id"] is None and account["scope"] == "account"
    mine = _create(client, member).json["data"]
    theirs = _create(client, other_member).json["data"]

    resp = _create(client, member, scope="account")
    assert resp.status_code == 403 and resp.json["success"] is False
    seen = {
        w["endpoint_id"]
        for w in client.get("/v1/webhooks", headers=member.headers).json["data"]["webhooks"]
    }
    assert seen == {account["endpoint_id"], mine["endpoint_id"]}
    assert all(
        "account_id" not in w
        for w in client.get("/v1/webhooks", headers=member.headers).json["data"]["webhooks"]
    )
    # Visible but not theirs to change: 403; invisible: 404.
    resp = client.put(
        f"/v1/webhooks/{account['endpoint_id']}", json={"description": "x"}, headers=member.headers
    )
    assert resp.status_code == 403
    resp = client.get(f"/v1/webhooks/{theirs['endpoint_id']}", headers=member.headers)
    assert resp.status_code == 404
    resp = client.put(
        f"/v1/webhooks/{mine['endpoint_id']}", json={"scope": "account"}, headers=member.headers
    )
    assert resp.status_code == 403
    resp = client.put(
        f"/v1/webhooks/{mine['endpoint_id']}", json={"max_retries": 5}, headers=member.headers
    )
    assert resp.status_code == 200 and resp.json["data"]["max_retries"] == 5
    admin_view = client.get("/v1/webhooks", headers=admin.headers).json["data"]["webhooks"]
    assert len(admin_view) == 3


def test_account_level_types_need_root_and_account_scope(client, org, add_user):
    admin = add_user(org, "admin")
    resp = _create(client, org, scope="account", event_types=["payment.failed"])
    assert resp.status_code == 201
    resp = _create(client, admin, scope="account", event_types=["payment.failed"])
    assert resp.status_code == 403
    resp = _create(client, org, scope="user", event_types=["budget.exceeded"])
    assert resp.status_code == 400
    assert _endpoint_count() == 1


def test_scope_change_keeps_subscriptions_written_on_another_face(client, org, add_user):
    # docs/api.md §4.1: /v1's vocabulary applies to the names a PUT writes; the stored ones,
    # given on /api/webhooks, are kept and shown as they are.
    admin = add_user(org, "admin")
    stored = ["sandbox.*", "create", "snapshot.created"]
    resp = client.post(
        f"/api/webhooks/organizations/{org.id}/endpoints",
        json={"url": HOOK, "eventTypes": stored},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    url = f"/v1/webhooks/{resp.json['id']}"

    resp = client.put(url, json={"scope": "user"}, headers=admin.headers)
    assert resp.status_code == 200, resp.json
    data = resp.json["data"]
    assert (data["scope"], data["user_id"], data["event_types"]) == (
        "user",
        admin.user_id,
        stored,
    )
    resp = client.put(url, json={"scope": "account"}, headers=admin.headers)
    assert resp.status_code == 200, resp.json
    assert (resp.json["data"]["scope"], resp.json["data"]["event_types"]) == ("account", stored)
    # Names written with the scope are still held to /v1's column.
    resp = client.put(
        url, json={"scope": "user", "event_types": ["sandbox.*"]}, headers=org.headers
    )
    assert (resp.status_code, resp.json["error"]) == (400, "Invalid event type: sandbox.*")
    assert client.get(url, headers=org.headers).json["data"]["scope"] == "account"


def test_scope_change_still_applies_the_account_level_rules(client, org, add_user):
    admin = add_user(org, "admin")
    member = add_user(org, "member")
    endpoint_id = _create(
        client, org, scope="account", event_types=["payment.failed", "sandbox.started"]
    ).json["data"]["endpoint_id"]
    url = f"/v1/webhooks/{endpoint_id}"
    message = "Account-level event types require a root user and an account-scoped webhook"
    # Account-level types live on account-scoped endpoints only (docs/api.md §3).
    resp = client.put(url, json={"scope": "user"}, headers=org.headers)
    assert (resp.status_code, resp.json["error"]) == (400, message)
    resp = client.put(url, json={"scope": "user"}, headers=admin.headers)
    assert resp.status_code == 403
    # Dropping them in the same request makes the move valid.
    resp = client.put(
        url, json={"scope": "user", "event_types": ["sandbox.started"]}, headers=org.headers
    )
    assert resp.status_code == 200, resp.json
    assert resp.json["data"]["scope"] == "user"
    # Making an endpoint account-scoped needs root or admin.
    mine = _create(client, member).json["data"]["endpoint_id"]
    resp = client.put(f"/v1/webhooks/{mine}", json={"scope": "account"}, headers=member.headers)
    assert resp.status_code == 403


def test_pagination_page_limit_offset_aliases(client, org):
    ids = [_create(client, org).json["data"]["endpoint_id"] for _ in range(5)]

    def page(query):
        data = client.get(f"/v1/webhooks?{query}", headers=org.headers).json["data"]
        return [w["endpoint_id"] for w in data["webhooks"]], data["pagination"]

    got, pagination = page("limit=2")
    assert got == ids[:2]
    assert pagination == {"page": 1, "limit": 2, "total": 5, "total_pages": 3}
    assert page("limit=2&page=3")[0] == ids[4:]
    assert page("page_size=2&page=2")[0] == ids[2:4]
    assert page("limit=2&offset=1")[0] == ids[1:3]
    assert page("limit=2&skip=3&page=1")[0] == ids[3:5]
    for bad in ("limit=0", "limit=201", "page=0", "offset=-1", "limit=abc"):
        resp = client.get(f"/v1/webhooks?{bad}", headers=org.headers)
        assert resp.status_code == 400, bad
        assert resp.json["success"] is False


def test_update_changes_fields_and_validates(client, org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}",
        json={
            "url": "http://127.0.0.1:9/new",
            "event_types": ["sandbox.started", "sandbox.failed", "sandbox.terminated"],
            "is_active": False,
            "description": "Paused temporarily",
            "timeout_seconds": 60,
            "max_retries": 0,
            "payload_format": "daytona",
        },
        headers=org.headers,
    )
    assert resp.status_code == 200
    data = resp.json["data"]
    assert data["is_active"] is False and data["description"] == "Paused temporarily"
    assert data["event_types"] == ["sandbox.started", "sandbox.failed", "sandbox.terminated"]
    assert (data["timeout_seconds"], data["max_retries"]) == (60, 0)
    assert data["payload_format"] == "daytona"
    for body, error in [
        ({"event_types": ["nope"]}, "Invalid event type: nope"),
        ({"timeout_seconds": 0}, "timeout_seconds must be an integer between 5 and 300"),
        ({"is_active": "yes"}, "is_active: Not a valid boolean."),
        ({"payload_format": "xml"}, "payload format must be one of daytona, envelope, e2b"),
        ({"secret": "x"}, "Unknown field: secret"),
    ]:
        resp = client.put(f"/v1/webhooks/{endpoint_id}", json=body, headers=org.headers)
        assert (resp.status_code, resp.json["error"]) == (400, error)
    unchanged = client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).json["data"]
    assert unchanged["url"] == "http://127.0.0.1:9/new"


def test_delete_answers_message_and_hides_endpoint(client, org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    resp = client.delete(f"/v1/webhooks/{endpoint_id}", headers=org.headers)
    assert resp.status_code == 200
    assert resp.json["success"] is True
    assert resp.json["message"] == "Webhook endpoint deleted successfully"
    assert "data" not in resp.json
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 404
    assert client.delete(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 404


def test_deliveries_limit_is_validated(client, org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    url = f"/v1/webhooks/{endpoint_id}/deliveries"
    assert client.get(url, headers=org.headers).json["data"] == {"deliveries": []}
    for bad in ("0", "201", "x"):
        assert client.get(f"{url}?limit={bad}", headers=org.headers).status_code == 400


def test_unknown_route_and_wrong_method_use_the_envelope(client, org):
    resp = client.get("/v1/webhooks/whk-x/nothing", headers=org.headers)
    assert resp.status_code == 404 and resp.json["success"] is False
    resp = client.patch("/v1/webhooks", json={}, headers=org.headers)
    assert resp.status_code == 405 and resp.json["success"] is False


def test_oversized_body_is_413(client, org):
    big = {"url": HOOK, "event_types": ["sandbox.started"], "description": "x" * 300_000}
    resp = client.post("/v1/webhooks", json=big, headers=org.headers)
    assert resp.status_code == 413 and resp.json["success"] is False
    assert _endpoint_count() == 0


def test_rotate_secret_refuses_fields_it_does_not_take(client, org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    path = f"/v1/webhooks/{endpoint_id}/rotate-secret"
    refused = client.post(path, json={"secret": "whsec_mine"}, headers=org.headers)
    assert refused.status_code == 400
    assert refused.json["success"] is False and refused.json["error"] == "Unknown field: secret"
    assert client.post(path, json={}, headers=org.headers).status_code == 200
    assert client.post(path, headers=org.headers).status_code == 200


def test_a_rotation_past_the_signing_secret_cap_is_409_in_the_envelope(client, org):
    endpoint_id = _create(client, org).json["data"]["endpoint_id"]
    path = f"/v1/webhooks/{endpoint_id}/rotate-secret"
    for _ in range(MAX_SIGNING_SECRETS - 1):
        assert client.post(path, headers=org.headers).status_code == 200
    refused = client.post(path, headers=org.headers)
    assert refused.status_code == 409
    assert refused.json["success"] is False
    assert refused.json["error"].startswith("Too many rotations")
    assert refused.json["timestamp"].endswith("Z")
