"""How the worker and the api publish tasks: Celery's message, on the queue Celery routes to.

Published through a producer on a Redis db of its own, so that the test session's worker
(which consumes the test db's queues) cannot take the messages before they are read back.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from kombu import Connection

from shared import lanes
from tests.conftest import TEST_REDIS_URL
from tests.support.waiting import wait_until
from webhooks_worker import broker, celery_app
from webhooks_worker.publisher import Pending, Publisher
from webhooks_worker.routing import FIRST_QUEUE, RETRY_QUEUE, TASK_QUEUES, queue_for

_BASE, _, _DB = TEST_REDIS_URL.rpartition("/")
OTHER_REDIS_URL = f"{_BASE}/{int(_DB) % 15 + 1}"


@pytest.fixture
def producer() -> Iterator:
    client = redis.Redis.from_url(OTHER_REDIS_URL)
    client.flushdb()
    with Connection(OTHER_REDIS_URL, transport=broker.TRANSPORT) as conn:
        yield celery_app.app.amqp.Producer(conn, auto_declare=False)
    client.flushdb()


def _queued(queue: str) -> list[dict]:
    """The messages waiting in ``queue``, oldest first (kombu pushes left, pops right)."""
    client = redis.Redis.from_url(OTHER_REDIS_URL)
    return [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]


def _args(message: dict) -> list:
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {}
    return args


def test_first_tries_and_retries_go_to_their_own_queues(producer):
    celery_app._publish(
        producer,
        "webhooks.deliver",
        [
            (("whd-a", 1), None, None, None),
            (("whd-b", 2), None, None, None),
            (("whd-c", 1), None, None, None),
        ],
        celery_app.NO_LINEAGE,
    )
    assert [_args(m) for m in _queued(FIRST_QUEUE)] == [["whd-a", 1], ["whd-c", 1]]
    assert [_args(m) for m in _queued(RETRY_QUEUE)] == [["whd-b", 2]]


def _orgs_in_different_lanes() -> tuple[str, str]:
    first = "org-aaaaaaaaaaaaaaa"
    other = next(
        f"org-{n:015d}"
        for n in range(1000)
        if lanes.lane_of(f"org-{n:015d}") != lanes.lane_of(first)
    )
    return first, other


def test_an_organizations_tries_go_to_its_own_lanes(producer):
    a, b = _orgs_in_different_lanes()
    celery_app._publish(
        producer,
        "webhooks.deliver",
        [
            (("whd-a1", 1), None, None, a),
            (("whd-b1", 1), None, None, b),
            (("whd-a2", 2), None, None, a),
            (("whd-a3", 1), None, None, a),
        ],
        celery_app.NO_LINEAGE,
    )
    assert [_args(m) for m in _queued(lanes.queue_for(a, retry=False))] == [
        ["whd-a1", 1],
        ["whd-a3", 1],
    ]
    assert [_args(m) for m in _queued(lanes.queue_for(a, retry=True))] == [["whd-a2", 2]]
    assert [_args(m) for m in _queued(lanes.queue_for(b, retry=False))] == [["whd-b1", 1]]
    assert _queued(FIRST_QUEUE) == [] and _queued(RETRY_QUEUE) == []
    # The lane is the one every process computes, whatever its hash seed.
    assert lanes.queue_for(a, retry=False) == f"webhooks.{lanes.lane_of(a)}"
    assert lanes.lane_of(a) == lanes.lane_of(str(a))


def test_a_task_without_an_organization_stays_in_the_lane_of_the_task_that_sends_it():
    # A retry enqueued by a try that came from lane 3 (it names no organization).
    assert queue_for("webhooks.deliver", ["whd-a", 2], None, 3) == lanes.RETRY_LANES[3]
    assert queue_for("webhooks.deliver", ["whd-a", 1], None, 3) == lanes.FIRST_LANES[3]
    # A named organization wins over the sender's lane.
    org = "org-bbbbbbbbbbbbbbb"
    assert queue_for("webhooks.deliver", ["whd-a", 1], org, 3) == lanes.queue_for(org, retry=False)
    # Chores never go to a lane.
    assert queue_for("webhooks.purge", [], org, 3) is None


def test_every_worker_consumes_every_lane():
    names = {q.name for q in TASK_QUEUES}
    assert set(lanes.FIRST_LANES) | set(lanes.RETRY_LANES) | {FIRST_QUEUE, RETRY_QUEUE} == names
    assert len(lanes.FIRST_LANES) == len(lanes.RETRY_LANES) == lanes.LANES > 1


def test_beats_sweep_goes_with_the_retries_it_hands_over(producer):
    # As beat sends it: behind a burst of first attempts it would hand retries over late.
    celery_app.app.send_task("webhooks.sweep", producer=producer)
    celery_app.app.send_task("webhooks.purge", producer=producer)
    assert [m["headers"]["task"] for m in _queued(RETRY_QUEUE)] == ["webhooks.sweep"]
    assert [m["headers"]["task"] for m in _queued(FIRST_QUEUE)] == ["webhooks.purge"]


def test_a_published_task_is_the_message_celerys_send_task_makes(producer):
    celery_app.app.send_task("webhooks.deliver", args=["whd-ref", 1], producer=producer)
    celery_app._publish(
        producer, "webhooks.deliver", [(("whd-a", 1), None, None, None)], celery_app.NO_LINEAGE
    )
    reference, ours = _queued(FIRST_QUEUE)
    assert set(ours) == set(reference)
    assert set(ours["headers"]) == set(reference["headers"])
    assert set(ours["properties"]) == set(reference["properties"])
    assert ours["headers"]["task"] == "webhooks.deliver"
    assert ours["headers"]["argsrepr"] == "['whd-a', 1]"
    assert ours["headers"]["id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["id"] != reference["headers"]["id"]
    assert ours["properties"]["delivery_info"] == reference["properties"]["delivery_info"]


def test_a_countdown_becomes_the_tasks_eta(producer):
    before = datetime.now(UTC)
    celery_app._publish(
        producer, "webhooks.deliver", [(("whd-a", 2), 30.0, None, None)], celery_app.NO_LINEAGE
    )
    (message,) = _queued(RETRY_QUEUE)
    eta = datetime.fromisoformat(message["headers"]["eta"])
    assert before + timedelta(seconds=30) <= eta <= datetime.now(UTC) + timedelta(seconds=30)


def test_every_task_of_a_large_fan_out_is_published_once(producer):
    calls = [((f"whd-{n}", 1), None, None, None) for n in range(1200)]  # more than one batch
    with producer.batch(max_size=celery_app.PUBLISH_BATCH):
        celery_app._publish(producer, "webhooks.deliver", calls, celery_app.NO_LINEAGE)
    queued = _queued(FIRST_QUEUE)
    assert [_args(m)[0] for m in queued] == [f"whd-{n}" for n in range(1200)]
    assert len({m["headers"]["id"] for m in queued}) == 1200


def _pending(args, organization=None, lineage=celery_app.NO_LINEAGE) -> Pending:
    return Pending("webhooks.deliver", (args, None, None, organization), lineage, lambda f: f())


def test_tasks_handed_to_the_publishing_thread_from_many_threads_are_each_published_once(
    producer,
):
    a, b = _orgs_in_different_lanes()
    publisher = Publisher(functools.partial(celery_app.publish_pending, producer=producer))
    # From the lane of the task that made it (a retry naming no organization) or named.
    in_lane_3 = celery_app.Lineage("root", "parent", 3)

    def hand_over(worker: int) -> None:
        for n in range(100):
            org = (a, b)[n % 2]
            publisher.submit(_pending((f"whd-{worker}-{n}", 1), org))
        publisher.submit(_pending((f"whd-{worker}-retry", 2), lineage=in_lane_3))

    threads = [threading.Thread(target=hand_over, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    publisher.stop()  # what is still waiting is published before it returns

    first = {
        org: [_args(m)[0] for m in _queued(lanes.queue_for(org, retry=False))] for org in (a, b)
    }
    for worker in range(8):
        assert [d for d in first[a] if d.startswith(f"whd-{worker}-")] == [
            f"whd-{worker}-{n}" for n in range(0, 100, 2)
        ]
        assert [d for d in first[b] if d.startswith(f"whd-{worker}-")] == [
            f"whd-{worker}-{n}" for n in range(1, 100, 2)
        ]
    retries = _queued(lanes.RETRY_LANES[3])
    assert sorted(_args(m)[0] for m in retries) == sorted(f"whd-{w}-retry" for w in range(8))
    assert {(m["headers"]["root_id"], m["headers"]["parent_id"]) for m in retries} == {
        ("root", "parent")
    }


def test_a_batch_the_broker_refuses_is_logged_and_the_thread_goes_on(producer, caplog):
    with Connection("redis://127.0.0.1:1/0", transport=broker.TRANSPORT) as refused:
        down = celery_app.app.amqp.Producer(refused, auto_declare=False)
        calls: list[str] = []

        def publish(batch: list[Pending]) -> None:
            calls.append(_pending_id(batch[0]))
            target = down if len(calls) == 1 else producer
            celery_app.publish_pending(batch, producer=target)

        publisher = Publisher(publish)
        with caplog.at_level(logging.WARNING, logger="webhooks.worker"):
            publisher.submit(_pending(("whd-lost", 1)))
            wait_until(lambda: "publishing 1 tasks failed" in caplog.text, timeout=30)
            publisher.submit(_pending(("whd-next", 1)))
            publisher.stop()
    assert calls == ["whd-lost", "whd-next"]
    assert [_args(m) for m in _queued(FIRST_QUEUE)] == [["whd-next", 1]]


def _pending_id(pending: Pending) -> str:
    return pending.call[0][0]
