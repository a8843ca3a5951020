"""A receiver that hangs does not hold up the others (STYLE: IO-bound work, issue 6).

A real worker runs two core threads (WEBHOOKS_WORKER_CORE_THREADS) and a concurrency of
16: while ten posts hang on one endpoint, a healthy endpoint's event still goes out at once,
on threads the pool adds for the blocked ones.
"""

from __future__ import annotations

import time

from tests.conftest import PLATFORM
from tests.support.scenario import create_endpoint, create_org, stopped_event

HANG = 4.0
HANGING_EVENTS = 10


def _started_event(org, n: int) -> dict:
    return {**stopped_event(org, n), "oldState": "stopped", "newState": "started"}


def test_a_healthy_endpoint_is_served_while_another_hangs(stack, make_receiver):
    hanging, healthy = make_receiver(), make_receiver()
    hanging.reply(delay=HANG)
    api = stack.start_api()
    worker = stack.start_worker(concurrency=16, env={"WEBHOOKS_WORKER_CORE_THREADS": "2"})
    assert "concurrency: 16 (thread_pool)" in worker.log_text()
    org = create_org(api)
    create_endpoint(api, org, hanging.url + "/hook", event_types=("sandbox.stopped",))
    create_endpoint(api, org, healthy.url + "/hook", event_types=("sandbox.started",))

    events = [stopped_event(org, i) for i in range(HANGING_EVENTS)]
    assert api.post("/api/internal/events", json=events, headers=PLATFORM).status_code == 202
    hanging.wait_for(HANGING_EVENTS, timeout=HANG)  # all of them at once: a thread each
    sent = time.time()
    resp = api.post("/api/internal/events", json=_started_event(org, 99), headers=PLATFORM)
    assert resp.status_code == 202

    (received,) = healthy.wait_for(1, timeout=HANG)
    assert received.at - sent < 1.0
    # The hanging posts were still in flight: the healthy one did not wait for a thread.
    assert received.at < min(r.at for r in hanging.requests) + HANG
