"""Endpoints bound to one resource and endpoints that expire (docs/api.md §11.4).

A real worker delivers to loopback receivers; beat's job runs here as beat runs it. The
live socket is a real python-socketio client on the session's live api server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Delivery, Endpoint, utcnow
from shared.payloads import format_timestamp
from tests.conftest import PLATFORM, ROOT
from tests.support.live_server import shared_live_server
from tests.support.receiver import Reply
from tests.support.waiting import wait_until
from tests.webhooks_api.test_realtime import Listener
from webhooks_worker import tasks

API = "/api/webhooks/organizations"


@pytest.fixture
def listener(org):
    socket = Listener(shared_live_server()).connect(auth={"apiKey": org.key})
    yield socket
    socket.close()


def _report(client, org, sandbox: str, state: str) -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": sandbox,
            "oldState": "started",
            "newState": state,
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _bound(client, org, url: str, resource_id: str, **extra) -> str:
    resp = client.post(
        "/v1/webhooks",
        json={
            "url": url,
            "event_types": ["sandbox.started", "sandbox.stopped", "sandbox.terminated"],
            "resource_id": resource_id,
            **extra,
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    assert resp.json["data"]["resource_id"] == resource_id
    return resp.json["data"]["endpoint_id"]


def _row(endpoint_id: str) -> Endpoint:
    with session_scope() as session:
        return session.get(Endpoint, endpoint_id)


def _statuses(endpoint_id: str) -> list[str]:
    with session_scope() as session:
        return sorted(
            session.scalars(select(Delivery.status).where(Delivery.endpoint_id == endpoint_id))
        )


def test_a_sandbox_bound_endpoint_receives_only_its_sandbox_and_ends_with_it(
    client, org, receiver, worker, listener
):
    # The final event fails its first try, then succeeds on the retry.
    tries: list[bytes] = []

    def answer(got) -> Reply:
        if b'"terminated"' in got.body:
            tries.append(got.body)
            return Reply(500 if len(tries) == 1 else 200)
        return Reply(200)

    receiver.responder = answer
    endpoint_id = _bound(client, org, receiver.url, "sbx-mine")
    mine = _report(client, org, "sbx-mine", "stopped")
    _report(client, org, "sbx-other", "stopped")
    _report(client, org, "sbx-other", "terminated")
    receiver.wait_for(1)
    time.sleep(1)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [mine]
    assert _row(endpoint_id).deleted_at is None  # another sandbox's end is not its end

    final = _report(client, org, "sbx-mine", "terminated")
    wait_until(lambda: len(tries) == 1)
    # The final event's retry is pending: the endpoint stays.
    row = _row(endpoint_id)
    assert row.deleted_at is None and row.is_active
    assert "pending" in _statuses(endpoint_id)
    shown = client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers)
    assert shown.status_code == 200

    wait_until(lambda: _row(endpoint_id).deleted_at is not None)
    assert len(tries) == 2
    assert [r.headers["webhook-id"] for r in receiver.requests[-2:]] == [final, final]
    row = _row(endpoint_id)
    assert row.deleted_reason == "resource ended" and row.is_active is False
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 404
    deleted = listener.wait_for(
        lambda name, data: name == "endpoint.deleted" and data["endpoint"]["id"] == endpoint_id
    )
    assert deleted[0][1]["endpoint"]["deletedReason"] == "resource ended"
    assert deleted[0][1]["organizationId"] == org.id


def test_a_bound_endpoint_whose_final_event_fails_for_good_is_deleted(
    client, org, receiver, worker
):
    receiver.reply(500)
    endpoint_id = _bound(client, org, receiver.url, "sbx-1", max_retries=1)
    _report(client, org, "sbx-1", "stopped")
    _report(client, org, "sbx-1", "terminated")
    wait_until(lambda: _row(endpoint_id).deleted_at is not None)
    row = _row(endpoint_id)
    assert row.deleted_reason == "resource ended"
    # The final event's delivery failed for good; the other one's retries were cancelled.
    assert _statuses(endpoint_id) in (["cancelled", "failed"], ["failed", "failed"])


def test_resource_id_is_set_at_creation_only_on_both_faces(client, org, receiver):
    endpoint_id = _bound(client, org, receiver.url, "sbx-1")
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}", json={"resource_id": "sbx-2"}, headers=org.headers
    )
    assert resp.status_code == 400 and "resource_id" in resp.json["error"]
    created = client.post(
        f"{API}/{org.id}/endpoints",
        json={"url": receiver.url, "eventTypes": ["sandbox.*"], "resourceId": "sbx-9"},
        headers=org.headers,
    )
    assert created.status_code == 201 and created.json["resourceId"] == "sbx-9"
    resp = client.patch(
        f"{API}/{org.id}/endpoints/{created.json['id']}",
        json={"resourceId": "sbx-2"},
        headers=org.headers,
    )
    assert resp.status_code == 400 and "resource_id" in str(resp.json)
    assert _row(endpoint_id).resource_id == "sbx-1"
    for bad in ("", 5, "x" * 257):
        resp = client.post(
            "/v1/webhooks",
            json={"url": receiver.url, "event_types": ["sandbox.started"], "resource_id": bad},
            headers=org.headers,
        )
        assert resp.status_code == 400 and "resource_id" in str(resp.json), bad


# Offsets from now, not times: parameters must be the same in every test process.
@pytest.mark.parametrize(
    "offset", ["yesterday", timedelta(minutes=-1), timedelta(days=400)], ids=["word", "past", "far"]
)
def test_an_expiry_in_the_past_too_far_ahead_or_not_a_time_is_400(client, org, receiver, offset):
    when = offset if isinstance(offset, str) else format_timestamp(utcnow() + offset)
    resp = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.started"], "expires_at": when},
        headers=org.headers,
    )
    assert resp.status_code == 400 and "expires_at" in str(resp.json)
    resp = client.post(
        f"{API}/{org.id}/endpoints",
        json={"url": receiver.url, "eventTypes": [], "expiresAt": when},
        headers=org.headers,
    )
    assert resp.status_code == 400 and "expires" in str(resp.json).lower()


def test_an_expiry_is_shown_changed_and_cleared(client, org, receiver):
    later = utcnow() + timedelta(days=30)
    resp = client.post(
        f"{API}/{org.id}/endpoints",
        json={"url": receiver.url, "eventTypes": [], "expiresAt": format_timestamp(later)},
        headers=org.headers,
    )
    assert resp.status_code == 201 and resp.json["expiresAt"] == format_timestamp(later)
    endpoint_id = resp.json["id"]
    shown = client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).json["data"]
    assert shown["expires_at"] == format_timestamp(later) and shown["deleted_reason"] is None
    sooner = later - timedelta(days=1)
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}",
        json={"expires_at": format_timestamp(sooner)},
        headers=org.headers,
    )
    assert resp.status_code == 200 and resp.json["data"]["expires_at"] == format_timestamp(sooner)
    resp = client.patch(
        f"{API}/{org.id}/endpoints/{endpoint_id}", json={"expiresAt": None}, headers=org.headers
    )
    assert resp.status_code == 200 and resp.json["expiresAt"] is None


def test_an_expiring_endpoint_is_gone_at_the_first_sweep_after_its_time(
    client, org, receiver, worker, listener
):
    at = utcnow() + timedelta(seconds=2)
    resp = client.post(
        "/v1/webhooks",
        json={
            "url": receiver.url,
            "event_types": ["sandbox.stopped"],
            "expires_at": format_timestamp(at),
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    endpoint_id = resp.json["data"]["endpoint_id"]
    keeps = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.stopped"]},
        headers=org.headers,
    ).json["data"]["endpoint_id"]
    assert tasks.endpoint_timers()["expired"] == 0  # beat's job, before the time
    assert _row(endpoint_id).deleted_at is None
    wait_until(lambda: utcnow() > at, timeout=5)
    assert tasks.endpoint_timers()["expired"] == 1
    assert tasks.endpoint_timers()["expired"] == 0  # a second beat finds nothing left
    row = _row(endpoint_id)
    assert row.deleted_at is not None and row.deleted_reason == "expired"
    assert _row(keeps).deleted_at is None
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 404
    deleted = listener.wait_for(
        lambda name, data: name == "endpoint.deleted" and data["endpoint"]["id"] == endpoint_id
    )
    assert deleted[0][1]["endpoint"]["deletedReason"] == "expired"
    # Nothing goes to it any more.
    _report(client, org, "sbx-1", "stopped")
    receiver.wait_for(1)
    time.sleep(0.5)
    assert len(receiver.requests) == 1


def test_a_real_beat_deletes_an_expiring_endpoint_within_one_period_of_its_time(
    client, org, receiver, worker, tmp_path
):
    from webhooks_worker.celery_app import ENDPOINT_TIMERS_EVERY

    log = tmp_path / "beat.log"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "beat",
         "--loglevel", "INFO", "--schedule", str(tmp_path / "beat.schedule")],
        cwd=ROOT, env=dict(os.environ), stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: b"beat: Starting" in log.read_bytes(), timeout=30)
        at = utcnow() + timedelta(seconds=3)
        resp = client.post(
            "/v1/webhooks",
            json={
                "url": receiver.url,
                "event_types": ["sandbox.stopped"],
                "expires_at": format_timestamp(at),
            },
            headers=org.headers,
        )
        endpoint_id = resp.json["data"]["endpoint_id"]
        # One period after its time, and some slack for a loaded machine's worker to run
        # beat's task.
        wait_until(
            lambda: _row(endpoint_id).deleted_at is not None,
            timeout=(at - utcnow()).total_seconds() + ENDPOINT_TIMERS_EVERY + 10,
        )
        row = _row(endpoint_id)
        assert row.deleted_reason == "expired" and row.deleted_at >= at
    finally:
        beat.terminate()
        beat.wait(timeout=20)
