"""A process's fire-and-forget Redis writes, gathered and sent together every few ms.

Every recorded attempt adds metrics counters (HINCRBY, shared.metrics). Sent one by one
from the delivery's own thread they were a Redis round trip per attempt on the hot path.
Here the delivery thread only appends to a buffer; one background thread per process
sends whatever gathered in one pipeline every FLUSH_EVERY seconds (``publish`` gathers
pub/sub messages the same way; live events have their own thread, shared.notify).

What that costs: a counter or a message reaches Redis up to FLUSH_EVERY later, and a
process killed outright (SIGKILL, OOM) loses at most that much of them. Both are a
courtesy on top of the database, which stays the truth (metrics gauges, the dashboard's
lists). A normal exit flushes what is left.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter

log = logging.getLogger(__name__)

# Seconds between flushes: well under what a person watching the dashboard notices.
FLUSH_EVERY = 0.05
# Live events gathered between two flushes (or while one waits on Redis, up to
# SOCKET_TIMEOUT); the oldest are dropped beyond this. A failed flush drops its batch.
MAX_MESSAGES = 10_000
# After a failed flush, say so again at most this often.
WARN_EVERY = 30.0
# How long one flush may wait on Redis.
SOCKET_TIMEOUT = 2.0


class Courier:
    """Buffers hash increments and pub/sub messages for one Redis, flushed in the background."""

    def __init__(self, url: str, *, flush_every: float = FLUSH_EVERY) -> None:
        import redis

        self.url = url
        self.flush_every = flush_every
        self._client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        self._lock = threading.Lock()
        self._increments: dict[str, Counter] = {}
        self._float_fields: set[tuple[str, str]] = set()
        self._messages: list[tuple[str, str | bytes]] = []
        self._thread: threading.Thread | None = None
        # One flush at a time, so that batches (and live events) leave in order.
        self._flushing = threading.Lock()
        self._warned_at = float("-inf")

    def increment(
        self, key: str, counts: Counter, *, float_fields: frozenset = frozenset()
    ) -> None:
        """Add ``counts`` to the fields of hash ``key`` (HINCRBY, HINCRBYFLOAT for floats)."""
        if not counts:
            return
        with self._lock:
            pending = self._increments.setdefault(key, Counter())
            pending.update(counts)
            self._float_fields.update((key, f) for f in counts if f in float_fields)
            self._start()

    def publish(self, channel: str, payload: str | bytes) -> None:
        """PUBLISH ``payload`` on ``channel``."""
        with self._lock:
            self._messages.append((channel, payload))
            if len(self._messages) > MAX_MESSAGES:
                del self._messages[: len(self._messages) - MAX_MESSAGES]
            self._start()

    def flush(self) -> bool:
        """Send what gathered now; False (logged, dropped) if Redis refused it."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            increments, self._increments = self._increments, {}
            float_fields, self._float_fields = self._float_fields, set()
            messages, self._messages = self._messages, []
        if not increments and not messages:
            return True
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, counts in increments.items():
                for field, value in counts.items():
                    # A field holds integers or floats for good: HINCRBY fails on a float.
                    if (key, field) in float_fields:
                        pipe.hincrbyfloat(key, field, float(value))
                    else:
                        pipe.hincrby(key, field, int(value))
            for channel, payload in messages:
                pipe.publish(channel, payload)
            pipe.execute()
            return True
        except Exception as exc:  # noqa: BLE001 - counters and live events never break work
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "%d counters and %d live events not all sent to Redis: %s",
                    sum(len(c) for c in increments.values()),
                    len(messages),
                    exc.__class__.__name__,
                )
            return False

    def _start(self) -> None:
        # Called with the lock held.
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="redis-courier", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.flush_every)
            self.flush()


_couriers: dict[str, Courier] = {}
_couriers_lock = threading.Lock()


def get_courier(url: str) -> Courier:
    """The process's courier for the Redis at ``url``."""
    with _couriers_lock:
        courier = _couriers.get(url)
        if courier is None:
            courier = _couriers[url] = Courier(url)
        return courier


def flush_all() -> None:
    """Send everything gathered in this process now (at exit, and in tests)."""
    with _couriers_lock:
        couriers = list(_couriers.values())
    for courier in couriers:
        courier.flush()


def _forget_after_fork() -> None:
    # A forked child has no flushing thread and must not share the parent's sockets.
    global _couriers_lock
    _couriers.clear()
    _couriers_lock = threading.Lock()


atexit.register(flush_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
