"""Bodies and parameters no client should send: each a clear 4xx, never a 500 (docs/api.md §10).

Each input here produced a 500 before (a stack overflow in the JSON parser, values
PostgreSQL cannot store, numbers out of a column's range), so each is pinned down.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import PLATFORM

HOOK = "http://127.0.0.1:9/hook"


def _event(org_id: str, **extra) -> dict:
    return {"event": "sandbox.created", "organizationId": org_id, "id": "sbx-1", **extra}


def _post(client, path: str, raw: bytes, headers: dict):
    return client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "nested"),
        (b'{"x": ' + b"[" * 70 + b"]" * 70 + b"}", "nested more than 64 levels"),
        (b'{"description": "\\ud800"}', "unpaired surrogate"),
        (b'{"description": "a\\u0000b"}', "NUL"),
        (b'{"a\\u0000": "b"}', "NUL"),
        (b'{"n": 1e999}', "too large"),
        (b'{"n": -1e999}', "too large"),
        # Valid JSON, past the interpreter's 4,300-digit limit for integers.
        (b'{"n": ' + b"9" * 5000 + b"}", "number too large"),
    ],
    ids=[
        "deep-array",
        "deep-object",
        "depth-70",
        "surrogate",
        "nul",
        "nul-key",
        "inf",
        "-inf",
        "long-int",
    ],
)
def test_unstorable_json_is_400_on_every_face(client, org, raw: bytes, error: str) -> None:
    for path, headers, shape in (
        ("/v1/webhooks", org.headers, "error"),
        ("/api/internal/events", PLATFORM, "message"),
        (f"/api/webhooks/organizations/{org.id}/send", org.headers, "message"),
        ("/events/webhooks/sandboxes", org.headers, "message"),
    ):
        resp = _post(client, path, raw, headers)
        assert resp.status_code == 400, (path, resp.status_code, resp.data[:300])
        assert error in resp.json[shape], (path, resp.json)


def test_unstorable_values_inside_an_event_are_400_naming_the_problem(client, org) -> None:
    for extra in ({"metadata": {"k": "\ud800"}}, {"note": "a\x00b"}, {"n": float("inf")}):
        raw = json.dumps(_event(org.id, **extra)).encode()
        resp = _post(client, "/api/internal/events", raw, PLATFORM)
        assert resp.status_code == 400, (extra, resp.data)
        assert resp.json["statusCode"] == 400


def test_an_unstorable_value_in_an_array_of_events_names_the_event(client, org) -> None:
    for extra, problem in (
        ({"metadata": {"k": "\ud800"}}, "unpaired surrogate"),
        ({"note": "a\x00b"}, "NUL character"),
        ({"n": "<1e999>"}, "number too large"),  # valid JSON that parses as infinity
    ):
        events = [_event(org.id), _event(org.id, **extra)]
        raw = json.dumps(events).encode().replace(b'"<1e999>"', b"1e999")
        resp = _post(client, "/api/internal/events", raw, PLATFORM)
        assert resp.status_code == 400, (extra, resp.data)
        assert resp.json["message"].startswith("event 1: "), resp.json
        assert problem in resp.json["message"]


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_timestamp_out_of_range_is_400(client, org, timestamp: str) -> None:
    raw = json.dumps(_event(org.id, timestamp=timestamp)).encode()
    resp = _post(client, "/api/internal/events", raw, PLATFORM)
    assert resp.status_code == 400
    assert "timestamp" in resp.json["message"]


@pytest.mark.parametrize(
    "query", ["offset=99999999999999999999", "skip=99999999999999999999", "page=99999999999999999"]
)
def test_paging_numbers_beyond_any_column_are_400(client, org, query: str) -> None:
    resp = client.get(f"/v1/webhooks?{query}", headers=org.headers)
    assert resp.status_code in (200, 400), resp.data
    assert resp.json["success"] is (resp.status_code == 200)


def test_nul_in_query_and_path_is_400_not_500(client, org) -> None:
    base = f"/api/webhooks/organizations/{org.id}"
    for path in (
        f"{base}/messages?eventType=a%00b",
        f"{base}/messages?endpointId=%00",
        f"{base}/messages?cursor=%00",
        f"{base}/endpoints/%00",
        "/v1/webhooks/whk-%00",
        "/v1/webhooks?limit=%00",
    ):
        resp = client.get(path, headers=org.headers)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.data[:200])


def test_recover_window_out_of_range_is_400(client, org) -> None:
    created = client.post(
        "/v1/webhooks", json={"url": HOOK, "event_types": ["sandbox.started"]}, headers=org.headers
    ).json["data"]
    for body in (
        {"since": "0001-01-01T00:00:00+14:00"},
        {"since": "2020-01-01T00:00:00Z", "until": "9999-12-31T23:59:59-14:00"},
        {"since": "not a time"},
    ):
        resp = client.post(
            f"/v1/webhooks/{created['endpoint_id']}/recover", json=body, headers=org.headers
        )
        assert resp.status_code == 400, (body, resp.data)
        assert resp.json["success"] is False
