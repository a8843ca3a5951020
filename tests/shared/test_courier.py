"""The courier: Redis increments and live events gathered in memory, sent in the background.

Everything goes to the test Redis (or a private redis-server for the outage) and is read
back with a plain client or a real pub/sub subscriber.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from shared import courier
from tests.conftest import TEST_REDIS_URL
from tests.support.stack import RedisServer

# Tests that count what one explicit flush sent must not race the background thread,
# which would otherwise send part of the buffer on its own 50 ms beat: their couriers
# flush on their own only after this long. (Per courier: the process's shared couriers,
# which the app's live events use, keep their beat.)
HELD = 3600.0


@pytest.fixture
def channel() -> str:
    # Pub/sub channels are server-wide, not per database: a name no other run uses.
    return f"courier-test-{uuid.uuid4().hex}"


@pytest.fixture
def subscriber(redis_client: redis.Redis, channel: str) -> Iterator[redis.client.PubSub]:
    """A real pub/sub subscriber on the test Redis, subscribed to ``channel``."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(channel)
    # The subscription is confirmed before anything is published.
    confirmed = pubsub.get_message(timeout=2)
    assert confirmed is not None and confirmed["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def _received(pubsub: redis.client.PubSub, count: int, timeout: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None and message["type"] == "message":
            got.append(message["data"])
    return got


def test_increments_from_many_threads_add_up_exactly(redis_client):
    # The background thread flushes while the threads increment: nothing counted twice or lost.
    sender = courier.Courier(TEST_REDIS_URL)
    threads, per_thread = 8, 500
    start = threading.Barrier(threads)

    def bump() -> None:
        start.wait()
        for _ in range(per_thread):
            sender.increment(
                "stats",
                Counter({"attempts": 1, "bytes": 3, "seconds": 0.25}),
                float_fields=frozenset({"seconds"}),
            )

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sender.flush() is True

    total = threads * per_thread
    assert redis_client.hget("stats", "attempts") == str(total).encode()
    assert redis_client.hget("stats", "bytes") == str(3 * total).encode()
    assert float(redis_client.hget("stats", "seconds")) == 0.25 * total


def test_a_whole_number_float_keeps_going_to_a_float_field(redis_client):
    sender = courier.Courier(TEST_REDIS_URL, flush_every=HELD)
    floats = frozenset({"seconds"})
    sender.increment("stats", Counter({"seconds": 1.5}), float_fields=floats)
    assert sender.flush() is True
    # 2.0 is a whole number, but the field holds 1.5: HINCRBY would be refused.
    sender.increment("stats", Counter({"seconds": 2.0, "attempts": 1}), float_fields=floats)
    assert sender.flush() is True
    assert float(redis_client.hget("stats", "seconds")) == 3.5
    assert redis_client.hget("stats", "attempts") == b"1"
    # Halves that add up to a whole number in the buffer, likewise.
    sender.increment("stats", Counter({"seconds": 0.5}), float_fields=floats)
    sender.increment("stats", Counter({"seconds": 0.5}), float_fields=floats)
    assert sender.flush() is True
    assert float(redis_client.hget("stats", "seconds")) == 4.5


def test_published_messages_reach_a_subscriber_in_order(subscriber, channel):
    # Sent by the background thread alone, across as many flushes as it takes.
    sender = courier.Courier(TEST_REDIS_URL)
    sent = [f"event-{n}" for n in range(300)]
    for n, payload in enumerate(sent):
        # Both payload types the publishers use.
        sender.publish(channel, payload if n % 2 else payload.encode())
        if n % 50 == 0:
            time.sleep(0.03)
    assert _received(subscriber, len(sent)) == [p.encode() for p in sent]


def test_the_background_thread_flushes_without_being_asked(redis_client):
    sender = courier.Courier(TEST_REDIS_URL)
    started = time.monotonic()
    sender.increment("stats", Counter({"attempts": 1}))
    deadline = started + 2.0
    while redis_client.hget("stats", "attempts") is None and time.monotonic() < deadline:
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    assert redis_client.hget("stats", "attempts") == b"1"
    # FLUSH_EVERY is 50 ms; a person watching the dashboard must not notice the delay.
    assert elapsed < 0.5


def test_a_flush_to_an_unreachable_redis_is_dropped_with_one_warning(tmp_path, caplog):
    server = RedisServer(tmp_path)
    try:
        sender = courier.Courier(server.url, flush_every=HELD)
        server.kill()  # nothing listens on its port now
        sender.increment(
            "stats", Counter({"attempts": 1, "seconds": 0.5}), float_fields=frozenset({"seconds"})
        )
        sender.publish("live-test", "lost")
        with caplog.at_level(logging.WARNING, logger="shared.courier"):
            assert sender.flush() is False
            sender.increment("stats", Counter({"attempts": 10}))
            assert sender.flush() is False
        warnings = [r for r in caplog.records if r.name == "shared.courier"]
        # Said once, not once per flush (WARN_EVERY), with what was dropped.
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert "2 counters and 1 live events" in warnings[0].getMessage()

        server.start()  # same port: Redis is back
        sender.increment("stats", Counter({"attempts": 4}))
        assert sender.flush() is True
        # What failed was dropped, not sent late.
        assert server.client().hgetall("stats") == {b"attempts": b"4"}
    finally:
        server.kill()


def test_the_message_buffer_keeps_only_the_newest_max_messages(subscriber, channel):
    sender = courier.Courier(TEST_REDIS_URL, flush_every=HELD)
    total = courier.MAX_MESSAGES + 3
    for n in range(total):
        sender.publish(channel, f"m{n}")
    assert sender.flush() is True
    got = _received(subscriber, courier.MAX_MESSAGES)
    assert len(got) == courier.MAX_MESSAGES
    assert got[0] == b"m3" and got[-1] == f"m{total - 1}".encode()
    # Nothing beyond the bound was sent.
    assert subscriber.get_message(timeout=0.3) is None


def test_get_courier_is_one_per_url_and_flush_all_sends_every_one(redis_client):
    # Their own URLs (a client name) so that no courier of other tests is involved.
    first_url = f"{TEST_REDIS_URL}?client_name=courier-test-a"
    second_url = f"{TEST_REDIS_URL}?client_name=courier-test-b"
    first = courier.get_courier(first_url)
    assert courier.get_courier(first_url) is first
    second = courier.get_courier(second_url)
    assert second is not first
    first.flush_every = second.flush_every = HELD
    first.increment("stats", Counter({"a": 1}))
    second.increment("stats", Counter({"b": 2}))
    courier.flush_all()
    assert redis_client.hgetall("stats") == {b"a": b"1", b"b": b"2"}


def test_a_forked_child_sends_its_own_increments_and_not_its_parents(redis_client):
    url = f"{TEST_REDIS_URL}?client_name=courier-test-fork"
    parent = courier.get_courier(url)
    parent.flush_every = HELD
    # Pending in the parent at the fork: the child must not send it a second time.
    parent.increment("stats", Counter({"parent": 1}))
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 1
        try:
            child = courier.get_courier(url)
            child.increment("stats", Counter({"child": 1}))
            courier.flush_all()  # what the child's exit does (atexit)
            code = 0 if child is not parent else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert redis_client.hgetall("stats") == {b"child": b"1"}
    courier.flush_all()
    assert redis_client.hgetall("stats") == {b"child": b"1", b"parent": b"1"}
