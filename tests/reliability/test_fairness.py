"""One organization's backlog does not delay another's deliveries (docs/api.md §11.7).

Organization A reports thousands of events at once to a receiver that takes a while to
answer and fails every first try, so A keeps a backlog of first tries and of retries
coming due (countdown tasks the workers hold, then run) for many seconds. Organization B
reports one event every half second meanwhile. Two worker processes, as the Procfile
runs on a two-core machine, with their shipped concurrency and core threads.

Before lanes, B's events waited behind everything A had queued: B's deliveries arrived
only after all of A's earlier ones. The assertion is about that order: each of B's deliveries
arrives while a large part of A's earlier first tries are still waiting (and, as a check
against a lane that only looks fair, within a few seconds of B's report).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

from shared import lanes
from tests.conftest import PLATFORM
from tests.support.receiver import Received, Reply
from tests.support.scenario import create_endpoint, create_org, stopped_event

A_EVENTS = 4000
A_BATCH = 500
A_ANSWER = 0.02  # seconds per post: slow enough to keep a backlog, not counted as hanging
B_EVENTS = 6
B_EVERY = 0.5
# What "not behind A's backlog" means here: when each of B's deliveries arrives, at least
# this many of A's first tries (all queued before B's first event) have not been made.
A_STILL_WAITING = 1000
# Generous against a loaded machine; before lanes B waited for A's whole backlog.
B_LATENCY_BOUND = 3.0


def _org_in_another_lane(api, lane: int):
    # Two organizations in one lane share it (docs/decisions.md): pick B outside A's.
    for n in range(50):
        org = create_org(api, f"B{n}")
        if lanes.lane_of(org.id) != lane:
            return org
    raise AssertionError("no organization outside A's lane in 50 tries")


def test_an_organizations_events_are_not_delayed_behind_anothers_backlog(stack, make_receiver):
    a_receiver, b_receiver = make_receiver(), make_receiver()
    seen: set[str] = set()
    seen_lock = threading.Lock()

    def a_answer(request: Received) -> Reply:
        # Every first try fails: A's retries come due by the thousand while B reports.
        with seen_lock:
            first = request.headers["webhook-id"] not in seen
            seen.add(request.headers["webhook-id"])
        return Reply(500 if first else 200, delay=A_ANSWER)

    a_receiver.responder = a_answer
    api = stack.start_api()
    for n in range(2):
        stack.start_worker(concurrency=256, name=f"worker{n}")
    org_a = create_org(api, "A")
    org_b = _org_in_another_lane(api, lanes.lane_of(org_a.id))
    create_endpoint(api, org_a, a_receiver.url + "/a")
    create_endpoint(api, org_b, b_receiver.url + "/b")

    events = [stopped_event(org_a, n) for n in range(A_EVENTS)]
    batches = [events[i : i + A_BATCH] for i in range(0, A_EVENTS, A_BATCH)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda batch: api.post("/api/internal/events", json=batch, headers=PLATFORM),
                batches,
            )
        )
    assert all(resp.status_code == 202 for resp in answers)
    a_receiver.wait_for(50, timeout=30)  # A's backlog is being worked on

    sent: dict[str, float] = {}
    for n in range(B_EVENTS):
        at = time.time()
        resp = api.post("/api/internal/events", json=stopped_event(org_b, n), headers=PLATFORM)
        assert resp.status_code == 202, resp.text
        sent[resp.json()["messages"][0]["id"]] = at
        time.sleep(B_EVERY)

    received = b_receiver.wait_for(B_EVENTS, timeout=60)
    assert {r.headers["webhook-id"] for r in received} == set(sent)
    a_requests = list(a_receiver.requests)
    first_tries: dict[str, float] = {}
    for r in a_requests:
        first_tries.setdefault(r.headers["webhook-id"], r.at)
    for request in received:
        latency = request.at - sent[request.headers["webhook-id"]]
        # Every one of A's first tries was queued before B's event: in one queue, B's
        # delivery would come after all of them.
        a_tried = sum(1 for at in first_tries.values() if at <= request.at)
        assert A_EVENTS - a_tried >= A_STILL_WAITING, (latency, a_tried)
        assert latency < B_LATENCY_BOUND, (latency, a_tried)


# One delivery per endpoint: a 503 with Retry-After holds its whole endpoint until then
# (docs/api.md §11.6), so each retry falling due needs an endpoint of its own.
RETRIES = 1000
SECOND_TRY_ANSWER = 0.045  # under the pool's 50 ms: A's retries run on the core threads
DUE_IN = 30.0


def test_retries_falling_due_by_the_thousand_do_not_stop_the_workers_taking_new_tasks(
    stack, make_receiver
):
    # A's receiver asks every first try to come back at one moment (Retry-After as an
    # HTTP-date): the worker holds A's retries as countdown tasks and all of them fall due
    # at once, far more than its threads run at a time. B reports just after: its
    # delivery must not wait until the worker has worked through A's retries.
    a_receiver, b_receiver = make_receiver(), make_receiver()
    due: list[float] = []
    lock = threading.Lock()

    def a_answer(request: Received) -> Reply:
        with lock:
            if not due:
                due.append(float(int(time.time() + DUE_IN)))
            first = request.path not in seen
            seen.add(request.path)
        if first:
            return Reply(503, headers={"Retry-After": formatdate(due[0], usegmt=True)})
        return Reply(200, delay=SECOND_TRY_ANSWER)

    seen: set[str] = set()
    a_receiver.responder = a_answer
    api = stack.start_api()
    # One worker process: with several, a worker that happens to hold few of A's retries
    # may take B's task anyway, and the test would pass by luck.
    stack.start_worker(concurrency=256)
    org_a = create_org(api, "A")
    org_b = _org_in_another_lane(api, lanes.lane_of(org_a.id))
    for n in range(RETRIES):
        create_endpoint(api, org_a, f"{a_receiver.url}/a{n}")
    create_endpoint(api, org_b, b_receiver.url + "/b")
    resp = api.post("/api/internal/events", json=stopped_event(org_a, 0), headers=PLATFORM)
    assert resp.status_code == 202
    a_receiver.wait_for(RETRIES, timeout=DUE_IN)  # every first try made before the moment
    assert time.time() < due[0], "the first tries took longer than the test allows"

    time.sleep(max(0.0, due[0] - time.time()) + 0.5)
    sent = time.time()
    resp = api.post("/api/internal/events", json=stopped_event(org_b, 0), headers=PLATFORM)
    assert resp.status_code == 202, resp.text
    (received,) = b_receiver.wait_for(1, timeout=60)

    second_tries = sum(1 for r in list(a_receiver.requests)[RETRIES:] if r.at <= received.at)
    assert second_tries > 0, "A's retries had not fallen due yet"
    # Held back, B's task would have waited in Redis until the workers had nearly run out
    # of A's retries; taken at once, it starts in its own lane's turn.
    assert RETRIES - second_tries >= RETRIES * 2 // 3, (received.at - sent, second_tries)
    assert received.at - sent < B_LATENCY_BOUND, (received.at - sent, second_tries)
