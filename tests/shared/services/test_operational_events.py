"""Operational events (docs/api.md §11.5): who receives them, with what, and how often.

Real failures from the real worker process to loopback receivers; beat's job runs here as
beat runs it, with a notice window of about a second (WEBHOOKS_FAILING_NOTICE_HOURS takes
fractions) set for this process only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shared.config import get_settings
from shared.db import session_scope
from shared.models import Endpoint
from tests.conftest import PLATFORM
from tests.support.live_server import shared_live_server
from tests.support.receiver import Receiver, Reply
from tests.support.waiting import wait_until
from tests.webhooks_api.test_realtime import Listener
from webhooks_worker import tasks

API = "/api/webhooks/organizations"
NOTICE_FIELDS = {"endpointId", "url", "reason", "failingSince", "lastStatusCode", "lastError"}


@pytest.fixture
def short_notice(monkeypatch) -> Iterator[float]:
    """endpoint.failing after about a second of failures, in this process (beat's job)."""
    monkeypatch.setenv("WEBHOOKS_FAILING_NOTICE_HOURS", "0.0003")
    get_settings.cache_clear()
    yield get_settings().failing_notice_hours * 3600
    monkeypatch.undo()
    get_settings.cache_clear()


def _v1(client, who, url: str, event_types: list[str], **extra) -> str:
    resp = client.post(
        "/v1/webhooks", json={"url": url, "event_types": event_types, **extra}, headers=who.headers
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


def _daytona(client, org, url: str, event_types: list[str]) -> str:
    resp = client.post(
        f"{API}/{org.id}/endpoints",
        json={"url": url, "eventTypes": event_types},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["id"]


def _report(client, org, sandbox: str = "sbx-1") -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": sandbox,
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _row(endpoint_id: str) -> Endpoint:
    with session_scope() as session:
        return session.get(Endpoint, endpoint_id)


def _bodies(receiver: Receiver, name: str, key: str = "event") -> list[dict]:
    return [r.json() for r in receiver.requests if r.json().get(key) == name]


def test_an_exhausted_delivery_is_reported_only_to_endpoints_naming_the_event(
    client, org, make_receiver, worker
):
    failing, named, wildcard, everything, envelope = (make_receiver() for _ in range(5))
    failing.reply(500, b"broken")
    # The failing endpoint names the notice too: it never hears about itself.
    failing_id = _v1(
        client,
        org,
        failing.url,
        ["sandbox.stopped", "message.attempt.exhausted"],
        max_retries=0,
    )
    _daytona(client, org, named.url, ["message.attempt.exhausted"])
    _daytona(client, org, wildcard.url, ["*", "message.*"])
    _daytona(client, org, everything.url, [])
    _v1(client, org, envelope.url, ["message.attempt.exhausted"])
    message_id = _report(client, org)

    got = named.wait_for(1)[0].json()
    assert got["event"] == "message.attempt.exhausted" and got["timestamp"].endswith("Z")
    assert NOTICE_FIELDS | {"messageId", "deliveryId", "eventType"} <= set(got)
    assert got["endpointId"] == failing_id and got["url"] == failing.url
    assert got["messageId"] == message_id and got["eventType"] == "sandbox.stopped"
    assert got["lastStatusCode"] == 500 and got["lastError"] == "HTTP 500"
    assert got["reason"] == "Delivery failed after 1 attempt" and got["failingSince"]
    enveloped = envelope.wait_for(1)[0].json()
    assert enveloped["type"] == "message.attempt.exhausted"
    assert enveloped["data"]["endpoint_id"] == failing_id
    assert enveloped["data"]["last_status_code"] == 500
    assert enveloped["data"]["delivery_id"] == got["deliveryId"]
    # The wildcard and empty-list subscribers got the event itself, not the notice.
    wildcard.wait_for(1)
    everything.wait_for(1)
    time.sleep(1)
    assert _bodies(wildcard, "message.attempt.exhausted") == []
    assert _bodies(everything, "message.attempt.exhausted") == []
    assert len(failing.requests) == 1  # its own failure, no notice about it
    # The notice is a message of the organization like any other.
    listed = client.get(
        f"{API}/{org.id}/messages",
        query_string={"eventType": "message.attempt.exhausted"},
        headers=org.headers,
    ).json["items"]
    assert [m["payload"]["deliveryId"] for m in listed] == [got["deliveryId"]]


def test_a_failed_notice_sets_off_no_further_notice(client, org, make_receiver, worker):
    # Two endpoints down, each naming the notice: a report about one goes to the other,
    # fails there for good, and stops.
    first, second = make_receiver(), make_receiver()
    first.reply(500)
    second.reply(500)
    _v1(client, org, first.url, ["sandbox.stopped", "message.attempt.exhausted"], max_retries=0)
    _v1(client, org, second.url, ["message.attempt.exhausted"], max_retries=0)
    _report(client, org)
    second.wait_for(1)
    time.sleep(2)
    assert len(first.requests) == 1 and len(second.requests) == 1
    listed = client.get(
        f"{API}/{org.id}/messages",
        query_string={"eventType": "message.attempt.exhausted"},
        headers=org.headers,
    ).json["items"]
    assert len(listed) == 1


def test_disabling_is_reported_to_members_only_about_endpoints_they_can_see(
    client, org, add_user, make_receiver, worker
):
    member = add_user(org, "member")
    members_notices, admins_notices = make_receiver(), make_receiver()
    _v1(client, member, members_notices.url, ["endpoint.disabled"])
    _v1(client, org, admins_notices.url, ["endpoint.disabled"])
    roots_own = _v1(client, org, "https://hooks.example.com/root", ["sandbox.stopped"])
    members_own = _v1(client, member, "https://hooks.example.com/member", ["sandbox.stopped"])

    for who, endpoint_id in ((org, roots_own), (member, members_own)):
        resp = client.put(
            f"/v1/webhooks/{endpoint_id}", json={"is_active": False}, headers=who.headers
        )
        assert resp.status_code == 200
    admins_notices.wait_for(2)
    members_notices.wait_for(1)
    time.sleep(1)
    about = [r.json()["data"]["endpoint_id"] for r in admins_notices.requests]
    assert sorted(about) == sorted([roots_own, members_own])
    assert [r.json()["data"]["endpoint_id"] for r in members_notices.requests] == [members_own]
    assert members_notices.requests[0].json()["data"]["reason"] == "Disabled by a user"


def test_a_410_disables_the_endpoint_and_reports_it(client, org, make_receiver, worker):
    gone, notices = make_receiver(), make_receiver()
    gone.reply(410)
    gone_id = _v1(client, org, gone.url, ["sandbox.stopped"])
    _daytona(client, org, notices.url, ["endpoint.disabled"])
    _report(client, org)
    got = notices.wait_for(1)[0].json()
    assert got["event"] == "endpoint.disabled" and got["endpointId"] == gone_id
    assert got["reason"] == "The endpoint answered 410 Gone"
    assert got["lastStatusCode"] == 410


def test_endpoint_failing_is_reported_once_per_streak(
    client, org, make_receiver, worker, short_notice
):
    down, notices = make_receiver(), make_receiver()
    down.reply(503, b"maintenance")
    down_id = _v1(client, org, down.url, ["sandbox.stopped"], max_retries=10)
    _daytona(client, org, notices.url, ["endpoint.failing"])
    listener = Listener(shared_live_server()).connect(auth={"apiKey": org.key})
    try:
        _report(client, org)
        wait_until(lambda: _row(down_id).failing_since is not None)
        assert tasks.endpoint_timers()["failing"] == 0  # not failing long enough yet
        time.sleep(short_notice + 0.2)
        assert tasks.endpoint_timers()["failing"] == 1
        assert tasks.endpoint_timers()["failing"] == 0  # once per streak (and per two beats)
        got = notices.wait_for(1)[0].json()
        assert got["event"] == "endpoint.failing" and got["endpointId"] == down_id
        assert set(got) >= NOTICE_FIELDS
        assert got["lastStatusCode"] == 503 and got["lastError"] == "HTTP 503"
        pushed = listener.wait_for(
            lambda name, data: name == "endpoint.failing" and data["endpoint"]["id"] == down_id
        )
        assert pushed[0][1]["endpoint"]["failing"]["lastStatusCode"] == 503
        shown = client.get(f"/v1/webhooks/{down_id}", headers=org.headers).json["data"]
        assert shown["failing"]["last_error"] == "HTTP 503"

        # A success ends the streak and the warning; a new streak is reported anew.
        down.reply(200)
        wait_until(lambda: _row(down_id).failing_since is None)
        assert _row(down_id).failing_notified_at is None
        shown = client.get(f"{API}/{org.id}/endpoints/{down_id}", headers=org.headers).json
        assert shown["failing"] is None
        down.responder = lambda _got: Reply(500)
        _report(client, org, "sbx-2")
        wait_until(lambda: _row(down_id).failing_since is not None)
        time.sleep(short_notice + 0.2)
        assert tasks.endpoint_timers()["failing"] == 1
        notices.wait_for(2)
        assert notices.requests[1].json()["lastStatusCode"] == 500
    finally:
        listener.close()


def test_every_user_may_name_the_operational_events_on_v1_and_api_webhooks(
    client, org, add_user, receiver
):
    member = add_user(org, "member")
    names = ["endpoint.failing", "endpoint.disabled", "message.attempt.exhausted"]
    _v1(client, member, receiver.url, names)
    resp = client.post(
        f"{API}/{org.id}/endpoints",
        json={"url": receiver.url, "eventTypes": names},
        headers=org.headers,
    )
    assert resp.status_code == 201 and resp.json["eventTypes"] == names
    resp = client.post(
        "/events/webhooks/sandboxes",
        json={"url": receiver.url, "events": ["endpoint.failing"]},
        headers=org.headers,
    )
    assert resp.status_code == 400
    # Nobody may send one as a custom event: it would pass for the service's own report.
    resp = client.post(
        f"{API}/{org.id}/send",
        json={"eventType": "endpoint.failing", "payload": {"endpointId": "whk-x"}},
        headers=org.headers,
    )
    assert resp.status_code == 400
