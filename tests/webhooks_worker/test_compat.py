"""webhooks_worker.compat: kombu's Redis read, several tasks per round trip.

The first two tests are the alarm for a kombu upgrade: they fail, naming the module, when
the installed kombu is not one it was checked against or its private methods changed
shape. The rest run kombu's own Connection and Consumer on the test Redis through the
service's transport (``webhooks_worker.broker``), one ``drain_events`` being one read.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import kombu
import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis

from tests.conftest import TEST_REDIS_URL
from webhooks_worker import broker, compat

UPGRADE_HINT = (
    "webhooks_worker/compat.py overrides kombu's private Channel._brpop_start and "
    "_brpop_read: read them in the new kombu, adjust the module, then add the version to "
    "CHECKED_KOMBU and move the bound in pyproject.toml"
)


def test_the_installed_kombu_is_one_the_module_was_checked_against():
    assert compat.inactive_reason() is None, f"kombu {kombu.__version__}: {UPGRADE_HINT}"
    assert broker.Channel.__mro__[1] is compat.BatchedReadChannel


def test_kombus_private_names_still_have_the_shape_the_module_uses(connection):
    overridden = {
        name: list(inspect.signature(getattr(kombu_redis.Channel, name)).parameters)
        for name in ("_brpop_start", "_brpop_read")
    }
    assert overridden == {
        "_brpop_start": ["self", "timeout"],
        "_brpop_read": ["self", "options"],
    }, UPGRADE_HINT
    channel = connection.default_channel
    for name in ("_q_for_pri", "_flush_brpop_reauth", "_queue_cycle", "_in_poll"):
        assert hasattr(channel, name), f"{name}: {UPGRADE_HINT}"
    assert callable(getattr(connection.transport, "_deliver", None)), UPGRADE_HINT


def test_another_kombu_gets_kombus_own_channel_and_a_reason():
    assert compat.channel_base("5.7.3") is compat.BatchedReadChannel
    assert compat.channel_base("5.8.0") is kombu_redis.Channel
    assert compat.channel_base("6.0.1") is kombu_redis.Channel
    reason = compat.inactive_reason("5.8.0")
    assert "kombu 5.8.0" in reason and "compat.py" in reason


def _connection(**transport_options) -> Connection:
    return Connection(
        TEST_REDIS_URL, transport=broker.TRANSPORT, transport_options=transport_options
    )


@pytest.fixture
def connection() -> Iterator[Connection]:
    conn = _connection()
    yield conn
    conn.release()


def _queue(connection: Connection) -> Queue:
    declared = Queue("compat-test", Exchange("compat-test", type="direct"), "compat-test")
    declared(connection.default_channel).declare()
    return declared


def _publish(connection: Connection, queue: Queue, numbers: range) -> None:
    with connection.Producer() as producer, producer.batch(max_size=500):
        for n in numbers:
            producer.publish(
                {"n": n}, exchange=queue.exchange, routing_key="compat-test", serializer="json"
            )


def _reads(connection: Connection, queue: Queue, total: int, prefetch: int | None) -> list[list]:
    """Consume ``total`` messages; what each read (one ``drain_events``) handed over."""
    reads: list[list] = []
    current: list = []

    def take(body, message) -> None:
        current.append(body["n"])
        message.ack()

    with connection.Consumer(queue, callbacks=[take], accept=["json"]) as consumer:
        if prefetch is not None:
            consumer.qos(prefetch_count=prefetch)
        while sum(len(read) for read in reads) < total:
            connection.drain_events(timeout=5)
            reads.append(list(current))
            current.clear()
    return reads


@pytest.mark.parametrize(
    ("waiting", "prefetch", "sizes"),
    [
        # Sixteen per read at most, each task once, in the order they were queued.
        (40, 100, [16, 16, 8]),
        # Room for five (acknowledged as they come): never more than five per read.
        (12, 5, [5, 5, 2]),
    ],
    ids=["sixteen-at-most", "within-the-prefetch-room"],
)
def test_waiting_tasks_are_taken_several_per_read_oldest_first(
    connection, redis_client, waiting, prefetch, sizes
):
    queue = _queue(connection)
    _publish(connection, queue, range(waiting))
    reads = _reads(connection, queue, waiting, prefetch=prefetch)
    assert [len(read) for read in reads] == sizes
    assert [n for read in reads for n in read] == list(range(waiting))
    assert redis_client.llen("compat-test") == 0


def test_a_prefetch_limit_of_one_reads_one_task_at_a_time(connection):
    queue = _queue(connection)
    _publish(connection, queue, range(3))
    assert _reads(connection, queue, 3, prefetch=1) == [[0], [1], [2]]


def test_keys_with_a_global_prefix_are_read_one_at_a_time(redis_client):
    conn = _connection(global_keyprefix="compat-prefix:")
    try:
        queue = _queue(conn)
        _publish(conn, queue, range(3))
        assert redis_client.llen("compat-prefix:compat-test") == 3
        assert _reads(conn, queue, 3, prefetch=100) == [[0], [1], [2]]
        assert redis_client.llen("compat-prefix:compat-test") == 0
    finally:
        conn.release()


def test_a_server_without_blmpop_is_read_one_task_at_a_time(connection):
    queue = _queue(connection)
    _publish(connection, queue, range(3))
    channel = connection.default_channel
    assert channel.server_has_blmpop() is True  # the test Redis is 7 or later
    # What a channel remembers after asking a Redis 6 server (not available here).
    channel._has_blmpop = False
    assert _reads(connection, queue, 3, prefetch=100) == [[0], [1], [2]]
