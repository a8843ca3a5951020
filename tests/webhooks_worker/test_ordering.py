"""Ordering per resource (docs/api.md §11.3), end to end with real workers and receivers.

An ordered endpoint gets each sandbox's events one after another, in the order they were
accepted, each numbered by ``webhook-sequence``; a failing delivery holds back only its
own sandbox; a worker killed in the middle does not let anything overtake.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.db import session_scope
from shared.models import Delivery
from tests.conftest import PLATFORM, ROOT
from tests.support.receiver import Received, Receiver, Reply
from tests.support.waiting import wait_until

SANDBOXES = 200
EVENTS = 10
STATES = ("started", "stopped")


def _ordered(client, org, url: str, **extra) -> dict:
    body = {"url": url, "event_types": ["sandbox.started", "sandbox.stopped"], **extra}
    resp = client.post("/v1/webhooks", json={"ordering": "resource", **body}, headers=org.headers)
    assert resp.status_code == 201, resp.json
    assert resp.json["data"]["ordering"] == "resource"
    return resp.json["data"]


def _event(org, sandbox: str, n: int) -> dict:
    """The n-th state event of a sandbox (started, stopped, started, ...)."""
    return {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": sandbox,
        "oldState": STATES[(n + 1) % 2],
        "newState": STATES[n % 2],
        "updatedAt": f"2025-12-19T10:30:{n:02d}.000Z",
        "eventId": f"{sandbox}-{n}",
    }


def _ingest_rounds(client, org, sandboxes: list[str], events: int) -> None:
    """Event n of every sandbox in one array, for n = 0, 1, ...: acceptance order is n."""
    for n in range(events):
        batch = [_event(org, sandbox, n) for sandbox in sandboxes]
        resp = client.post("/api/internal/events", json=batch, headers=PLATFORM)
        assert resp.status_code == 202, resp.json


class FlakyReceiver:
    """Answers 500 to about a fifth of first receipts (chosen by webhook-id), 200 after."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.ok: list[Received] = []
        receiver.responder = self.answer

    def answer(self, got: Received) -> Reply:
        message_id = got.headers["webhook-id"]
        with self.lock:
            first = message_id not in self.seen
            self.seen.add(message_id)
            if first and zlib.crc32(message_id.encode()) % 5 == 0:
                return Reply(500)
            self.ok.append(got)
        return Reply(200)


def _first_successes(ok: list[Received]) -> dict[str, list[tuple[int, int]]]:
    """By sandbox: (webhook-sequence, event number) of each message's first 2xx receipt."""
    seen: set[str] = set()
    by_sandbox: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for got in ok:
        if got.headers["webhook-id"] in seen:
            continue
        seen.add(got.headers["webhook-id"])
        data = got.json()["data"]
        n = int(data["updated_at"][17:19])
        by_sandbox[data["sandbox_id"]].append((int(got.headers["webhook-sequence"]), n))
    return by_sandbox


def _assert_in_order(flaky: FlakyReceiver, sandboxes: list[str]) -> None:
    by_sandbox = _first_successes(flaky.ok)
    assert set(by_sandbox) == set(sandboxes)
    for sandbox in sandboxes:
        assert by_sandbox[sandbox] == [(n + 1, n) for n in range(EVENTS)], sandbox


def _pending(endpoint_id: str) -> int:
    with session_scope() as session:
        return (
            session.query(Delivery)
            .filter(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
            .count()
        )


@pytest.fixture
def beat(database, tmp_path) -> Iterator[subprocess.Popen]:
    """A real beat: its sweep hands back what a killed worker held."""
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "beat"]
        + ["--loglevel", "INFO", "--schedule", str(tmp_path / "beat.schedule")],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: b"beat: Starting" in Path(tmp_path / "beat.log").read_bytes())
    yield proc
    proc.kill()
    proc.wait(timeout=20)
    log.close()


def test_each_sandbox_is_delivered_in_acceptance_order_and_others_do_not_wait(
    client, org, make_receiver, worker
):
    flaky, plain = FlakyReceiver(make_receiver()), make_receiver()
    ordered = _ordered(client, org, flaky.receiver.url)
    resp = client.post(
        "/v1/webhooks",
        json={"url": plain.url, "event_types": ["sandbox.started", "sandbox.stopped"]},
        headers=org.headers,
    )
    assert resp.json["data"]["ordering"] == "none"
    sandboxes = [f"sbx-{i}" for i in range(SANDBOXES)]

    _ingest_rounds(client, org, sandboxes, EVENTS)

    # The unordered endpoint has everything while the ordered one is still working
    # through its sandboxes' retries: it waited for none of them.
    everything = plain.wait_for(SANDBOXES * EVENTS, timeout=120)
    assert _pending(ordered["endpoint_id"]) > 0
    assert not any("webhook-sequence" in got.headers for got in everything)
    wait_until(lambda: _pending(ordered["endpoint_id"]) == 0, timeout=120)
    _assert_in_order(flaky, sandboxes)


def test_order_survives_a_worker_killed_mid_run(client, org, make_receiver, two_workers, beat):
    flaky = FlakyReceiver(make_receiver())
    ordered = _ordered(client, org, flaky.receiver.url)
    sandboxes = [f"sbx-{i}" for i in range(SANDBOXES)]

    _ingest_rounds(client, org, sandboxes, EVENTS)
    # Mid-run: some sandboxes' heads are in the killed worker's hands, its prefetched
    # tasks are lost with it. The sweep gives them back once their claims lapse.
    wait_until(lambda: len(flaky.ok) >= SANDBOXES * EVENTS // 4, timeout=60, interval=0.01)
    two_workers[0].kill()

    wait_until(lambda: _pending(ordered["endpoint_id"]) == 0, timeout=150, interval=0.5)
    _assert_in_order(flaky, sandboxes)


def test_a_failing_head_holds_back_only_its_sandbox_until_it_failed_for_good(
    client, org, receiver, worker
):
    # The stuck sandbox's first delivery fails every attempt (three, about 1 s and 2 s apart).
    receiver.responder = lambda got: Reply(
        500 if b'"sbx-stuck"' in got.body and got.headers["webhook-sequence"] == "1" else 200
    )
    ordered = _ordered(client, org, receiver.url, max_retries=2)
    stuck_ids = []
    for n in range(4):
        batch = [_event(org, "sbx-stuck", n)] + ([_event(org, "sbx-free", n)] if n else [])
        resp = client.post("/api/internal/events", json=batch, headers=PLATFORM)
        stuck_ids.append(resp.json["messages"][0]["id"])

    def stuck_later_waiting() -> bool:
        listed = client.get(
            f"/v1/webhooks/{ordered['endpoint_id']}/deliveries", headers=org.headers
        ).json["data"]["deliveries"]
        later = [d for d in listed if d["event_id"] in stuck_ids[1:]]
        return all(
            (d["status"], d["attempt_number"], d["next_retry_at"]) == ("pending", 0, None)
            for d in later
        )

    # While its head is retried, the stuck sandbox's later deliveries wait their turn
    # (pending, no attempt, no due time) and the free sandbox's go.
    wait_until(stuck_later_waiting)
    got = receiver.wait_for(3 + 3 + 3, timeout=30)
    stuck = [g for g in got if b'"sbx-stuck"' in g.body]
    free = [g for g in got if b'"sbx-free"' in g.body]
    assert [g.headers["webhook-sequence"] for g in free] == ["1", "2", "3"]
    assert max(g.at for g in free) < stuck[2].at
    # Once the head failed for good, the later ones go in order: the receiver sees the gap.
    assert [g.headers["webhook-sequence"] for g in stuck] == ["1", "1", "1", "2", "3", "4"]
    assert [g.headers["webhook-id"] for g in stuck[3:]] == stuck_ids[1:]
    wait_until(lambda: _pending(ordered["endpoint_id"]) == 0)
