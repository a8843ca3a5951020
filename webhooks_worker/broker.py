"""Kombu's Redis transport, with one reusable Redis client per channel.

Kombu builds a new ``redis.Redis`` object for every publish, every acknowledgement and
every update of its unacknowledged-message index (``Channel.conn_or_acquire``). On this
service's hot path that is three per delivery, and building one costs about as much CPU
as sending the command itself (~90 µs measured on the benchmark machine, against
~170 µs for an LPUSH round trip on loopback). A ``redis.Redis`` over the channel's
connection pool is safe to share between threads (every command borrows a pooled
connection), so one per channel serves them all. Everything else is kombu's own.

It also takes several waiting tasks per round trip when the worker has room for them
(``BLMPOP ... COUNT n`` instead of ``BRPOP``, Redis 7 and later): kombu sends one BRPOP,
waits for its reply and registers the next for every single task, about a tenth of a
worker's CPU per delivery in benchmark scenario 1. Each task taken is delivered to the
consumer exactly as a BRPOP's would be, never more than the prefetch limit leaves room
for, so a worker holds no more than before.

A countdown task, which the worker holds in memory until it is due, is kept with the
strings every message repeats shared between them (``compact_if_held``).

Used for plain ``redis://`` brokers (``webhooks_worker.celery_app``); other URLs keep
kombu's transport as it is. It overrides two of kombu's private methods, so
pyproject.toml keeps kombu within the minor version it was written against.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

TRANSPORT = "webhooks_worker.broker:Transport"

# The most tasks one BLMPOP takes: enough to amortize the round trip, few enough that a
# burst still spreads over every worker that asks.
MAX_BATCH = 16


class Channel(kombu_redis.Channel):
    """A kombu Redis channel that reuses one client for its synchronous commands."""

    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        # A new pool (kombu replaces it after a fork or a reconnect) gets a new client.
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()
        yield reused

    # None until the server's version is known; then whether it has BLMPOP (Redis 7+).
    _has_blmpop: bool | None = None
    # How many tasks the BLMPOP in flight asked for (None: a plain BRPOP is in flight).
    _batch_asked: int | None = None

    def _batch_size(self) -> int:
        """How many tasks the next read may take: 1 means a plain BRPOP."""
        if self.global_keyprefix:  # kombu's key prefixing knows BRPOP's layout only
            return 1
        room = self.qos.can_consume_max_estimate()
        if room is None:  # no prefetch limit
            room = MAX_BATCH
        if room <= 1:
            return 1
        if self._has_blmpop is None:
            self._has_blmpop = self._server_has_blmpop()
        return min(room, MAX_BATCH) if self._has_blmpop else 1

    def _server_has_blmpop(self) -> bool:
        # A managed Redis may refuse INFO or report an odd version: then BRPOP, as kombu.
        try:
            with self.conn_or_acquire() as client:
                version = str(client.info("server").get("redis_version", "0"))
            return int(version.split(".")[0]) >= 7
        except (redis.RedisError, ValueError):
            return False

    def _brpop_start(self, timeout: float | None = None) -> None:
        size = self._batch_size()
        if size <= 1:
            self._batch_asked = None
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # The same keys in the same order as kombu's BRPOP: priorities first, then queues.
        keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self._batch_asked = size
        self.client.connection.send_command(
            "BLMPOP", timeout or 0, len(keys), *keys, "RIGHT", "COUNT", size
        )

    def _brpop_read(self, **options: Any) -> bool:
        if self._batch_asked is None:
            return super()._brpop_read(**options)
        self._batch_asked = None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BLMPOP", **options)
            except self.connection_errors:
                # As kombu does: the next iteration reconnects.
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
            key, items = reply
            dest = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            for item in items:
                self.connection._deliver(loads(bytes_to_str(item)), dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()


# Strings that repeat from one task message to the next: every key, the task's name, the
# encodings, the routing key, the publishing process. Bounded, in case a producer sends
# something unexpected in a field that is normally shared.
_SHARED: dict[str, str] = {}
_SHARED_MAX = 4096
# Fields whose values differ in every message: not worth a lookup, and not to be kept.
_UNIQUE = frozenset(
    {"id", "root_id", "parent_id", "correlation_id", "delivery_tag", "eta", "expires"}
    | {"argsrepr", "body", "group"}
)


def _share(value: str) -> str:
    shared = _SHARED.get(value)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:
            return value
        shared = _SHARED[value] = value
    return shared


def _compacted(fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        key = _share(key)
        if isinstance(value, dict):
            value = _compacted(value)
        elif isinstance(value, str) and key not in _UNIQUE:
            value = _share(value)
        out[key] = value
    return out


def compact_if_held(payload: Any) -> Any:
    """``payload`` with its repeated strings shared, when it is a countdown task.

    A worker holds a countdown task in memory until it is due, as the decoded message
    (kept whole by kombu) and Celery's request: ~8.5 KB a task, half of it the ~57 strings
    and dicts of the message, most of them the same in every message. A retry storm holds
    thousands of them. Tasks to run at once are left as they are (nothing to save).
    """
    if not isinstance(payload, dict):
        return payload
    headers = payload.get("headers")
    if not isinstance(headers, dict) or not headers.get("eta"):
        return payload
    payload = _compacted(payload)
    headers = payload["headers"]
    task_id = headers.get("id")
    # Celery repeats the task id as the root id (a task without a parent) and the
    # correlation id: one string will do for all three.
    if task_id is not None:
        if headers.get("root_id") == task_id:
            headers["root_id"] = task_id
        properties = payload.get("properties")
        if isinstance(properties, dict) and properties.get("correlation_id") == task_id:
            properties["correlation_id"] = task_id
    return payload


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with the channel above; countdown tasks kept compact."""

    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        super()._deliver(compact_if_held(message), queue)
