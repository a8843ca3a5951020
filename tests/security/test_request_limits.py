"""Request limits against a real server (gunicorn serving webhooks_api.wsgi:app), docs/api.md §10.

WEBHOOKS_MAX_PAYLOAD_BYTES is enforced with 413 whether the body comes with a
Content-Length or chunked (counted as it arrives); an event array may be 16 times the
limit, with each event within it; malformed, mistyped, oversized and unknown input each
get a clear 4xx in the face's own error shape.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.conftest import PLATFORM, TEST_ENV
from tests.support.scenario import create_org, scalar
from tests.support.stack import running_stack

LIMIT = 8192
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One private stack for the module: these tests only send requests."""
    with running_stack(tmp_path_factory.mktemp("limits"), TEST_ENV) as private:
        yield private


@pytest.fixture(scope="module")
def api(stack):
    return stack.start_api(env={"WEBHOOKS_MAX_PAYLOAD_BYTES": str(LIMIT)})


def _chunked(api, path: str, body: bytes, headers: dict, chunk: int = 1000):
    """POST body with Transfer-Encoding: chunked (no Content-Length), as http.client sends it."""
    parts = urlsplit(api.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in {**headers, "Content-Type": "application/json"}.items():
            conn.putheader(name, value)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for start in range(0, len(body), chunk):
                piece = body[start : start + chunk]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer 413 and close before the whole body is sent
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _messages(stack, org) -> int:
    sql = "SELECT count(*) FROM messages WHERE organization_id = :o"
    return scalar(stack.engine, sql, o=org.id)


def _padded_event(org, n: int, size: int) -> dict:
    event = {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": f"sbx-{n}",
        "newState": "stopped",
        "note": "",
    }
    event["note"] = "x" * (size - len(json.dumps(event)))
    return event


def test_bodies_over_the_limit_are_413_with_or_without_content_length(api):
    org = create_org(api)
    big = {
        "url": "http://127.0.0.1:9/hook",
        "event_types": ["sandbox.started"],
        "description": "x" * LIMIT,
    }
    raw = json.dumps(big).encode()
    resp = api.post("/v1/webhooks", data=raw, headers={**org.headers, **JSON})
    assert resp.status_code == 413
    assert resp.json()["success"] is False and str(LIMIT) in resp.json()["error"]
    status, body = _chunked(api, "/v1/webhooks", raw, org.headers)
    assert status == 413 and body["success"] is False
    # The same route takes a chunked body under the limit.
    small = json.dumps({**big, "description": "fits"}).encode()
    status, body = _chunked(api, "/v1/webhooks", small, org.headers)
    assert status == 201 and body["data"]["description"] == "fits"
    # Each face answers 413 in its own shape.
    status, body = _chunked(api, "/events/webhooks/sandboxes", raw, org.headers)
    assert status == 413 and body["code"] == 413
    status, body = _chunked(api, f"/api/webhooks/organizations/{org.id}/send", raw, org.headers)
    assert status == 413 and body["statusCode"] == 413
    # Only an array of events may exceed the limit: one event alone may not.
    single = json.dumps(_padded_event(org, 0, LIMIT + 100)).encode()
    resp = api.post("/api/internal/events", data=single, headers={**PLATFORM, **JSON})
    assert resp.status_code == 413 and resp.json()["statusCode"] == 413
    status, body = _chunked(api, "/api/internal/events", single, PLATFORM)
    assert status == 413 and body["statusCode"] == 413


def test_event_arrays_may_be_16_times_the_limit_and_not_more(api, stack):
    org = create_org(api)
    # 1,000 events of about 100 bytes: 12x the limit, every event within it.
    allowed = json.dumps([_padded_event(org, n, 100) for n in range(1000)]).encode()
    assert LIMIT < len(allowed) < 16 * LIMIT
    status, body = _chunked(api, "/api/internal/events", allowed, PLATFORM)
    assert status == 202, body
    assert len(body["messages"]) == 1000
    assert _messages(stack, org) == 1000
    # Over 16x the limit: 413, whether announced or streamed, and nothing stored.
    over = json.dumps([_padded_event(org, n, 140) for n in range(1000)]).encode()
    assert len(over) > 16 * LIMIT
    resp = api.post("/api/internal/events", data=over, headers={**PLATFORM, **JSON})
    assert resp.status_code == 413 and resp.json()["statusCode"] == 413
    status, body = _chunked(api, "/api/internal/events", over, PLATFORM)
    assert status == 413
    # More than 1,000 events: 400. One event over the limit inside an array: 413, by index.
    many = json.dumps([_padded_event(org, n, 60) for n in range(1001)]).encode()
    assert len(many) < 16 * LIMIT
    status, body = _chunked(api, "/api/internal/events", many, PLATFORM)
    assert status == 400 and "1000" in body["message"]
    fat = [_padded_event(org, n, 100) for n in range(3)] + [_padded_event(org, 3, LIMIT + 200)]
    status, body = _chunked(api, "/api/internal/events", json.dumps(fat).encode(), PLATFORM)
    assert status == 413 and body["statusCode"] == 413
    assert body["message"].startswith("event 3: ")
    assert _messages(stack, org) == 1000


def test_an_event_is_measured_in_utf8_bytes_not_json_escapes(api, stack):
    org = create_org(api)
    # 3,000 "é": 6,000 bytes of UTF-8 (within 8,192) but 18,000 as ASCII \u escapes.
    event = {**_padded_event(org, 0, 100), "note": "é" * 3000}
    raw = json.dumps(event, ensure_ascii=False).encode()
    assert len(raw) < LIMIT < len(json.dumps(event))
    for body in (raw, json.dumps([event, event], ensure_ascii=False).encode()):
        resp = api.post("/api/internal/events", data=body, headers={**PLATFORM, **JSON})
        assert resp.status_code == 202, resp.text
    assert _messages(stack, org) == 3


HOOK = '"url": "http://127.0.0.1:9/"'
EVENTS = '"event_types": ["sandbox.started"]'
# (path, body, content type, the text the error must name)
BAD_BODIES = [
    ("/v1/webhooks", "{" + HOOK + ", ", "application/json", "not valid JSON"),
    ("/v1/webhooks", "url=http://x", "application/x-www-form-urlencoded", "must be JSON"),
    ("/v1/webhooks", '{"url": 5, ' + EVENTS + "}", "application/json", "url"),
    (
        "/v1/webhooks",
        "{" + HOOK + ', "event_types": "sandbox.started"}',
        "application/json",
        "event_types",
    ),
    (
        "/v1/webhooks",
        "{" + HOOK + ", " + EVENTS + ', "timeout_seconds": "30"}',
        "application/json",
        "timeout_seconds",
    ),
    (
        "/v1/webhooks",
        "{" + HOOK + ", " + EVENTS + ', "colour": "red"}',
        "application/json",
        "colour",
    ),
    ("/v1/webhooks", "[]", "application/json", ""),
    ("/v1/webhooks", '{"url": NaN}', "application/json", "not valid JSON"),
    ("/api/internal/events", "[]", "application/json", "1 to 1000"),
    ("/api/internal/events", '"sandbox.created"', "application/json", "event"),
    ("/api/internal/events", "\udcff{}", "application/json", "not valid JSON"),
    (
        "/events/webhooks/sandboxes",
        "{" + HOOK + ', "events": ["create"], "x": 1}',
        "application/json",
        "x",
    ),
    (
        "/events/webhooks/sandboxes",
        "{" + HOOK + ', "events": "create"}',
        "application/json",
        "events",
    ),
]


def test_bad_bodies_are_clear_4xx_in_each_faces_shape(api):
    org = create_org(api)
    wrong = []
    for path, text, content_type, needle in BAD_BODIES:
        headers = PLATFORM if path.startswith("/api/internal") else org.headers
        raw = text.encode("utf-8", "surrogateescape")
        resp = api.post(path, data=raw, headers={**headers, "Content-Type": content_type})
        body = resp.json()
        message = body.get("error") if path.startswith("/v1") else body.get("message")
        if resp.status_code != 400 or not isinstance(message, str) or needle not in message:
            wrong.append((path, text, resp.status_code, body))
    assert wrong == []
