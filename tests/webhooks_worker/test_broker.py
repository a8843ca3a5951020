"""The broker transport: kombu's Redis transport with one reused client per channel.

Run on the test Redis with kombu's own Connection, Producer and Consumer, as Celery
drives them; messages are read back from Redis or consumed.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery, uuid
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis

from shared.config import get_settings
from tests.conftest import TEST_REDIS_URL
from webhooks_worker import broker, celery_app


@pytest.fixture
def make_app() -> Iterator[Callable[[str | None], Celery]]:
    """Build the Celery app as a process would, with CELERY_BROKER_URL set or not."""
    made: list[Celery] = []

    def _make(broker_url: str | None = None) -> Celery:
        with pytest.MonkeyPatch.context() as env:
            if broker_url is not None:
                env.setenv("CELERY_BROKER_URL", broker_url)
            get_settings.cache_clear()
            try:
                app = celery_app.make_celery()
            finally:
                get_settings.cache_clear()
        made.append(app)
        return app

    yield _make
    for app in made:
        app.close()
    # A new Celery app makes itself the current one; the process's app is that again.
    celery_app.app.set_current()


@pytest.fixture
def connection() -> Iterator[Connection]:
    conn = Connection(TEST_REDIS_URL, transport=broker.TRANSPORT)
    yield conn
    conn.release()


@pytest.fixture
def queue(connection: Connection) -> Queue:
    declared = Queue("broker-test", Exchange("broker-test", type="direct"), "broker-test")
    declared(connection.default_channel).declare()
    return declared


def _take(connection: Connection, queue: Queue, count: int) -> list:
    """Consume and acknowledge ``count`` messages; the messages, in arrival order."""
    taken: list = []

    def take(_body, message) -> None:
        taken.append(message)
        message.ack()

    with connection.Consumer(queue, callbacks=[take], accept=["json"]):
        while len(taken) < count:
            connection.drain_events(timeout=5)
    return taken


def _consume(connection: Connection, queue: Queue, count: int) -> list:
    return [message.decode() for message in _take(connection, queue, count)]


def test_the_app_uses_this_transport_for_a_redis_broker(make_app):
    app = make_app()  # the test environment: REDIS_URL=redis://..., no CELERY_BROKER_URL
    assert app.conf.broker_transport == broker.TRANSPORT
    with app.connection_for_write() as conn:
        assert type(conn.transport) is broker.Transport
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        # The URL's host, port and database still apply with the transport named apart.
        with channel.conn_or_acquire() as client:
            kwargs = client.connection_pool.connection_kwargs
            expected = redis.Redis.from_url(TEST_REDIS_URL).connection_pool.connection_kwargs
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == (
                expected["host"],
                expected["port"],
                expected["db"],
            )


@pytest.mark.parametrize(
    "broker_url",
    [
        "rediss://127.0.0.1:6380/0?ssl_cert_reqs=required",
        "redis://127.0.0.1:6379/13;redis://127.0.0.1:6380/13",
    ],
    ids=["tls", "failover-list"],
)
def test_other_redis_urls_keep_kombus_own_transport(make_app, broker_url):
    app = make_app(broker_url)
    assert app.conf.broker_transport is None
    with app.connection_for_write() as conn:
        # Exactly kombu's class, not the subclass.
        assert type(conn.transport) is kombu_redis.Transport


def test_a_channel_reuses_one_client(connection):
    channel = connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
    with channel.conn_or_acquire() as again:
        assert again is first
        assert again.connection_pool is channel.pool
        assert again.ping() is True


def test_a_client_handed_in_is_used_as_it_is(connection):
    channel = connection.default_channel
    own = redis.Redis.from_url(TEST_REDIS_URL)
    with channel.conn_or_acquire(own) as client:
        assert client is own


def test_a_new_pool_gets_a_new_client(connection, redis_client):
    channel = connection.default_channel
    with channel.conn_or_acquire() as before:
        old_pool = before.connection_pool
    # What kombu does in a forked child: drop the pools, so the next use opens a new one.
    channel._after_fork()
    with channel.conn_or_acquire() as after:
        assert after is not before
        assert after.connection_pool is channel.pool
        assert after.connection_pool is not old_pool
        after.lpush("broker-test-key", "x")
    with channel.conn_or_acquire() as again:
        assert again is after
    assert redis_client.llen("broker-test-key") == 1


def test_threads_share_the_channels_client(connection, redis_client):
    channel = connection.default_channel
    with channel.conn_or_acquire() as first:
        first.ping()
    seen: list[int] = []
    start = threading.Barrier(8)

    def push() -> None:
        start.wait()
        for n in range(50):
            with channel.conn_or_acquire() as client:
                seen.append(id(client))
                client.lpush("broker-test-key", n)

    threads = [threading.Thread(target=push) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert redis_client.llen("broker-test-key") == 400
    assert len(seen) == 400 and set(seen) == {id(first)}


def test_a_published_message_is_consumed_and_acknowledged(connection, queue, redis_client):
    with connection.Producer() as producer:
        producer.publish(
            {"delivery": "whd-1", "try": 1},
            exchange=queue.exchange,
            routing_key="broker-test",
            serializer="json",
        )
    assert _consume(connection, queue, 1) == [{"delivery": "whd-1", "try": 1}]
    # The acknowledgement (through the reused client) removed the unacknowledged copy.
    assert redis_client.llen("broker-test") == 0
    assert redis_client.hlen("unacked") == 0
    assert redis_client.zcard("unacked_index") == 0


def test_a_batched_publish_delivers_every_message(connection, queue, redis_client):
    total = 1000
    with connection.Producer() as producer:
        with producer.batch(max_size=400):
            for n in range(total):
                producer.publish(
                    {"n": n}, exchange=queue.exchange, routing_key="broker-test", serializer="json"
                )
                if n == 99:
                    # Still gathering in the pipeline: nothing has reached Redis yet.
                    assert redis_client.llen("broker-test") == 0
        assert redis_client.llen("broker-test") == total
    bodies = _consume(connection, queue, total)
    assert sorted(body["n"] for body in bodies) == list(range(total))
    assert redis_client.llen("broker-test") == 0
    assert redis_client.hlen("unacked") == 0


def _publish_numbers(connection: Connection, queue: Queue, total: int) -> None:
    with connection.Producer() as producer, producer.batch(max_size=500):
        for n in range(total):
            producer.publish(
                {"n": n}, exchange=queue.exchange, routing_key="broker-test", serializer="json"
            )


def test_a_read_never_takes_more_than_the_prefetch_limit_leaves_room_for(
    connection, queue, redis_client
):
    _publish_numbers(connection, queue, 50)
    held: list = []
    with connection.Consumer(
        queue, callbacks=[lambda body, message: held.append(message)], accept=["json"]
    ) as consumer:
        consumer.qos(prefetch_count=5)
        with contextlib.suppress(TimeoutError, OSError):
            for _ in range(5):
                connection.drain_events(timeout=0.5)
        # Five held and unacknowledged: the rest wait in Redis for a worker with room.
        assert len(held) == 5
        assert redis_client.llen("broker-test") == 45
        for message in held[:3]:
            message.ack()
        with contextlib.suppress(TimeoutError, OSError):
            for _ in range(5):
                connection.drain_events(timeout=0.5)
        assert len(held) == 8
        assert redis_client.llen("broker-test") == 42
        for message in held[3:]:
            message.ack()


def _publish_tasks(connection: Connection, queue: Queue, count: int, countdown: float | None):
    """``count`` deliver tasks as the service publishes them (Celery's message format)."""
    amqp = celery_app.app.amqp
    with connection.Producer() as producer:
        for n in range(count):
            message = amqp.create_task_message(
                uuid(), "webhooks.deliver", [f"whd-{n}", 2], {}, countdown, ignore_result=True
            )
            amqp.send_task_message(
                producer,
                "webhooks.deliver",
                message,
                exchange=queue.exchange,
                routing_key="broker-test",
                declare=[],
            )


def test_countdown_tasks_are_held_with_their_repeated_strings_shared(
    connection, queue, redis_client
):
    _publish_tasks(connection, queue, 2, countdown=600)
    sent = [json.loads(raw) for raw in reversed(redis_client.lrange("broker-test", 0, -1))]
    first, second = _take(connection, queue, 2)
    # Exactly what was sent, field for field...
    for n, (message, raw) in enumerate(zip((first, second), sent, strict=True)):
        assert message.headers == raw["headers"] and message.properties == raw["properties"]
        assert message.decode()[0] == [f"whd-{n}", 2]
    # ...with one object for what every message repeats, and for the id Celery repeats.
    assert first.headers["task"] is second.headers["task"] == "webhooks.deliver"
    assert (
        first.properties["delivery_info"]["routing_key"]
        is (second.properties["delivery_info"]["routing_key"])
    )
    for one, other in zip(first.headers, second.headers, strict=True):
        assert one is other
    assert first.headers["root_id"] is first.headers["id"] is first.properties["correlation_id"]
    assert first.headers["id"] != second.headers["id"]


def test_tasks_to_run_now_are_delivered_as_they_came(connection, queue, redis_client):
    _publish_tasks(connection, queue, 2, countdown=None)
    first, second = _take(connection, queue, 2)
    assert first.headers["eta"] is None and first.decode()[0] == ["whd-0", 2]
    # Nothing shared: a task run at once is not held, so there is nothing to save.
    assert first.headers["task"] is not second.headers["task"]
