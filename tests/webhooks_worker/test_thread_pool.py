"""The worker's thread pool: few threads while posts are quick, more while receivers hang.

Real posts to real loopback receivers through the delivery client, on the executor the
worker's `--pool threads` runs (webhooks_worker.thread_pool), and that pool inside the
test session's real Celery worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest

from shared.http import DeliveryClient
from shared.targets import parse_allowlist
from tests.support.receiver import Receiver
from tests.support.waiting import wait_until
from webhooks_worker.thread_pool import BLOCKED_AFTER, ElasticExecutor

HANG = 3.0


@pytest.fixture
def client() -> Iterator[DeliveryClient]:
    delivery = DeliveryClient(allow=parse_allowlist("127.0.0.0/8"), user_agent="test")
    yield delivery
    delivery.close()


@pytest.fixture
def hanging_and_quick(make_receiver) -> tuple[Receiver, Receiver]:
    hanging, quick = make_receiver(), make_receiver()
    hanging.reply(delay=HANG)
    return hanging, quick


@pytest.fixture
def executors() -> Iterator[list[ElasticExecutor]]:
    made: list[ElasticExecutor] = []
    yield made
    for executor in made:
        executor.shutdown(cancel_futures=True)


@pytest.fixture
def make_executor(client, executors):
    def _make(
        *,
        max_threads: int,
        core: int,
        blocked_after: float = BLOCKED_AFTER,
        retire_after: float = 30.0,
    ) -> ElasticExecutor:
        executor = ElasticExecutor(
            max_threads,
            core=core,
            blocked=lambda: client.posts_waiting_longer_than(blocked_after),
            retire_after=retire_after,
        )
        executors.append(executor)
        return executor

    return _make


def _post(client: DeliveryClient, url: str) -> tuple[int | None, float]:
    result = client.post(url, b"{}", {"content-type": "application/json"}, timeout=10)
    return result.status_code, time.monotonic()


def test_quick_posts_run_on_the_core_threads_only(client, receiver, make_executor):
    # A loopback post takes about a millisecond; one second leaves room for a busy machine.
    pool = make_executor(max_threads=64, core=4, blocked_after=1.0)
    seen: set[str] = set()

    def post() -> int | None:
        seen.add(threading.current_thread().name)
        return _post(client, receiver.url)[0]

    futures = [pool.submit(post) for _ in range(300)]
    assert [f.result(timeout=30) for f in futures] == [200] * 300
    assert pool.threads <= 4
    assert 1 <= len(seen) <= 4


def test_a_quick_post_does_not_wait_behind_hanging_ones(client, hanging_and_quick, make_executor):
    hanging, quick = hanging_and_quick
    pool = make_executor(max_threads=32, core=2)
    started = time.monotonic()
    slow = [pool.submit(_post, client, hanging.url) for _ in range(8)]
    fast = pool.submit(_post, client, quick.url)
    status, done_at = fast.result(timeout=30)
    assert status == 200
    # Two core threads, both held for HANG seconds: the quick post got a new thread.
    assert done_at - started < HANG / 2
    assert 8 <= pool.threads <= 2 + 9  # core, plus one per post in flight
    assert [f.result(timeout=30)[0] for f in slow] == [200] * 8
    # Every hanging post had a thread of its own, at once.
    arrivals = [r.at for r in hanging.requests]
    assert max(arrivals) - min(arrivals) < HANG / 2


def test_never_more_threads_than_the_concurrency(client, hanging_and_quick, make_executor):
    hanging, quick = hanging_and_quick
    pool = make_executor(max_threads=4, core=2)
    started = time.monotonic()
    slow = [pool.submit(_post, client, hanging.url) for _ in range(6)]
    fast = pool.submit(_post, client, quick.url)
    time.sleep(HANG / 2)
    assert pool.threads == 4
    assert len(hanging.requests) == 4
    # The quick post waits for a thread: the first four hanging posts hold them all.
    status, done_at = fast.result(timeout=30)
    assert status == 200 and done_at - started >= HANG
    assert [f.result(timeout=30)[0] for f in slow] == [200] * 6
    assert pool.threads == 4


def test_the_thread_added_for_a_hang_takes_the_oldest_waiting_task(
    client, hanging_and_quick, make_executor
):
    hanging, _quick = hanging_and_quick
    pool = make_executor(max_threads=2, core=1)
    pool.submit(_post, client, hanging.url)  # holds the core thread
    hanging.wait_for(1, timeout=5)
    release = threading.Event()
    first = pool.submit(release.wait, 10)
    second = pool.submit(lambda: "second")
    # Once the post counts as blocked the pool may run a second thread, and only one.
    wait_until(first.running, timeout=5)
    time.sleep(0.3)
    assert not second.running() and not second.done()
    release.set()
    assert second.result(timeout=5) == "second"


def test_tasks_run_in_the_order_they_came_on_one_thread(make_executor):
    pool = make_executor(max_threads=8, core=1)
    order: list[int] = []
    futures = [pool.submit(order.append, i) for i in range(200)]
    for f in futures:
        f.result(timeout=10)
    assert order == list(range(200))


def test_lanes_take_turns_and_each_keeps_its_order(make_executor):
    pool = make_executor(max_threads=8, core=1)
    release = threading.Event()
    pool.submit(release.wait, 10)  # holds the one thread while the lanes fill
    order: list[str] = []
    futures = [pool.submit_to("a", order.append, f"a{i}") for i in range(500)]
    futures += [pool.submit_to("b", order.append, f"b{i}") for i in range(2)]
    futures.append(pool.submit_to("c", order.append, "c0"))
    assert pool.waiting == 503
    release.set()
    for f in futures:
        f.result(timeout=10)
    # The backlog of lane a does not hold back b and c: one task per lane per turn.
    assert order[:6] == ["a0", "b0", "c0", "a1", "b1", "a2"]
    assert [t for t in order if t.startswith("a")] == [f"a{i}" for i in range(500)]


def test_the_pool_puts_each_task_in_the_lane_of_its_queue():
    # How Celery's worker hands a task to the pool: trace(type, id, request, body, ...).
    from webhooks_worker.fair_share import queue_of

    request = {"delivery_info": {"exchange": "", "routing_key": "webhooks.retry.3"}}
    assert queue_of(("webhooks.deliver", "id", request, b"", "json", "utf-8")) == "webhooks.retry.3"
    assert queue_of(("webhooks.deliver", "id", {}, b"", "json", "utf-8")) is None
    assert queue_of(()) is None


def test_threads_it_added_retire_when_the_hang_is_over(client, hanging_and_quick, make_executor):
    hanging, _quick = hanging_and_quick
    hanging.reply(delay=1.0)
    pool = make_executor(max_threads=16, core=2, retire_after=0.5)
    futures = [pool.submit(_post, client, hanging.url) for _ in range(6)]
    wait_until(lambda: pool.threads >= 6, timeout=5)
    assert [f.result(timeout=30)[0] for f in futures] == [200] * 6
    # Back to the core threads, which stay.
    wait_until(lambda: pool.threads == 2, timeout=5)
    time.sleep(1.0)
    assert pool.threads == 2


def test_a_failing_task_reports_its_exception_and_the_thread_goes_on(make_executor):
    pool = make_executor(max_threads=2, core=1)

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(timeout=10)
    assert pool.submit(lambda: 42).result(timeout=10) == 42
    assert pool.threads == 1


def test_shutdown_waits_for_running_tasks_and_cancels_those_not_started(make_executor):
    pool = make_executor(max_threads=1, core=1)
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "never")
    wait_until(lambda: running.running(), timeout=5)
    stopper = threading.Thread(target=pool.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive()  # the running task holds it
    release.set()
    stopper.join(timeout=5)
    assert not stopper.is_alive()
    assert running.result(timeout=1) is True
    with pytest.raises(CancelledError):
        queued.result(timeout=1)
    assert pool.threads == 0
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)


def test_shutdown_without_cancelling_runs_what_was_queued(make_executor):
    pool = make_executor(max_threads=1, core=1)
    release = threading.Event()
    pool.submit(release.wait, 10)
    queued = [pool.submit(lambda i=i: i) for i in range(5)]
    release.set()
    pool.shutdown()
    assert [f.result(timeout=1) for f in queued] == list(range(5))
    assert pool.threads == 0


def test_shutdown_stops_the_watcher(client, hanging_and_quick, make_executor):
    hanging, _quick = hanging_and_quick
    pool = make_executor(max_threads=8, core=1)
    pool.submit(_post, client, hanging.url)
    pool.submit(_post, client, hanging.url)  # waits: the watcher looks for blocked posts
    wait_until(lambda: len(hanging.requests) == 2, timeout=5)
    watchers = [t for t in threading.enumerate() if t.name.endswith("-watch")]
    assert watchers
    pool.shutdown(cancel_futures=True)
    for watcher in watchers:
        watcher.join(timeout=2)
    assert not any(t.is_alive() for t in watchers)


def test_the_worker_runs_this_pool_for_pool_threads(worker):
    from webhooks_worker.celery_app import app

    stats = wait_until(lambda: app.control.inspect(timeout=2).stats(), timeout=20)
    (node,) = stats.values()
    pool = node["pool"]
    assert pool["implementation"] == "webhooks_worker.thread_pool:ElasticThreadPool"
    assert pool["max-concurrency"] == 16
    assert pool["core-threads"] == 8
