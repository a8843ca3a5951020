"""The live socket against a real api server, with deliveries made by a real worker."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import socketio
from sqlalchemy import update

from shared.db import session_scope
from shared.models import ApiKey
from tests.conftest import ADMIN_TOKEN, JWT_SECRET, PLATFORM
from tests.support.live_server import LiveServer, shared_live_server
from webhooks_api import realtime

SOCKET_PATH = "/api/webhook-socket.io"
EVENTS = (
    "webhook.delivered",
    "webhook.failed",
    "endpoint.created",
    "endpoint.updated",
    "endpoint.deleted",
    "endpoint.disabled",
    "endpoint.failing",
)
ATTEMPT_FIELDS = {
    "organizationId",
    "endpointId",
    "messageId",
    "deliveryId",
    "eventType",
    "attemptNumber",
    "statusCode",
    "durationMs",
    "trigger",
    "final",
    "timestamp",
}


@pytest.fixture(scope="module")
def live_server(database) -> LiveServer:
    return shared_live_server()


class Listener:
    """A python-socketio client that records every event it receives."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, dict]] = []
        self._cond = threading.Condition()
        for name in EVENTS:
            self.client.on(name, self._recorder(name))

    def _recorder(self, name: str):
        def record(data: dict) -> None:
            with self._cond:
                self.events.append((name, data))
                self._cond.notify_all()

        return record

    def connect(self, *, auth=None, headers=None, transports=None) -> Listener:
        self.client.connect(
            self.server.url,
            socketio_path=SOCKET_PATH,
            auth=auth,
            headers=headers or {},
            transports=transports,
            wait_timeout=10,
        )
        return self

    def named(self, *names: str) -> list[dict]:
        with self._cond:
            return [data for name, data in self.events if name in names]

    def wait_for(self, predicate, count: int = 1, timeout: float = 20.0) -> list[tuple[str, dict]]:
        """Block until ``count`` recorded events satisfy ``predicate(name, data)``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [(n, d) for n, d in self.events if predicate(n, d)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} matching events, got {len(found)}; all: {self.events}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        if self.client.connected:
            self.client.disconnect()


@pytest.fixture
def listen(live_server):
    listeners: list[Listener] = []

    def _listen(**kwargs) -> Listener:
        listener = Listener(live_server).connect(**kwargs)
        listeners.append(listener)
        return listener

    yield _listen
    for listener in listeners:
        listener.close()


def _endpoint(client, org, url, event_types=("sandbox.created",), **extra) -> str:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": list(event_types), **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]["endpoint_id"]


def _report(client, org, sandbox_id: str) -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.created",
            "organizationId": org.id,
            "id": sandbox_id,
            "state": "started",
            "class": "small",
            "createdAt": "2025-12-19T10:30:00.000Z",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


def _is_attempt(endpoint_id: str):
    return lambda name, data: name.startswith("webhook.") and data["endpointId"] == endpoint_id


def test_org_socket_gets_its_deliveries_and_failures_and_nothing_of_another_org(
    client, make_org, make_receiver, worker, listen
):
    acme, other = make_org("Acme"), make_org("Other")
    good, bad = make_receiver(), make_receiver()
    bad.reply(500, b"receiver broke")
    ok_id = _endpoint(client, acme, good.url + "/ok")
    failing_id = _endpoint(client, acme, bad.url + "/fail", max_retries=1)
    other_id = _endpoint(client, other, good.url + "/other")

    acme_socket = listen(auth={"apiKey": acme.key})  # polling, then upgraded to websocket
    other_socket = listen(auth={"apiKey": other.key}, transports=["websocket"])

    message_id = _report(client, acme, "sbx-acme")
    other_message_id = _report(client, other, "sbx-other")

    delivered = acme_socket.wait_for(_is_attempt(ok_id))[0]
    assert delivered[0] == "webhook.delivered"
    data = delivered[1]
    assert set(data) == ATTEMPT_FIELDS
    assert data["organizationId"] == acme.id
    assert data["messageId"] == message_id
    assert data["deliveryId"].startswith("whd-")
    assert data["eventType"] == "sandbox.created"
    assert data["attemptNumber"] == 1
    assert data["statusCode"] == 200
    assert isinstance(data["durationMs"], int) and data["durationMs"] >= 0
    assert data["trigger"] == "scheduled"
    assert data["final"] is True
    assert datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")) <= datetime.now(UTC)

    # max_retries=1: a failed first try with a retry to come, then the final failure.
    failures = acme_socket.wait_for(_is_attempt(failing_id), count=2)
    assert [name for name, _ in failures] == ["webhook.failed", "webhook.failed"]
    assert [(d["attemptNumber"], d["statusCode"], d["final"]) for _, d in failures] == [
        (1, 500, False),
        (2, 500, True),
    ]
    assert {d["messageId"] for _, d in failures} == {message_id}

    # The other organization's socket got its own delivery, so it was published ...
    got = other_socket.wait_for(_is_attempt(other_id))[0][1]
    assert got["messageId"] == other_message_id
    # ... and nothing of it reached Acme's socket (nor anything of Acme the other's).
    time.sleep(0.5)
    assert all(d["organizationId"] == acme.id for d in acme_socket.named(*EVENTS[:2]))
    assert other_message_id not in {d["messageId"] for d in acme_socket.named(*EVENTS[:2])}
    assert all(d["organizationId"] == other.id for d in other_socket.named(*EVENTS[:2]))


def test_bad_missing_or_platform_credentials_cannot_connect(org, live_server):
    for auth, headers in (
        ({"apiKey": "whk_live_not-a-real-key"}, None),
        (None, None),
        ({"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.bad"}, None),
        ({"apiKey": ADMIN_TOKEN}, None),
        (None, {"X-API-Key": "wrong"}),
    ):
        listener = Listener(live_server)
        with pytest.raises(socketio.exceptions.ConnectionError):
            listener.connect(auth=auth, headers=headers, transports=["websocket"])
        assert not listener.client.connected


def test_key_in_header_and_jwt_in_auth_connect(org, listen):
    by_header = listen(headers={"X-API-Key": org.key}, transports=["websocket"])
    token = jwt.encode(
        {"sub": org.user_id, "org": org.id, "exp": datetime.now(UTC) + timedelta(minutes=5)},
        JWT_SECRET,
        algorithm="HS256",
    )
    by_token = listen(auth={"token": token}, transports=["websocket"])
    assert by_header.client.connected and by_token.client.connected


def test_member_gets_only_events_of_endpoints_it_can_see(
    client, org, add_user, make_receiver, worker, listen
):
    member = add_user(org, "member")
    receiver = make_receiver()
    roots_own = _endpoint(client, org, receiver.url + "/root")
    account_wide = _endpoint(client, org, receiver.url + "/account", scope="account")
    members_own = _endpoint(client, member, receiver.url + "/member")

    member_socket = listen(auth={"apiKey": member.key}, transports=["websocket"])
    root_socket = listen(auth={"apiKey": org.key}, transports=["websocket"])

    _report(client, org, "sbx-1")
    every = {roots_own, account_wide, members_own}
    root_socket.wait_for(lambda n, d: n == "webhook.delivered" and d["endpointId"] in every, 3)
    member_socket.wait_for(
        lambda n, d: n == "webhook.delivered" and d["endpointId"] in every - {roots_own}, 2
    )
    # Endpoint changes follow the same rule.
    later_root = _endpoint(client, org, receiver.url + "/root-2")
    later_member = _endpoint(client, member, receiver.url + "/member-2")
    root_socket.wait_for(
        lambda n, d: n == "endpoint.created" and d["endpoint"]["id"] in {later_root, later_member},
        2,
    )
    # Live events leave each process batched (shared.courier), so the creations of the
    # endpoints made just before the sockets connected may arrive too: look at the later two.
    later = {later_root, later_member}
    created = member_socket.wait_for(
        lambda n, d: n == "endpoint.created" and d["endpoint"]["id"] in later
    )[0][1]
    assert created["organizationId"] == org.id
    assert created["endpoint"]["id"] == later_member
    assert created["endpoint"]["status"] == "active"
    assert created["endpoint"]["url"] == receiver.url + "/member-2"

    time.sleep(0.5)
    seen_by_member = {d["endpointId"] for d in member_socket.named("webhook.delivered")}
    assert seen_by_member == {account_wide, members_own}
    created_seen = {d["endpoint"]["id"] for d in member_socket.named("endpoint.created")}
    assert later_member in created_seen
    assert not created_seen & {roots_own, later_root}


def test_endpoint_changes_are_published_after_commit(client, org, receiver, listen):
    socket = listen(auth={"apiKey": org.key}, transports=["websocket"])
    endpoint_id = _endpoint(client, org, receiver.url + "/hook")
    as_listed = client.get(
        f"/api/webhooks/organizations/{org.id}/endpoints/{endpoint_id}", headers=org.headers
    ).json
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}", json={"description": "renamed"}, headers=org.headers
    )
    assert resp.status_code == 200
    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"is_active": False}, headers=org.headers)
    assert resp.status_code == 200
    # A rejected change is rolled back and says nothing.
    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"url": "ftp://x"}, headers=org.headers)
    assert resp.status_code == 400
    assert client.delete(f"/v1/webhooks/{endpoint_id}", headers=org.headers).status_code == 200

    events = socket.wait_for(lambda n, d: d.get("endpoint", {}).get("id") == endpoint_id, 4)
    assert [name for name, _ in events] == [
        "endpoint.created",
        "endpoint.updated",
        "endpoint.disabled",
        "endpoint.deleted",
    ]
    shapes = [data["endpoint"] for _, data in events]
    # The docs/api.md §6.2 endpoint shape, exactly as the organization service shows it.
    assert shapes[0] == as_listed
    assert shapes[1]["description"] == "renamed"
    assert shapes[2]["status"] == "disabled"
    assert shapes[2]["disabledReason"]
    assert {data["organizationId"] for _, data in events} == {org.id}
    time.sleep(0.3)
    assert len(socket.named("endpoint.updated", "endpoint.disabled")) == 2


def _closed_within(listener: Listener, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not listener.client.connected:
            return True
        time.sleep(0.1)
    return False


def _token(org, *, seconds: float) -> str:
    exp = datetime.now(UTC) + timedelta(seconds=seconds)
    return jwt.encode(
        {"sub": org.user_id, "org": org.id, "exp": exp}, JWT_SECRET, algorithm="HS256"
    )


def test_a_socket_is_closed_when_its_jwt_expires(org, listen, live_server):
    expiring_token = _token(org, seconds=3)
    expiring = listen(auth={"token": expiring_token}, transports=["websocket"])
    lasting = listen(auth={"token": _token(org, seconds=300)}, transports=["websocket"])
    assert expiring.client.connected
    assert _closed_within(expiring, 3 + realtime.EXPIRY_TICK + 5)
    assert lasting.client.connected
    # Nor does the expired token open a new one.
    with pytest.raises(socketio.exceptions.ConnectionError):
        Listener(live_server).connect(auth={"token": expiring_token}, transports=["websocket"])


def test_a_socket_whose_key_is_revoked_is_closed_and_the_others_stay(org, add_user, listen):
    member = add_user(org, "member")
    revoked = listen(auth={"apiKey": member.key}, transports=["websocket"])
    kept = listen(auth={"apiKey": org.key}, transports=["websocket"])
    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == member.user_id)
            .values(revoked_at=datetime.now(UTC))
        )
    assert _closed_within(revoked, realtime.RECHECK_EVERY + 2 * realtime.EXPIRY_TICK + 5)
    assert kept.client.connected


def test_endpoint_events_show_custom_headers_masked(client, org, receiver, listen):
    socket = listen(auth={"apiKey": org.key}, transports=["websocket"])
    headers = {"Authorization": "Bearer socket-cred", "X-Tenant": "acme"}
    endpoint_id = _endpoint(client, org, receiver.url + "/hook", headers=headers)
    resp = client.put(
        f"/v1/webhooks/{endpoint_id}",
        json={"headers": {"X-Session-Token": "t-1"}},
        headers=org.headers,
    )
    assert resp.status_code == 200, resp.json
    events = socket.wait_for(lambda n, d: d.get("endpoint", {}).get("id") == endpoint_id, 2)
    assert [(name, data["endpoint"]["headers"]) for name, data in events] == [
        ("endpoint.created", {"Authorization": "********", "X-Tenant": "acme"}),
        ("endpoint.updated", {"X-Session-Token": "********"}),
    ]
