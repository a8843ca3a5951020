"""The worker's thread pool: few threads while posts are quick, more while receivers hang.

Real posts to real loopback receivers through the delivery client, on the executor the
worker's `--pool threads` runs (webhooks_worker.elastic_threads).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shared.http import DeliveryClient
from shared.targets import parse_allowlist
from tests.support.receiver import Receiver
from webhooks_worker.elastic_threads import BLOCKED_AFTER, ElasticExecutor

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


def _executor(
    client: DeliveryClient, *, max_workers: int, core: int, blocked_after: float = BLOCKED_AFTER
) -> ElasticExecutor:
    return ElasticExecutor(
        max_workers, core=core, blocked=lambda: client.posts_waiting_longer_than(blocked_after)
    )


def _post(client: DeliveryClient, url: str) -> tuple[int | None, float]:
    result = client.post(url, b"{}", {"content-type": "application/json"}, timeout=10)
    return result.status_code, time.monotonic()


def test_quick_posts_run_on_the_core_threads(client, receiver):
    # A loopback post takes about a millisecond; one second leaves room for a busy machine.
    pool = _executor(client, max_workers=64, core=4, blocked_after=1.0)
    try:
        futures = [pool.submit(_post, client, receiver.url) for _ in range(300)]
        assert [f.result(timeout=30)[0] for f in futures] == [200] * 300
        assert len(pool._threads) <= 4
    finally:
        pool.shutdown()


def test_a_quick_post_does_not_wait_behind_hanging_ones(client, hanging_and_quick):
    hanging, quick = hanging_and_quick
    pool = _executor(client, max_workers=32, core=2)
    try:
        started = time.monotonic()
        slow = [pool.submit(_post, client, hanging.url) for _ in range(8)]
        fast = pool.submit(_post, client, quick.url)
        status, done_at = fast.result(timeout=30)
        assert status == 200
        # Two core threads, both held for HANG seconds: the quick post got a new thread.
        assert done_at - started < HANG / 2
        assert [f.result(timeout=30)[0] for f in slow] == [200] * 8
        # Every hanging post had a thread of its own, at once.
        arrivals = [r.at for r in hanging.requests]
        assert max(arrivals) - min(arrivals) < HANG / 2
        assert 8 <= len(pool._threads) <= 2 + 9  # core, plus one per post in flight
    finally:
        pool.shutdown()


def test_never_more_threads_than_the_concurrency(client, hanging_and_quick):
    hanging, quick = hanging_and_quick
    pool = _executor(client, max_workers=4, core=2)
    try:
        started = time.monotonic()
        slow = [pool.submit(_post, client, hanging.url) for _ in range(6)]
        fast = pool.submit(_post, client, quick.url)
        time.sleep(HANG / 2)
        assert len(pool._threads) == 4
        assert len(hanging.requests) == 4
        # The quick post waits for a thread: the first four hanging posts hold them all.
        status, done_at = fast.result(timeout=30)
        assert status == 200 and done_at - started >= HANG
        assert [f.result(timeout=30)[0] for f in slow] == [200] * 6
        assert len(pool._threads) == 4
    finally:
        pool.shutdown()


def test_tasks_run_in_the_order_they_came(client):
    pool = _executor(client, max_workers=8, core=1)
    order: list[int] = []
    lock = threading.Lock()

    def note(i: int) -> None:
        with lock:
            order.append(i)

    try:
        futures = [pool.submit(note, i) for i in range(50)]
        for f in futures:
            f.result(timeout=10)
        assert order == list(range(50))
    finally:
        pool.shutdown()


def test_shutdown_stops_the_watcher(client, receiver):
    pool = _executor(client, max_workers=8, core=2)
    pool.submit(_post, client, receiver.url).result(timeout=10)
    watcher = pool._watcher
    assert watcher is not None and watcher.is_alive()
    pool.shutdown()
    watcher.join(timeout=2)
    assert not watcher.is_alive()
