"""The project's one use of another library's private names: kombu's Redis read, batched.

Kombu's Redis transport takes one task per round trip: it sends BRPOP, waits for the
reply, delivers the one task in it and sends the next BRPOP. A worker's consumer is a
single thread, and under load each of those steps waits for the interpreter lock that the
delivery threads hold: that handoff, not Redis, sets how many tasks a worker takes per
second, and the delivery threads sit idle waiting for work while the CPU has room
(docs/decisions.md, "Why a worker reads several tasks per round trip").

``BatchedReadChannel`` sends ``BLMPOP <timeout> <n> <keys...> RIGHT COUNT <k>`` (Redis 7
and later) where kombu sends BRPOP: the same keys in the same order, blocking the same way,
but taking up to ``k`` tasks of the first queue that has any, ``k`` being what the prefetch
limit leaves room for (at most ``MAX_BATCH``). Each task is handed to kombu exactly as a
BRPOP's would be, so a worker never holds more than before. Kombu offers no public way to
do this: it needs its private ``Channel._brpop_start`` and ``Channel._brpop_read`` and the
state they share.

Guarded three ways, since private names change without notice:

- It is used only with the kombu versions in ``CHECKED_KOMBU``, which the code below was
  read against; with any other, ``channel_base()`` is kombu's own channel, unchanged, and
  the worker says so at start (``inactive_reason``).
- pyproject.toml keeps kombu below the next minor version.
- tests/webhooks_worker/test_compat.py fails on an installed kombu outside
  ``CHECKED_KOMBU``, or one whose methods no longer have the shape used here, naming this
  module.

At run time a channel reads with kombu's BRPOP when the server is older than Redis 7 (or
does not say its version), when keys carry a global prefix (kombu's prefixing knows BRPOP's
layout only), and when the prefetch limit leaves room for one task.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic
from typing import Any

import kombu
import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

# kombu releases (major.minor) whose Redis channel this module was checked against.
CHECKED_KOMBU = ("5.7",)
# The most tasks one read takes: enough that the consumer's handoffs stop mattering, few
# enough that a burst still spreads over every worker that asks.
MAX_BATCH = 16
# Redis added BLMPOP in 7.0.
BLMPOP_SINCE = 7


def _checked(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in CHECKED_KOMBU


def inactive_reason(version: str = kombu.__version__) -> str | None:
    """Why the batched read is off for this kombu, or None when it is in use."""
    if _checked(version):
        return None
    return (
        f"kombu {version} is not among the versions webhooks_worker/compat.py was "
        f"checked against ({', '.join(CHECKED_KOMBU)}): workers take one task per Redis "
        "round trip (kombu's BRPOP), which is correct but slower"
    )


class BatchedReadChannel(kombu_redis.Channel):
    """Kombu's Redis channel, reading up to ``MAX_BATCH`` waiting tasks per round trip."""

    # None until the server's version is known; then whether it has BLMPOP.
    _has_blmpop: bool | None = None
    # How many tasks the read in flight asked for; None while a plain BRPOP is in flight.
    _batch_asked: int | None = None

    def batch_size(self) -> int:
        """How many tasks the next read may take; 1 means kombu's BRPOP."""
        if self.global_keyprefix:
            return 1
        room = self.qos.can_consume_max_estimate()
        if room is None:  # no prefetch limit
            room = MAX_BATCH
        if room <= 1:
            return 1
        if self._has_blmpop is None:
            self._has_blmpop = self.server_has_blmpop()
        return min(room, MAX_BATCH) if self._has_blmpop else 1

    def server_has_blmpop(self) -> bool:
        """Whether the broker is Redis 7 or later; False when it will not say."""
        try:
            with self.conn_or_acquire() as client:
                version = str(client.info("server").get("redis_version", "0"))
            return int(version.split(".")[0]) >= BLMPOP_SINCE
        except (redis.RedisError, ValueError):
            return False

    def _brpop_start(self, timeout: float | None = None) -> None:
        size = self.batch_size()
        if size <= 1:
            self._batch_asked = None
            super()._brpop_start(timeout)
            return
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        # kombu's BRPOP keys, in its order: each priority of each queue.
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
                # As kombu does: drop the connection, the next poll reconnects.
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
            key, items = reply
            queue = bytes_to_str(key).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            for item in items:
                self.connection._deliver(loads(bytes_to_str(item)), queue)
            return True
        finally:
            self._in_poll = None
            # kombu 5.7 sends a pending re-authentication once a read is over.
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()


def channel_base(version: str = kombu.__version__) -> type:
    """The channel class to build on: the batched one on a checked kombu, else kombu's."""
    return BatchedReadChannel if _checked(version) else kombu_redis.Channel
