"""End to end: an endpoint's custom headers reach its receiver on every kind of attempt.

A real worker posts to a loopback receiver: the first try, a retry after a 500, a manual
resend and a test send all carry the headers, and the service's own headers stay its own.
"""

from __future__ import annotations

from standardwebhooks.webhooks import Webhook

from tests.conftest import PLATFORM
from tests.support.receiver import Reply
from tests.support.waiting import wait_until

HEADERS = {"Authorization": "Bearer rcv-credential-1", "X-Tenant": "acme", "X-Empty": ""}


def _org_path(org) -> str:
    return f"/api/webhooks/organizations/{org.id}"


def _create(client, org, url: str, **extra) -> dict:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.stopped"], "headers": HEADERS, **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]


def _ingest(client, org, sandbox_id: str = "sbx-1") -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": sandbox_id,
            "oldState": "started",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _has_custom_headers(got) -> None:
    assert got.headers["authorization"] == "Bearer rcv-credential-1"
    assert got.headers["x-tenant"] == "acme"
    assert got.headers["x-empty"] == ""


def test_custom_headers_go_with_the_first_try_and_the_retry(client, org, receiver, worker):
    answers = iter([Reply(500), Reply(200)])
    receiver.responder = lambda _r: next(answers)
    endpoint = _create(client, org, receiver.url + "/hook")
    message_id = _ingest(client, org)

    first, retry = receiver.wait_for(2)
    for got in (first, retry):
        _has_custom_headers(got)
        # The service's own headers are untouched by the custom ones.
        assert got.headers["webhook-id"] == message_id
        assert got.headers["content-type"] == "application/json"
        assert got.headers["user-agent"].startswith("sandbox-webhooks/")
        Webhook(endpoint["secret"]).verify(got.body, got.headers)


def test_custom_headers_go_with_a_manual_resend_and_a_test_send(client, org, receiver, worker):
    endpoint = _create(client, org, receiver.url + "/hook")
    endpoint_id = endpoint["endpoint_id"]
    message_id = _ingest(client, org)
    receiver.wait_for(1)

    resp = client.post(
        f"{_org_path(org)}/messages/{message_id}/endpoints/{endpoint_id}/resend",
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.json
    resp = client.post(
        f"{_org_path(org)}/endpoints/{endpoint_id}/test",
        json={"eventType": "sandbox.created"},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.json
    test_message = resp.json["id"]

    got = receiver.wait_for(3)
    resend = next(r for r in got[1:] if r.headers["webhook-id"] == message_id)
    test_send = next(r for r in got if r.headers["webhook-id"] == test_message)
    for request in (resend, test_send):
        _has_custom_headers(request)

    def triggers():
        items = client.get(
            f"{_org_path(org)}/messages/{message_id}/attempts", headers=org.headers
        ).json["items"]
        return sorted(a["trigger"] for a in items) if len(items) == 2 else None

    assert wait_until(triggers) == ["manual", "scheduled"]


def test_a_change_of_headers_applies_to_the_next_attempt_and_clearing_sends_none(
    client, org, receiver, worker
):
    endpoint_id = _create(client, org, receiver.url + "/hook")["endpoint_id"]
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}",
        json={"headers": {"Authorization": "********", "X-Tenant": "globex"}},
        headers=org.headers,
    )
    assert resp.status_code == 200, resp.json
    _ingest(client, org, "sbx-1")
    changed = receiver.wait_for(1)[0]
    # The masked value kept the stored credential; the header left out is gone.
    assert changed.headers["authorization"] == "Bearer rcv-credential-1"
    assert changed.headers["x-tenant"] == "globex"
    assert "x-empty" not in changed.headers

    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"headers": None}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    _ingest(client, org, "sbx-2")
    cleared = receiver.wait_for(2)[1]
    assert "authorization" not in cleared.headers and "x-tenant" not in cleared.headers
