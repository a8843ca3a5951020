"""Live events on their way out: the publishing thread, and the embedded broker's relay.

The relay runs on a real SQLite broker file (kombu's SQLAlchemy transport, as the
embedded mode uses); the publisher on the test Redis, read back by a real subscriber.
"""

from __future__ import annotations

import json
import time

import kombu
import pytest
import redis

from shared import notify
from shared.config import get_settings
from tests.conftest import TEST_REDIS_URL


@pytest.fixture
def relay(tmp_path) -> notify.QueueRelay:
    return notify.QueueRelay(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}", "live-test")


def _collect(relay: notify.QueueRelay) -> list[tuple]:
    got: list[tuple] = []
    relay.relay(lambda *event: got.append(event), wait=0.5)
    return got


def test_the_relay_hands_on_what_another_connection_put_on_the_queue(relay):
    relay.emit("webhook.delivered", {"deliveryId": "whd-1"}, room=["org:a:all", "user:u"])
    other = notify.QueueRelay(relay.broker_url, relay.channel)  # as the api process would
    assert _collect(other) == [
        ("webhook.delivered", {"deliveryId": "whd-1"}, ["org:a:all", "user:u"], "/")
    ]
    assert _collect(other) == []  # taken once


def test_the_relay_drops_events_older_than_a_dashboard_wants(relay):
    with kombu.Connection(relay.broker_url) as connection:
        queue = connection.SimpleQueue(relay.channel)
        old = time.time() - notify.STALE_AFTER_SECONDS - 1
        queue.put({"event": "endpoint.created", "data": {}, "rooms": ["r"], "sentAt": old})
        queue.close()
    relay.emit("endpoint.updated", {"n": 2}, room=["r"])
    assert [event[0] for event in _collect(relay)] == ["endpoint.updated"]


def test_the_embedded_broker_gets_a_relay_and_redis_a_client_manager():
    settings = get_settings()
    assert notify.make_relay(settings) is None  # the tests run on Redis
    manager = notify.make_client_manager(settings, write_only=True)
    assert type(manager).__module__.startswith("socketio")


def test_published_events_reach_redis_subscribers_once_flushed():
    subscriber = redis.Redis.from_url(TEST_REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(notify.channel_name(get_settings()))
    try:
        for n in range(3):
            assert notify.publish("endpoint.updated", {"n": n}, rooms=["org:x:all"])
        assert notify.flush()
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=0.5)
            if message:
                got.append(json.loads(message["data"]))
        # python-socketio's own message, as every api process's manager reads it.
        assert [(m["event"], m["data"], m["room"]) for m in got] == [
            ("endpoint.updated", [{"n": n}], ["org:x:all"]) for n in range(3)
        ]
    finally:
        subscriber.close()


def _receive(subscriber, count: int) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.5)
        if message:
            got.append(json.loads(message["data"]))
    return got


def test_a_write_only_manager_publishes_through_the_courier_in_one_pipeline():
    settings = get_settings()
    subscriber = redis.Redis.from_url(TEST_REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(notify.channel_name(settings))
    try:
        manager = notify.make_client_manager(settings, write_only=True)
        assert isinstance(manager.redis, notify.CourierRedis)
        manager.emit("endpoint.updated", {"n": 1}, namespace="/", room=["org:x:all"])
        assert _receive(subscriber, 1) != []  # the courier's own flush sends it
    finally:
        subscriber.close()


def test_a_manager_that_stops_using_the_courier_still_publishes_directly():
    # What a python-socketio that no longer publishes through ``redis.publish`` would do:
    # the stand-in lacks what it calls, and the manager reconnects with its own client.
    settings = get_settings()
    subscriber = redis.Redis.from_url(TEST_REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(notify.channel_name(settings))
    try:
        manager = notify.make_client_manager(settings, write_only=True)
        manager.redis = object()
        manager.emit("endpoint.updated", {"n": 2}, namespace="/", room=["org:x:all"])
        got = _receive(subscriber, 1)
        assert [(m["event"], m["data"]) for m in got] == [("endpoint.updated", [{"n": 2}])]
    finally:
        subscriber.close()
