"""Kombu's Redis transport, with one reusable Redis client per channel.

Kombu builds a new ``redis.Redis`` object for every publish, every acknowledgement and
every update of its unacknowledged-message index (``Channel.conn_or_acquire``): on this
service's hot path that is several per delivery, and building one costs about as much
CPU as sending the command itself. A ``redis.Redis`` over the channel's connection pool
is safe to share between threads (every command borrows a pooled connection), so one
per channel serves them all.

A countdown task, which the worker holds in memory until it is due, is kept with the
strings every message repeats shared between them (``compact_if_held``), through the
channel's ``Message`` class.

The channel builds on ``webhooks_worker.compat``'s, which reads several waiting
tasks per round trip on the kombu versions it was checked against (kombu's own channel on
any other).

Used for plain ``redis://`` brokers (``webhooks_worker.celery_app``); other URLs keep
kombu's transport as it is. Here only kombu's public extension points are used (a Channel
subclass overriding ``conn_or_acquire`` and ``Message``, a Transport naming it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from .compat import channel_base

TRANSPORT = "webhooks_worker.broker:Transport"


def transport_options(*, socket_timeout: float) -> dict[str, Any]:
    """Kombu's Redis transport options for the service's broker (Redis only)."""
    return {
        # No copy in Redis of the tasks a worker holds. Kombu's emulated acknowledgements
        # cost two extra Redis round trips per task (add the task to an unacknowledged
        # set, remove it at the ack) and would hand a dead worker's tasks back only after
        # a visibility timeout longer than the longest held countdown (half an hour). The
        # delivery rows are the truth instead: a try a killed worker held is overdue in the
        # database, and beat's sweep enqueues it again within 60 s of its due time
        # (shared.services.deliveries.sweep_due).
        "ack_emulation": False,
        # One list per queue: kombu's default keeps four per queue for message priorities,
        # which the service never sets, and a worker's every fetch names each of them
        # (a read over every key of every lane).
        "priority_steps": [0],
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
    }


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
    (kept whole by kombu) and Celery's request; about half of that is the message's
    dozens of small strings and dicts, most of them the same in every message, and a
    retry storm holds thousands of tasks. Tasks to run at once are left as they are
    (nothing to save).
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


class HeldMessage(virtual.Message):
    """Kombu's message, built from a payload whose repeated strings are shared when held."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        super().__init__(compact_if_held(payload), channel=channel, **kwargs)


class Channel(channel_base()):
    """A kombu Redis channel that reuses one client for its synchronous commands."""

    Message = HeldMessage
    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        # A new pool (kombu replaces it after a fork or a reconnect) gets a new client.
        if reused is None or reused.connection_pool is not self.pool:
            options: dict[str, Any] = {"connection_pool": self.pool}
            # As kombu builds its clients: a pool made with a credential provider keeps it.
            provider = self.pool.connection_kwargs.get("credential_provider")
            if provider is not None:
                options["credential_provider"] = provider
            reused = self._reused_client = self.Client(**options)
        yield reused


class Transport(kombu_redis.Transport):
    """Kombu's Redis transport with the channel above."""

    Channel = Channel
