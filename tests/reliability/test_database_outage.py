"""PostgreSQL restarted mid-run: nothing accepted is lost, and the outage answers 503.

A real api, worker and beat on a private PostgreSQL cluster, which the test stops and
starts again while the platform keeps reporting events (docs/api.md §5 and 10).
"""

from __future__ import annotations

import threading
import time

import requests

from tests.conftest import PLATFORM
from tests.support.scenario import (
    create_endpoint,
    create_org,
    duplicate_tries,
    receipts,
    scalar,
    stopped_event,
)
from tests.support.waiting import wait_until


def _outage_probes(org, endpoint_id: str) -> list[tuple[str, str, dict, dict | None]]:
    """One request per face and kind of route that needs the database."""
    key = {"X-API-Key": org.key}
    hook = {"url": "http://127.0.0.1:9/x", "event_types": ["sandbox.started"]}
    return [
        ("GET", "/v1/webhooks", key, None),
        ("GET", f"/v1/webhooks/{endpoint_id}", key, None),
        ("POST", "/v1/webhooks", key, hook),
        ("PUT", f"/v1/webhooks/{endpoint_id}", key, {"description": "x"}),
        ("GET", f"/api/webhooks/organizations/{org.id}/endpoints", key, None),
        ("GET", f"/api/webhooks/organizations/{org.id}/messages", key, None),
        ("GET", "/api/webhooks/event-types", key, None),
        ("GET", "/events/webhooks/sandboxes", key, None),
        ("POST", "/api/internal/organizations", PLATFORM, {"name": "During the outage"}),
        ("POST", "/api/internal/events", PLATFORM, stopped_event(org, 999_999)),
        ("GET", "/api/webhooks/initialization-stats", PLATFORM, None),
    ]


def test_database_restart_loses_no_accepted_message_and_answers_503(stack, make_receiver):
    receiver = make_receiver()
    api = stack.start_api()
    stack.start_worker()
    stack.start_beat()
    org = create_org(api)
    endpoint = create_endpoint(api, org, receiver.url + "/hook", timeout_seconds=5)

    accepted: set[str] = set()
    statuses: list[int] = []
    retry_after: list[str | None] = []
    stop = threading.Event()

    def report() -> None:
        n = 0
        http = requests.Session()
        while not stop.is_set():
            events = [stopped_event(org, n + i) for i in range(5)]
            n += 5
            try:
                resp = http.post(
                    api.url + "/api/internal/events", json=events, headers=PLATFORM, timeout=30
                )
            except requests.RequestException as exc:  # pragma: no cover - a failure to report
                statuses.append(-1)
                retry_after.append(repr(exc))
                continue
            statuses.append(resp.status_code)
            if resp.status_code == 202:
                accepted.update(m["id"] for m in resp.json()["messages"])
            else:
                retry_after.append(resp.headers.get("Retry-After"))
            time.sleep(0.05)

    platform = threading.Thread(target=report, daemon=True)
    platform.start()
    wait_until(lambda: len(accepted) >= 50)
    stack.pg.stop("fast")
    outage_started = time.monotonic()
    try:
        answers = []
        for method, path, headers, body in _outage_probes(org, endpoint["endpoint_id"]):
            resp = api.request(method, path, headers=headers, json=body)
            answers.append((method, path, resp.status_code, resp.headers.get("Retry-After")))
        healthz = api.get("/healthz").status_code
        time.sleep(max(0.0, 3 - (time.monotonic() - outage_started)))
    finally:
        stack.pg.start()
    wait_until(lambda: len(statuses) >= 5 and statuses[-1] == 202, timeout=30)
    time.sleep(1)
    stop.set()
    platform.join(30)

    assert [a for a in answers if a[2:] != (503, "5")] == []
    assert healthz == 200
    assert set(statuses) <= {202, 503}, statuses
    assert statuses.count(503) >= 1 and set(retry_after) == {"5"}

    # Every message the api accepted is delivered, each try recorded once.
    wait_until(lambda: accepted <= set(receipts(receiver)), timeout=90, interval=1)
    engine = stack.engine
    assert duplicate_tries(engine) == []
    assert scalar(engine, "SELECT count(*) FROM messages") == len(accepted)
    wait_until(
        lambda: (
            scalar(engine, "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
            == len(accepted)
        ),
        timeout=30,
    )
    counts = receipts(receiver)
    print(
        f"\n{len(accepted)} messages accepted around a database restart, "
        f"{statuses.count(503)} reports answered 503; duplicate receipts "
        f"{sum(c - 1 for c in counts.values())}"
    )
