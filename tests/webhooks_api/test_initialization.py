"""Organization initialization: preconfigured endpoints, failures and beat's retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from standardwebhooks.webhooks import Webhook

from shared import db as shared_db
from shared.config import get_settings
from shared.models import Application, OrganizationInitialization, utcnow
from shared.services import initialization, organizations
from tests.conftest import PLATFORM, OrgHandle
from tests.support.waiting import wait_until
from webhooks_worker import init_tasks

API = "/api/webhooks"
BASE = f"{API}/organizations"
CATEGORIES = {
    "sandbox-events": ["sandbox.*"],
    "snapshot-events": ["snapshot.*"],
    "volume-events": ["volume.*"],
    "audit-events": ["audit-log.*"],
    "all-events": ["*"],
}
STATUS_KEYS = {
    "organizationId",
    "status",
    "applicationCreated",
    "endpointsCreated",
    "endpointIds",
    "lastError",
    "retryCount",
    "createdAt",
    "updatedAt",
}
# Preconfigured URLs are operator configuration: a private address is fine at save time.
OPERATOR_BASE = "http://10.20.30.40/hooks"


@pytest.fixture
def configure(monkeypatch) -> Iterator[Callable[..., None]]:
    """Set environment variables for this test's settings (restored afterwards)."""

    def _set(**env: str | None) -> None:
        for key, value in env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield _set
    monkeypatch.undo()
    get_settings.cache_clear()


def _quiet_org(name: str = "Quiet") -> OrgHandle:
    """An organization made without its initialization task, so that no worker races us."""
    with shared_db.session_scope() as session:
        org, root = organizations.create_organization(session, name=name)
    return OrgHandle(org.id, root.user.id, root.api_key)


def _status(client, org: OrgHandle) -> dict:
    resp = client.get(f"{BASE}/{org.id}/initialization-status", headers=org.headers)
    assert resp.status_code == 200, resp.json
    return resp.json


def _initialize(client, org: OrgHandle) -> dict:
    resp = client.post(f"{BASE}/{org.id}/initialize", headers=org.headers)
    assert resp.status_code == 202, resp.json
    assert set(resp.json) == STATUS_KEYS
    return resp.json


def _endpoints(client, org: OrgHandle) -> list[dict]:
    resp = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers)
    assert resp.status_code == 200, resp.json
    return resp.json["items"]


def _stats(client) -> dict:
    resp = client.get(f"{API}/initialization-stats", headers=PLATFORM)
    assert resp.status_code == 200, resp.json
    return resp.json


def _secret(client, org: OrgHandle, endpoint_id: str) -> str:
    resp = client.get(f"{BASE}/{org.id}/endpoints/{endpoint_id}/secret", headers=org.headers)
    assert resp.status_code == 200, resp.json
    return resp.json["secret"]


def _make_due(organization_id: str) -> None:
    """Let the retry wait pass: move the next retry time into the past."""
    with shared_db.session_scope() as session:
        session.execute(
            update(OrganizationInitialization)
            .where(OrganizationInitialization.organization_id == organization_id)
            .values(next_retry_at=utcnow() - timedelta(seconds=1))
        )


def _row(organization_id: str) -> OrganizationInitialization:
    with shared_db.session_scope() as session:
        return session.get(OrganizationInitialization, organization_id)


def _failing_base(org_id: str) -> str:
    """A base URL that makes exactly one preconfigured URL one character too long.

    ``snapshot-events`` is the longest category, so its URL alone passes 2,048 characters;
    the database could not store it either (the column is varchar(2048)).
    """
    suffix = len(f"/{org_id}/snapshot-events")
    base = "http://example.com/"
    return base + "p" * (2049 - suffix - len(base))


def test_a_new_organization_is_initialized_by_the_worker(client, make_org, worker):
    org = make_org()
    status = wait_until(lambda: (s := _status(client, org))["status"] == "initialized" and s)
    assert set(status) == STATUS_KEYS
    assert status["organizationId"] == org.id
    assert status["applicationCreated"] is True
    # No WEBHOOKS_PRECONFIGURED_BASE_URL in the worker: initialized without endpoints.
    assert (status["endpointsCreated"], status["endpointIds"]) == (False, [])
    assert (status["lastError"], status["retryCount"]) == (None, 0)
    with shared_db.session_scope() as session:
        apps = session.scalars(select(Application).where(Application.organization_id == org.id))
        assert [a.id[:4] for a in apps] == ["app-"]
    assert _stats(client) == {"total": 1, "initialized": 1, "failed": 0, "pending": 0}


def test_initialize_creates_the_preconfigured_endpoints_once(client, add_user, configure):
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=OPERATOR_BASE, WEBHOOKS_ALLOW_PRIVATE_TARGETS="")
    org = _quiet_org()
    assert _status(client, org)["status"] == "pending"
    assert _stats(client) == {"total": 1, "initialized": 0, "failed": 0, "pending": 1}

    status = _initialize(client, org)
    assert status["status"] == "initialized"
    assert status["applicationCreated"] is True and status["endpointsCreated"] is True
    assert len(status["endpointIds"]) == 5

    items = _endpoints(client, org)
    assert {e["category"]: e["eventTypes"] for e in items} == CATEGORIES
    for endpoint in items:
        assert endpoint["url"] == f"{OPERATOR_BASE}/{org.id}/{endpoint['category']}"
        assert (endpoint["scope"], endpoint["payloadFormat"], endpoint["status"]) == (
            "account",
            "daytona",
            "active",
        )
        assert endpoint["description"] and endpoint["name"]
    assert sorted(e["id"] for e in items) == sorted(status["endpointIds"])

    # Again, by every route that may create them: nothing is duplicated.
    again = _initialize(client, org)
    assert again["endpointIds"] == status["endpointIds"]
    admin = add_user(org, "admin")
    resp = client.post(f"{BASE}/{org.id}/preconfigured-endpoints", headers=admin.headers)
    assert resp.status_code == 200, resp.json
    assert [e["id"] for e in resp.json["items"]] == status["endpointIds"]
    assert len(_endpoints(client, org)) == 5
    assert _stats(client) == {"total": 1, "initialized": 1, "failed": 0, "pending": 0}

    # The table now shows where the endpoints go.
    table = client.get(f"{API}/preconfigured-endpoints", headers=org.headers).json["items"]
    assert table[0]["urlTemplate"] == f"{OPERATOR_BASE}/{{organizationId}}/sandbox-events"


def test_preconfigured_endpoints_recreate_a_deleted_one_only(client, configure):
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=OPERATOR_BASE)
    org = _quiet_org()
    first = _initialize(client, org)
    removed = first["endpointIds"][1]
    resp = client.delete(f"{BASE}/{org.id}/endpoints/{removed}", headers=org.headers)
    assert resp.status_code == 204
    resp = client.post(f"{BASE}/{org.id}/preconfigured-endpoints", headers=org.headers)
    items = resp.json["items"]
    assert [e["category"] for e in items] == list(CATEGORIES)
    ids = [e["id"] for e in items]
    assert ids[0] == first["endpointIds"][0] and ids[2:] == first["endpointIds"][2:]
    assert ids[1] != removed
    assert _status(client, org)["endpointIds"] == ids


def test_preconfigured_endpoints_receive_the_organizations_events(
    client, make_receiver, configure, worker
):
    receiver = make_receiver()
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=receiver.url + "/collector")
    org = _quiet_org()
    ids = dict(zip(CATEGORIES, _initialize(client, org)["endpointIds"], strict=True))
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "volume.created",
            "organizationId": org.id,
            "id": "vol-1",
            "name": "v",
            "state": "ready",
            "createdAt": "2025-12-19T10:30:00.000Z",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202
    message_id = resp.json["messages"][0]["id"]
    try:
        got = receiver.wait_for(2)
    except AssertionError:
        print(client.get(f"{BASE}/{org.id}/messages/{message_id}", headers=org.headers).json)
        print(
            client.get(f"{BASE}/{org.id}/messages/{message_id}/attempts", headers=org.headers).json
        )
        raise
    time.sleep(0.3)
    paths = sorted(r.path for r in receiver.requests)
    assert paths == [f"/collector/{org.id}/all-events", f"/collector/{org.id}/volume-events"]
    for request in got:
        category = request.path.rsplit("/", 1)[1]
        # The secret route is how these receivers learn their secret.
        payload = Webhook(_secret(client, org, ids[category])).verify(request.body, request.headers)
        assert payload["event"] == "volume.created" and payload["organizationId"] == org.id


def test_a_failed_initialization_is_visible_and_retried_by_beat(client, configure):
    org = _quiet_org()
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=_failing_base(org.id))
    before = utcnow()
    status = _initialize(client, org)
    assert status["status"] == "failed"
    assert "2048" in status["lastError"]
    assert status["retryCount"] == 1
    assert status["applicationCreated"] is False
    # Nothing of the failed run was kept: not the application, not the first endpoint.
    assert _endpoints(client, org) == []
    assert _status(client, org) == status
    assert _stats(client) == {"total": 1, "initialized": 0, "failed": 1, "pending": 0}
    row = _row(org.id)
    assert before + timedelta(seconds=5) < row.next_retry_at <= before + timedelta(seconds=60)

    # Beat finds nothing due before the retry time.
    assert init_tasks.retry_initializations() == 0
    assert _status(client, org)["status"] == "failed"

    # The operator fixes the setting; once the wait has passed, beat's job alone retries.
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=OPERATOR_BASE)
    _make_due(org.id)
    assert init_tasks.retry_initializations() == 1
    status = _status(client, org)
    assert status["status"] == "initialized"
    assert status["lastError"] is None
    assert status["retryCount"] == 1
    assert status["applicationCreated"] is True and len(status["endpointIds"]) == 5
    assert len(_endpoints(client, org)) == 5
    assert _row(org.id).next_retry_at is None
    assert _stats(client) == {"total": 1, "initialized": 1, "failed": 0, "pending": 0}
    assert init_tasks.retry_initializations() == 0


def test_retries_back_off_and_stop_after_the_maximum(client, configure):
    org = _quiet_org()
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=_failing_base(org.id), WEBHOOKS_INIT_MAX_RETRIES="2")
    waits = []
    status = _initialize(client, org)
    for expected_count in (2, 3):
        row = _row(org.id)
        waits.append((row.next_retry_at - row.updated_at).total_seconds())
        _make_due(org.id)
        assert init_tasks.retry_initializations() == 1
        status = _status(client, org)
        assert (status["status"], status["retryCount"]) == ("failed", expected_count)
    # 30 s, then doubled; after the second retry failed there is none left.
    assert waits == [pytest.approx(30, abs=1), pytest.approx(60, abs=1)]
    assert _row(org.id).next_retry_at is None
    assert init_tasks.retry_initializations() == 0
    # The operator's explicit retry still runs it.
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=OPERATOR_BASE)
    resp = client.post(f"{API}/retry-failed-initializations", headers=PLATFORM)
    assert resp.status_code == 200
    assert resp.json == {"retried": 1}
    assert _status(client, org)["status"] == "initialized"
    assert client.post(f"{API}/retry-failed-initializations", headers=PLATFORM).json == {
        "retried": 0
    }


def test_two_beats_never_claim_the_same_retry(client, configure):
    org = _quiet_org()
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=_failing_base(org.id))
    assert _initialize(client, org)["status"] == "failed"
    _make_due(org.id)
    factory = shared_db.get_sessionmaker()
    first = factory()
    second_claim: list[list[str]] = []
    try:
        claimed = initialization.claim_failed(first)
        assert claimed == [org.id]

        def other_beat() -> None:
            with factory() as session:
                second_claim.append(initialization.claim_failed(session))
                session.commit()

        thread = threading.Thread(target=other_beat)
        thread.start()
        # The other beat's UPDATE waits on our uncommitted claim, then skips the row.
        time.sleep(0.3)
        assert thread.is_alive()
        first.commit()
        thread.join(timeout=10)
    finally:
        first.close()
    assert second_claim == [[]]
    row = _row(org.id)
    assert row.status == "pending" and row.next_retry_at > utcnow()


def test_update_all_endpoints_restores_every_organization_in_place_once(client, configure):
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=OPERATOR_BASE)
    first, second = _quiet_org("First"), _quiet_org("Second")
    for org in (first, second):
        _initialize(client, org)
    before = {e["id"]: e for org in (first, second) for e in _endpoints(client, org)}
    secrets = {
        eid: _secret(client, org, eid)
        for org in (first, second)
        for eid in [e["id"] for e in _endpoints(client, org)]
    }
    # An admin edits one preconfigured endpoint and deletes another.
    edited, deleted = _endpoints(client, first)[0], _endpoints(client, first)[1]
    resp = client.patch(
        f"{BASE}/{first.id}/endpoints/{edited['id']}",
        json={"eventTypes": ["sandbox.created"], "description": "mine", "name": "Kept name"},
        headers=first.headers,
    )
    assert resp.status_code == 200
    assert (
        client.delete(
            f"{BASE}/{first.id}/endpoints/{deleted['id']}", headers=first.headers
        ).status_code
        == 204
    )

    # The operator moves the collector.
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL="https://collector.example.com/v2")
    resp = client.post(f"{API}/update-all-endpoints", headers=PLATFORM)
    assert resp.status_code == 200, resp.json
    assert resp.json == {"organizations": 2, "created": 1, "updated": 9}

    for org in (first, second):
        items = _endpoints(client, org)
        assert {e["category"]: e["eventTypes"] for e in items} == CATEGORIES
        for endpoint in items:
            url = f"https://collector.example.com/v2/{org.id}/{endpoint['category']}"
            assert endpoint["url"] == url
            if endpoint["id"] in before:
                assert endpoint["description"] == before[endpoint["id"]]["description"]
                assert _secret(client, org, endpoint["id"]) == secrets[endpoint["id"]]
        by_category = {e["category"]: e["id"] for e in items}
        assert _status(client, org)["endpointIds"] == [by_category[c] for c in CATEGORIES]
    restored = client.get(f"{BASE}/{first.id}/endpoints/{edited['id']}", headers=first.headers)
    assert restored.json["eventTypes"] == ["sandbox.*"]
    assert restored.json["name"] == "Kept name"
    ids_after = {e["id"] for org in (first, second) for e in _endpoints(client, org)}
    assert ids_after - set(before) and len(ids_after - set(before)) == 1
    assert deleted["id"] not in ids_after

    again = client.post(f"{API}/update-all-endpoints", headers=PLATFORM)
    assert again.json == {"organizations": 2, "created": 0, "updated": 0}


def test_initialization_routes_are_for_root_and_admin_of_the_organization(
    client, make_org, add_user
):
    org, other = _quiet_org(), make_org("Other")
    member, admin = add_user(org, "member"), add_user(org, "admin")
    for path in ("initialize", "initialization-status", "preconfigured-endpoints"):
        method = client.get if path == "initialization-status" else client.post
        assert method(f"{BASE}/{org.id}/{path}", headers=member.headers).status_code == 403
        assert method(f"{BASE}/{org.id}/{path}", headers=other.headers).status_code == 404
        assert method(f"{BASE}/{org.id}/{path}", headers=admin.headers).status_code in (200, 202)
    assert _status(client, org)["status"] == "initialized"


def test_stats_count_every_organization(client, configure):
    orgs = [_quiet_org(f"Org {i}") for i in range(3)]
    _initialize(client, orgs[0])
    configure(WEBHOOKS_PRECONFIGURED_BASE_URL=_failing_base(orgs[1].id))
    _initialize(client, orgs[1])
    # A database row gone missing still counts, as pending.
    with shared_db.session_scope() as session:
        session.execute(
            text("DELETE FROM organization_initializations WHERE organization_id = :id"),
            {"id": orgs[2].id},
        )
    assert _stats(client) == {"total": 3, "initialized": 1, "failed": 1, "pending": 1}
    assert _status(client, orgs[2])["status"] == "pending"
