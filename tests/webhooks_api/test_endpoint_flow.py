"""The flow-control options of endpoints on every face: ``ordering`` and the rate limit.

docs/api.md §11.3 and §11.6: set at creation, changed by update, shown wherever
endpoints are shown (snake_case on /v1, camelCase on /api/webhooks), and every bad value
is a 400 naming the field in the face's own error shape, with nothing written.
"""

from __future__ import annotations

import pytest

from shared.db import session_scope
from shared.models import Endpoint

BASE = "/api/webhooks/organizations"
BAD_ORDERINGS = ["fifo", "", "Resource", 1, None, ["resource"]]
BAD_RATES = [0, 10_001, -5, "5", 2.5, True, {}]


def _v1(client, org, **body):
    return client.post(
        "/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["sandbox.started"], **body},
        headers=org.headers,
    )


def _org_face(client, org, **body):
    return client.post(
        f"{BASE}/{org.id}/endpoints",
        json={"url": "http://127.0.0.1:9/hook", "eventTypes": ["sandbox.*"], **body},
        headers=org.headers,
    )


def _count() -> int:
    with session_scope() as session:
        return session.query(Endpoint).count()


def test_v1_sets_shows_and_changes_ordering_and_rate_limit(client, org):
    plain = _v1(client, org).json["data"]
    assert (plain["ordering"], plain["rate_limit"]) == ("none", None)
    created = _v1(client, org, ordering="resource", rate_limit=50).json["data"]
    assert (created["ordering"], created["rate_limit"]) == ("resource", 50)
    path = f"/v1/webhooks/{created['endpoint_id']}"
    changed = client.put(path, json={"ordering": "none", "rate_limit": None}, headers=org.headers)
    assert (changed.json["data"]["ordering"], changed.json["data"]["rate_limit"]) == ("none", None)
    listed = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"]
    assert {(w["ordering"], w["rate_limit"]) for w in listed} == {("none", None)}


@pytest.mark.parametrize(
    ("body", "field"),
    [*(({"ordering": v}, "ordering") for v in BAD_ORDERINGS)]
    + [*(({"rate_limit": v}, "rate_limit") for v in BAD_RATES)],
)
def test_v1_refuses_bad_values_naming_the_field(client, org, body, field):
    resp = _v1(client, org, **body)
    assert resp.status_code == 400 and resp.json["success"] is False
    assert resp.json["error"].startswith(field), resp.json
    assert _count() == 0
    endpoint = _v1(client, org).json["data"]
    resp = client.put(f"/v1/webhooks/{endpoint['endpoint_id']}", json=body, headers=org.headers)
    assert resp.status_code == 400 and resp.json["error"].startswith(field), resp.json
    shown = client.get(f"/v1/webhooks/{endpoint['endpoint_id']}", headers=org.headers).json["data"]
    assert (shown["ordering"], shown["rate_limit"]) == ("none", None)


def test_the_organization_face_sets_shows_and_changes_them_in_camel_case(client, org):
    created = _org_face(client, org, ordering="resource", rateLimit=10_000)
    assert created.status_code == 201, created.json
    assert (created.json["ordering"], created.json["rateLimit"]) == ("resource", 10_000)
    path = f"{BASE}/{org.id}/endpoints/{created.json['id']}"
    changed = client.patch(path, json={"rateLimit": 1}, headers=org.headers).json
    assert (changed["ordering"], changed["rateLimit"]) == ("resource", 1)
    shown = client.get(path, headers=org.headers).json
    assert (shown["ordering"], shown["rateLimit"]) == ("resource", 1)
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["items"]
    assert [(e["ordering"], e["rateLimit"]) for e in listed] == [("resource", 1)]


@pytest.mark.parametrize(
    ("body", "field"),
    [*(({"ordering": v}, "ordering") for v in BAD_ORDERINGS)]
    + [*(({"rateLimit": v}, "rateLimit") for v in BAD_RATES)],
)
def test_the_organization_face_refuses_bad_values_naming_the_field(client, org, body, field):
    resp = _org_face(client, org, **body)
    assert resp.status_code == 400, resp.json
    assert set(resp.json) == {"statusCode", "error", "message"}
    assert resp.json["message"].startswith(field), resp.json
    assert _count() == 0
    created = _org_face(client, org).json
    resp = client.patch(
        f"{BASE}/{org.id}/endpoints/{created['id']}", json=body, headers=org.headers
    )
    assert resp.status_code == 400 and resp.json["message"].startswith(field), resp.json


def test_the_team_hook_is_ordered_and_its_face_does_not_show_it(client, org):
    resp = client.post(
        "/events/webhooks/sandboxes",
        json={"url": "http://127.0.0.1:9/hook", "events": ["create", "kill"]},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    assert "ordering" not in resp.json
    hook = client.get("/events/webhooks/sandboxes", headers=org.headers).json
    assert "ordering" not in hook and "rateLimit" not in hook
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["items"]
    assert [(e["category"], e["ordering"]) for e in listed] == [("team-hook", "resource")]


def test_the_openapi_document_describes_both_options(client):
    spec = client.get("/openapi.json").json
    text = str(spec)
    assert "webhook-sequence" in text and "attempts per second" in text
