"""Deliveries verify with the public standardwebhooks and svix libraries, unchanged.

Real deliveries from the worker process to a loopback receiver; a tampered body or id
fails both libraries; during a rotation both the old and the new secret verify.
"""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixError

from tests.conftest import PLATFORM

VERIFIERS = [(StandardWebhook, StandardError), (SvixWebhook, SvixError)]


def _report(client, org, n: int) -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": f"sbx-{n}",
            "oldState": "started",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202
    return resp.json["messages"][0]["id"]


def _verified_by_both(secret: str, got) -> None:
    for webhook, _error in VERIFIERS:
        webhook(secret).verify(got.body, got.headers)  # raises when it does not verify
    assert StandardWebhook(secret).verify(got.body, got.headers)["id"] == got.headers["webhook-id"]


def _refused_by_both(secret: str, body: bytes, headers: dict) -> None:
    for webhook, error in VERIFIERS:
        with pytest.raises(error):
            webhook(secret).verify(body, headers)


def test_signatures_verify_with_both_libraries_and_fail_when_tampered(
    client, org, receiver, worker
):
    endpoint = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.stopped"]},
        headers=org.headers,
    ).json["data"]
    secret = endpoint["secret"]
    message_id = _report(client, org, 1)
    got = receiver.wait_for(1)[0]
    assert got.headers["webhook-id"] == message_id
    _verified_by_both(secret, got)

    tampered = got.body.replace(b"sbx-1", b"sbx-2")
    assert tampered != got.body
    _refused_by_both(secret, tampered, got.headers)
    _refused_by_both(secret, got.body, {**got.headers, "webhook-id": "evt-other"})
    _refused_by_both(secret, got.body, {**got.headers, "webhook-timestamp": "1700000000"})
    other = client.post(
        "/v1/webhooks",
        json={"url": receiver.url + "/other", "event_types": ["sandbox.started"]},
        headers=org.headers,
    ).json["data"]["secret"]
    _refused_by_both(other, got.body, got.headers)


def test_during_a_rotation_old_and_new_secrets_both_verify(client, org, receiver, worker):
    endpoint = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.stopped"]},
        headers=org.headers,
    ).json["data"]
    old = endpoint["secret"]
    resp = client.post(f"/v1/webhooks/{endpoint['endpoint_id']}/rotate-secret", headers=org.headers)
    assert resp.status_code == 200
    new = resp.json["data"]["secret"]
    assert new != old and new.startswith("whsec_")

    _report(client, org, 1)
    got = receiver.wait_for(1)[0]
    assert len(got.headers["webhook-signature"].split()) == 2
    _verified_by_both(old, got)
    _verified_by_both(new, got)
    _refused_by_both(old, got.body + b" ", got.headers)
    _refused_by_both(new, got.body + b" ", got.headers)
