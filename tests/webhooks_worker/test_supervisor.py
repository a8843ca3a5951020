"""`webhooks worker`: one delivery process per core, seen by its manager as one process.

The real command, on a private PostgreSQL and Redis (tests.support.stack), started and
stopped with real signals; deliveries go to real loopback receivers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import default_worker_processes
from tests.conftest import PLATFORM, TEST_ENV
from tests.support.scenario import create_endpoint, create_org, stopped_event
from tests.support.stack import Service, Stack, running_stack
from tests.support.waiting import wait_until
from webhooks_worker.supervisor import Supervisor

HANG = 6.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("supervisor"), TEST_ENV) as private:
        yield private


def _env(stack: Stack, **extra: str) -> dict[str, str]:
    """The stack's environment with the worker settings at their shipped defaults."""
    env = {**os.environ, **stack.env, **extra}
    for name in ("CELERY_BROKER_URL", "WEBHOOKS_WORKER_CONCURRENCY"):
        if name not in extra:
            env.pop(name, None)
    return env


def _start(stack: Stack, tmp_path: Path, *args: str, **extra: str) -> Service:
    service = Service(
        "supervisor",
        [sys.executable, "-m", "webhooks_api.cli", "worker", *args],
        _env(stack, **extra),
        tmp_path / f"supervisor-{time.monotonic_ns()}.log",
    )
    stack.services.append(service)  # stopped with the stack whatever happens
    return service


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ready(service: Service) -> int:
    return service.log_text().count(" ready.")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_it_runs_one_delivery_process_per_core_and_stops_them_all(stack, tmp_path, stop):
    cores = default_worker_processes()
    service = _start(stack, tmp_path)
    wait_until(lambda: _ready(service) == cores, timeout=60)
    children = _children(service.proc.pid)
    assert len(children) == cores
    for index in range(cores):
        assert f"worker{index}@" in service.log_text()  # each its own Celery node
    service.proc.send_signal(stop)
    assert service.proc.wait(timeout=60) == 0
    assert not any(_alive(pid) for pid in children)
    assert "Warm shutdown" in service.log_text()


def test_a_killed_delivery_process_is_replaced(stack, tmp_path):
    service = _start(stack, tmp_path, WEBHOOKS_WORKER_PROCESSES="2")
    wait_until(lambda: _ready(service) == 2, timeout=60)
    first, second = _children(service.proc.pid)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: _ready(service) == 3, timeout=60)
    now = _children(service.proc.pid)
    assert len(now) == 2 and second in now and first not in now
    assert "worker process 0 exited with code -9" in service.log_text()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=60) == 0


@pytest.mark.parametrize(("family", "other"), [("retry", "first"), ("first", "retry")])
def test_a_dedicated_pool_consumes_every_lane_of_its_family_only(stack, tmp_path, family, other):
    from shared import lanes

    service = _start(stack, tmp_path, "--queues", family, WEBHOOKS_WORKER_PROCESSES="1")
    wait_until(lambda: _ready(service) == 1, timeout=60)
    # Celery's banner lists the queues the process consumes: ".> <name> exchange=...".
    lines = service.log_text().splitlines()
    consumed = {line.split(".>", 1)[1].split()[0] for line in lines if "exchange=" in line}
    assert consumed == set(lanes.FAMILIES[lanes.FAMILY_OF[family]])
    assert not consumed & set(lanes.FAMILIES[lanes.FAMILY_OF[other]])
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=60) == 0


@pytest.mark.parametrize("value", ["0", "two", "100000"])
def test_a_bad_process_count_is_refused_naming_its_variable(stack, value):
    done = subprocess.run(
        [sys.executable, "-m", "webhooks_api.cli", "worker"],
        env=_env(stack, WEBHOOKS_WORKER_PROCESSES=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "WEBHOOKS_WORKER_PROCESSES" in done.stderr
    assert "started (pid" not in done.stderr  # no delivery process was started


def test_children_that_keep_failing_at_start_make_it_give_up(tmp_path):
    starts = tmp_path / "starts"
    failing = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"]
    supervisor = Supervisor(
        [failing], first_backoff=0.05, max_backoff=0.2, startup_seconds=5, give_up_after=4
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < 10
    assert starts.read_text() == "xxxx"  # restarted after each exit, then given up


def test_restarts_back_off(tmp_path):
    starts = tmp_path / "starts"
    failing = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"]
    supervisor = Supervisor(
        [failing], first_backoff=0.4, max_backoff=10, startup_seconds=5, give_up_after=100
    )

    def stop_later(*_args) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGALRM, stop_later)
    signal.setitimer(signal.ITIMER_REAL, 3.5)
    try:
        assert supervisor.run() == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    # Starts at 0, then after 0.4, 0.8, 1.6 s more (0, 0.4, 1.2, 2.8 s): four in 3.5 s,
    # where restarting at once would have made dozens.
    assert 3 <= len(starts.read_text()) <= 5


def test_a_hanging_receiver_does_not_hold_up_a_healthy_endpoint_at_the_defaults(
    stack, tmp_path, make_receiver
):
    hanging, healthy = make_receiver(), make_receiver()
    hanging.reply(delay=HANG)
    api = stack.start_api()
    service = _start(stack, tmp_path)
    wait_until(lambda: _ready(service) == default_worker_processes(), timeout=60)
    org = create_org(api)
    create_endpoint(api, org, hanging.url + "/hook", event_types=("sandbox.stopped",))
    create_endpoint(api, org, healthy.url + "/hook", event_types=("sandbox.started",))

    # More hanging posts than every process's core threads together.
    events = [stopped_event(org, i) for i in range(40)]
    assert api.post("/api/internal/events", json=events, headers=PLATFORM).status_code == 202
    hanging.wait_for(40, timeout=HANG)  # all of them at once: each got a thread
    for n in range(5):
        sent = time.time()
        started = {**stopped_event(org, 100 + n), "oldState": "stopped", "newState": "started"}
        assert api.post("/api/internal/events", json=started, headers=PLATFORM).status_code == 202
        (*_, received) = healthy.wait_for(n + 1, timeout=HANG)
        assert received.at - sent < 1.0
    assert len(hanging.requests) == 40  # still hanging: nothing was retried yet
