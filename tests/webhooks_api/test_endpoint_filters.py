"""Payload filters end to end: set and shown on both faces, refused naming the key, and applied
at fan-out (every ingest path) so that only matching events make deliveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Delivery, Endpoint
from shared.services.ingest import INLINE_FANOUT_ENDPOINTS
from tests.conftest import PLATFORM
from tests.support.waiting import wait_until

ORGS = "/api/webhooks/organizations"
STATE = "sandbox.state.updated"
FILTER = {"newState": ["started", "stopped"], "metadata.team": "blue", "cpu": {"$gte": 2}}


def _v1(client, org, url: str, **extra) -> dict:
    body = {"url": url, "event_types": ["sandbox.started", "sandbox.stopped"], **extra}
    resp = client.post("/v1/webhooks", json=body, headers=org.headers)
    assert resp.status_code == 201, resp.json
    return resp.json["data"]


def _daytona(client, org, url: str, **extra) -> dict:
    body = {"url": url, "eventTypes": [], **extra}
    resp = client.post(f"{ORGS}/{org.id}/endpoints", json=body, headers=org.headers)
    assert resp.status_code == 201, resp.json
    return resp.json


def _state_event(org, sandbox: str, new_state: str, **extra) -> dict:
    return {
        "event": STATE,
        "organizationId": org.id,
        "id": sandbox,
        "oldState": "creating",
        "newState": new_state,
        "updatedAt": "2025-12-19T10:30:00.000Z",
        **extra,
    }


def _ingest(client, body) -> list[str]:
    resp = client.post("/api/internal/events", json=body, headers=PLATFORM)
    assert resp.status_code == 202, resp.json
    return [m["id"] for m in resp.json["messages"]]


def _delivered_messages(endpoint_id: str) -> set[str]:
    with session_scope() as session:
        query = select(Delivery.message_id).where(Delivery.endpoint_id == endpoint_id)
        return set(session.scalars(query))


def _webhook_ids(receiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests}


# ---- the option on both faces --------------------------------------------------------------


def test_a_filter_is_set_shown_changed_and_cleared_on_both_faces(client, org, receiver):
    created = _v1(client, org, receiver.url + "/a", filter=FILTER)
    endpoint_id = created["endpoint_id"]
    assert created["filter"] == FILTER
    v1 = f"/v1/webhooks/{endpoint_id}"
    daytona = f"{ORGS}/{org.id}/endpoints/{endpoint_id}"
    assert client.get(v1, headers=org.headers).json["data"]["filter"] == FILTER
    assert client.get(daytona, headers=org.headers).json["filter"] == FILTER
    listed = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"]
    assert [w["filter"] for w in listed] == [FILTER]
    items = client.get(f"{ORGS}/{org.id}/endpoints", headers=org.headers).json["items"]
    assert [i["filter"] for i in items] == [FILTER]

    changed = {"class": {"$in": ["small", "medium"]}}
    resp = client.patch(daytona, json={"filter": changed}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    assert resp.json["filter"] == changed
    # An update that does not name the filter leaves it as it was.
    resp = client.put(v1, json={"description": "x"}, headers=org.headers)
    assert resp.json["data"]["filter"] == changed
    resp = client.put(v1, json={"filter": None}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    assert resp.json["data"]["filter"] is None
    assert client.get(daytona, headers=org.headers).json["filter"] is None

    made = _daytona(client, org, receiver.url + "/b", filter={"id": {"$prefix": "sbx-"}})
    assert made["filter"] == {"id": {"$prefix": "sbx-"}}
    resp = client.patch(
        f"{ORGS}/{org.id}/endpoints/{made['id']}", json={"filter": {}}, headers=org.headers
    )
    assert resp.json["filter"] is None  # {} is no filter, shown as null
    assert _daytona(client, org, receiver.url + "/c")["filter"] is None


BAD_FILTERS = [
    ({"": 1}, '""'),
    ({"metadata..team": "x"}, '"metadata..team"'),
    ({"newState": {"$regex": "st.*"}}, '"newState"'),
    ({"cpu": {"$gt": 1, "$lt": 5}}, '"cpu"'),
    ({"metadata": {"team": "blue"}}, '"metadata"'),
    ({"class": {"$in": "small"}}, '"class"'),
    ({"class": {"$exists": "yes"}}, '"class"'),
    ({"id": {"$prefix": 5}}, '"id"'),
    ({"updatedAt": {"$gt": "yesterday"}}, '"updatedAt"'),
    ({"class": [["small"]]}, '"class"'),
    ({"$or": [{"class": "small"}]}, '"$or"'),
]


@pytest.mark.parametrize(("bad", "key"), BAD_FILTERS)
def test_an_invalid_filter_is_400_naming_the_key_on_both_faces(client, org, receiver, bad, key):
    existing = _v1(client, org, receiver.url + "/kept", filter={"class": "small"})
    endpoint_id = existing["endpoint_id"]
    url = receiver.url + "/refused"

    v1_answers = [
        client.post(
            "/v1/webhooks",
            json={"url": url, "event_types": ["sandbox.created"], "filter": bad},
            headers=org.headers,
        ),
        client.put(f"/v1/webhooks/{endpoint_id}", json={"filter": bad}, headers=org.headers),
    ]
    for resp in v1_answers:
        assert resp.status_code == 400, resp.json
        assert set(resp.json) == {"success", "error", "timestamp"}
        assert resp.json["success"] is False
        assert f"filter key {key}" in resp.json["error"]

    daytona_answers = [
        client.post(
            f"{ORGS}/{org.id}/endpoints",
            json={"url": url, "eventTypes": [], "filter": bad},
            headers=org.headers,
        ),
        client.patch(
            f"{ORGS}/{org.id}/endpoints/{endpoint_id}", json={"filter": bad}, headers=org.headers
        ),
    ]
    for resp in daytona_answers:
        assert resp.status_code == 400, resp.json
        assert resp.json["statusCode"] == 400 and resp.json["error"] == "Bad Request"
        assert f"filter key {key}" in resp.json["message"]

    # Nothing was written: no endpoint made, the existing filter unchanged.
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Endpoint)) == 1
        assert session.get(Endpoint, endpoint_id).filter == {"class": "small"}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("class=small", "filter must be a JSON object or null"),
        ([{"class": "small"}], "filter must be a JSON object or null"),
        ({f"k{i}": i for i in range(21)}, "at most 20"),
        ({"k": "x" * 4096}, "at most 4096"),
    ],
)
def test_a_filter_that_is_not_an_object_or_too_large_is_400_on_both_faces(
    client, org, receiver, bad, words
):
    resp = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.created"], "filter": bad},
        headers=org.headers,
    )
    assert resp.status_code == 400 and words in resp.json["error"], resp.json
    resp = client.post(
        f"{ORGS}/{org.id}/endpoints",
        json={"url": receiver.url, "eventTypes": [], "filter": bad},
        headers=org.headers,
    )
    assert resp.status_code == 400 and words in resp.json["message"], resp.json


def test_the_openapi_documents_describe_the_filter_on_both_faces(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    described = [
        name
        for name, schema in schemas.items()
        if "filter" in schema.get("properties", {})
        and "$prefix" in schema["properties"]["filter"].get("description", "")
    ]
    for expected in ("V1EndpointCreate", "V1EndpointUpdate", "EndpointCreate", "EndpointUpdate"):
        assert expected in described, described


# ---- applied at fan-out --------------------------------------------------------------------


def test_only_matching_events_make_deliveries_single_and_array(client, org, make_receiver, worker):
    filtered, everything = make_receiver(), make_receiver()
    narrow = _v1(client, org, filtered.url + "/f", filter=FILTER)["endpoint_id"]
    wide = _v1(client, org, everything.url + "/all")["endpoint_id"]
    team = {"metadata": {"team": "blue"}, "cpu": 2}

    matching, failing = [], []
    # One event per request: the single-event path.
    matching += _ingest(client, _state_event(org, "sbx-1", "STARTED", **team))
    failing += _ingest(client, _state_event(org, "sbx-2", "started", metadata={"team": "red"}))
    failing += _ingest(client, _state_event(org, "sbx-3", "stopped", metadata={"team": "blue"}))
    # An array: the transactional path, in input order.
    ids = _ingest(
        client,
        [
            _state_event(org, "sbx-4", "stopped", **{**team, "cpu": 4}),
            _state_event(org, "sbx-5", "started", metadata={"team": "blue"}, cpu=1),
            _state_event(org, "sbx-6", "Stopped", **team),
            _state_event(org, "sbx-7", "started", **{**team, "metadata": "blue"}),
        ],
    )
    matching += [ids[0], ids[2]]
    failing += [ids[1], ids[3]]

    assert _delivered_messages(narrow) == set(matching)
    assert _delivered_messages(wide) == set(matching + failing)
    everything.wait_for(len(matching + failing))
    filtered.wait_for(len(matching))
    assert _webhook_ids(everything) == set(matching + failing)
    assert _webhook_ids(filtered) == set(matching)


def test_a_fan_out_task_applies_the_filter_too(client, org, receiver, worker):
    # More endpoints than a request fans out itself: the fan-out task makes the deliveries.
    count = INLINE_FANOUT_ENDPOINTS + 2
    kept = {"class": "small"}
    dropped = {"class": {"$ne": "small"}}
    ids = [
        _v1(client, org, f"{receiver.url}/{i}", filter=kept if i % 2 else dropped)["endpoint_id"]
        for i in range(count)
    ]
    (message,) = _ingest(client, {**_state_event(org, "sbx-1", "started"), "class": "small"})
    wanted = {eid for i, eid in enumerate(ids) if i % 2}

    def delivered_to() -> set[str]:
        with session_scope() as session:
            return set(
                session.scalars(select(Delivery.endpoint_id).where(Delivery.message_id == message))
            )

    assert wait_until(lambda: delivered_to() == wanted)
    receiver.wait_for(len(wanted))
    assert sorted(r.path for r in receiver.requests) == sorted(
        f"/{i}" for i in range(count) if i % 2
    )


def test_custom_events_are_filtered_on_their_payload(client, org, make_receiver, worker):
    paid, other = make_receiver(), make_receiver()
    big_orders = {"order.total": {"$gt": 100}, "currency": "EUR"}
    narrow = _daytona(client, org, paid.url, filter=big_orders)["id"]
    wide = _daytona(client, org, other.url)["id"]

    def send(payload: dict) -> str:
        resp = client.post(
            f"{ORGS}/{org.id}/send",
            json={"eventType": "order.paid", "payload": payload},
            headers=org.headers,
        )
        assert resp.status_code == 202, resp.json
        return resp.json["id"]

    big = send({"order": {"total": 120}, "currency": "EUR"})
    small = send({"order": {"total": 80}, "currency": "EUR"})
    unpriced = send({"order": {"total": 120}})
    assert _delivered_messages(narrow) == {big}
    assert _delivered_messages(wide) == {big, small, unpriced}
    other.wait_for(3)
    paid.wait_for(1)
    assert _webhook_ids(paid) == {big}


def test_tests_resends_and_recover_ignore_the_filter(client, org, receiver, worker):
    endpoint = _daytona(client, org, receiver.url, filter={"class": "large"})
    path = f"{ORGS}/{org.id}/endpoints/{endpoint['id']}"
    assert client.patch(path, json={"maxRetries": 0}, headers=org.headers).status_code == 200

    # A test send of an example the filter refuses is still sent.
    resp = client.post(f"{path}/test", json={"eventType": "sandbox.created"}, headers=org.headers)
    assert resp.status_code == 202, resp.json
    receiver.wait_for(1)

    # An event the filter refuses makes no delivery, but a resend makes one.
    (refused,) = _ingest(client, {**_state_event(org, "sbx-1", "started"), "class": "small"})
    assert _delivered_messages(endpoint["id"]) == {resp.json["id"]}
    resp = client.post(
        f"{ORGS}/{org.id}/messages/{refused}/endpoints/{endpoint['id']}/resend",
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.json
    assert receiver.wait_for(2)[1].headers["webhook-id"] == refused

    # A delivery that failed before the filter was set is recovered whatever the filter says.
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    client.patch(path, json={"filter": None}, headers=org.headers)
    receiver.reply(500)
    (failed,) = _ingest(client, {**_state_event(org, "sbx-2", "started"), "class": "small"})
    receiver.wait_for(3)
    stats = f"{path}/stats"
    wait_until(lambda: client.get(stats, headers=org.headers).json["failed"] == 1)
    client.patch(path, json={"filter": {"class": "large"}}, headers=org.headers)
    receiver.reply(200)
    resp = client.post(f"{path}/recover", json={"since": since}, headers=org.headers)
    assert resp.status_code == 202 and resp.json == {"recovered": 1}, resp.json
    assert receiver.wait_for(4)[3].headers["webhook-id"] == failed
