"""Driving a running api process over HTTP, as the platform and its customers do."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Engine, text

from tests.conftest import PLATFORM
from tests.support.receiver import Receiver
from tests.support.stack import Api


@dataclass
class Org:
    id: str
    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


def create_org(api: Api, name: str = "Acme") -> Org:
    resp = api.post("/api/internal/organizations", json={"name": name}, headers=PLATFORM)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return Org(body["organization"]["id"], body["user"]["id"], body["apiKey"])


def create_endpoint(api: Api, org: Org, url: str, event_types=("sandbox.stopped",), **extra):
    resp = api.post(
        "/v1/webhooks",
        json={"url": url, "event_types": list(event_types), **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]


def stopped_event(org: Org, n: int) -> dict:
    """A sandbox.state.updated event that /v1 endpoints see as sandbox.stopped."""
    return {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": f"sbx-{n}",
        "oldState": "started",
        "newState": "stopped",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }


def receipts(receiver: Receiver) -> Counter:
    """How many times the receiver got each webhook-id."""
    with receiver._lock:
        return Counter(r.headers.get("webhook-id") for r in receiver.requests)


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine: Engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def duplicate_tries(engine: Engine) -> list:
    """(delivery, try) pairs recorded more than once: must always be empty."""
    return rows(
        engine,
        "SELECT delivery_id, try_number, count(*) FROM attempts WHERE try_number IS NOT NULL "
        "GROUP BY delivery_id, try_number HAVING count(*) > 1",
    )
