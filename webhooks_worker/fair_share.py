"""What a worker does so that organizations share it (docs/api.md §11.7).

The broker side is in ``webhooks_worker.routing`` (an organization's tasks go to its lane,
and every worker takes from the lanes in turn); the thread pool
(``webhooks_worker.thread_pool``) lets the lanes of the tasks a worker holds take turns.
This module gives the pool what it needs from Celery for that: the queue a task came
from, and a place in the consumer's prefetch window for countdown tasks that fell due.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import bootsteps


def queue_of(args: Any) -> str | None:
    """The broker queue a task the worker hands to its pool came from (None if unknown).

    Celery's worker applies a task as ``trace(type, id, request, body, content_type,
    content_encoding)`` (``celery.worker.request.Request.execute_using_pool``); the request
    holds the message's ``delivery_info``, whose routing key is the queue's name for the
    queues of ``webhooks_worker.routing``. Anything else (another caller of the pool, a
    later Celery that applies differently) shares one lane: the executor's plain order.
    """
    try:
        info = args[2].get("delivery_info") or {}
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    key = info.get("routing_key") if isinstance(info, dict) else None
    return key if isinstance(key, str) else None


def had_countdown(args: Any) -> bool:
    """Whether a task handed to the pool was a countdown task (its message has an ETA)."""
    try:
        return bool(args[2].get("eta"))
    except (AttributeError, IndexError, KeyError, TypeError):
        return False


class PrefetchWindow:
    """The consumer's prefetch window, as the pool widens it for due countdown tasks.

    A worker fetches a task only while its unacknowledged tasks are fewer than the window
    (Celery's ``consumer.qos``: the concurrency, plus one for each countdown task it holds
    until due). When a countdown task falls due, Celery narrows the window by one and hands
    the task to the pool, still unacknowledged. With thousands of one organization's
    retries falling due at once, the worker would then fetch nothing at all, not even
    another organization's new task, until it had run them all. The pool keeps a due
    countdown task's place in the window until the task starts (``hold`` as it is handed
    over, ``release_then`` as it starts), so the worker goes on fetching, and the task it
    fetches waits in its own lane, not behind the retries.
    """

    def __init__(self, qos: Any, hub: Any) -> None:
        self.qos = qos
        self.hub = hub

    def hold(self) -> None:
        """Keep one more place (in the consumer's thread, which hands tasks to the pool)."""
        self.qos.increment_eventually()

    def release_then(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Give the place back, then run ``fn(*args)`` (on a pool thread).

        Celery changes the window in the consumer's thread only (its event loop takes the
        window's lock away), so the release is handed to that thread's loop.
        """
        if self.hub is not None:
            self.hub.call_soon(self.qos.decrement_eventually)
        else:
            self.qos.decrement_eventually()
        return fn(*args)


class PoolSeesPrefetchWindow(bootsteps.StartStopStep):
    """Hands the consumer's prefetch window to the thread pool.

    Runs after Celery's task consumer step, which makes the window anew on every
    (re)connection. Added to the worker by ``webhooks_worker.celery_app``.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        if hasattr(c.pool, "prefetch_window"):
            c.pool.prefetch_window = PrefetchWindow(c.qos, c.hub)
