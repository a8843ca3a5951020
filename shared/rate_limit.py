"""Endpoint rate limits (docs/api.md §11.6): when an endpoint's next attempt may be made.

Each endpoint with a limit of ``rate`` attempts per second has a schedule of the times it
gave its last ``rate`` attempts. An attempt asking for a turn is given the earliest time
that keeps every one-second window at ``rate`` or fewer: now, when the endpoint has been
quiet (so a burst of up to one second's worth goes at once), else one second after the
``rate``-th last turn. Once turns are being handed out ahead of time (a backlog), each
comes at least ``1 / rate`` after the one before, so a backlog drains evenly instead of
in one-second bursts. A turn is a reservation: the caller waits for it (without holding
a thread) and then goes without asking again, so a backlog of N asks N times in all.

Shared by every worker on every machine through Redis: one Lua script reads and extends
the schedule atomically, on Redis's clock (workers' clocks may differ). On the embedded
default (no Redis) the schedule lives in the process, which is the only delivery
process there. If Redis does not answer, a try is given a turn a little later (logged)
rather than paced by the process alone: several processes each pacing on their own
would together exceed the limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import lru_cache
from typing import Any

from .config import get_settings

log = logging.getLogger(__name__)

# Keys are ``webhooks:pace:<endpoint id>``: a list of turn times (unix seconds, ascending).
KEY_PREFIX = "webhooks:pace:"
# How long one Redis call may take. Generous: a worker thread starved of the interpreter
# lock on a loaded machine reads its answer late.
SOCKET_TIMEOUT = 5.0
# A try whose turn Redis could not give asks again this much later.
RETRY_REDIS_AFTER = 1.0


class NoTurn(Exception):
    """The schedule could not be read: the try waits ``RETRY_REDIS_AFTER`` and asks again."""


# KEYS[1]: the endpoint's schedule; ARGV[1]: the rate. Returns the wait in seconds (a
# string: Lua numbers become integers in replies). TIME is Redis's own clock.
RESERVE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[1])
local turn = now
if len > 0 then
  local last = tonumber(redis.call('LINDEX', KEYS[1], -1))
  local base = now
  if len >= rate then
    base = math.max(now, tonumber(redis.call('LINDEX', KEYS[1], len - rate)) + 1)
  end
  if base > now or last > now then
    turn = math.max(base, last + 1 / rate)
  end
end
redis.call('RPUSH', KEYS[1], string.format('%.6f', turn))
if len + 1 > rate then
  redis.call('LTRIM', KEYS[1], len + 1 - rate, -1)
end
redis.call('EXPIRE', KEYS[1], math.ceil(turn - now) + 2)
return string.format('%.6f', turn - now)
"""


def next_turn(schedule: deque[float], rate: int, now: float) -> float:
    """The turn given at ``now`` with this schedule (the script's rule, for one process)."""
    turn = now
    if schedule:
        last = schedule[-1]
        base = max(now, schedule[-rate] + 1) if len(schedule) >= rate else now
        if base > now or last > now:
            turn = max(base, last + 1 / rate)
    schedule.append(turn)
    while len(schedule) > rate:
        schedule.popleft()
    return turn


class LocalLimiter:
    """The schedules of this process's endpoints (the embedded default, or Redis away)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schedules: dict[str, deque[float]] = {}

    def reserve(self, endpoint_id: str, rate: int) -> float:
        """Seconds until the endpoint's next turn, which is taken."""
        with self.lock:
            now = time.time()
            schedule = self.schedules.setdefault(endpoint_id, deque())
            return next_turn(schedule, rate, now) - now


class RedisLimiter:
    """The schedules in Redis, shared by every process of the deployment."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        self.script = self.client.register_script(RESERVE_SCRIPT)

    def reserve(self, endpoint_id: str, rate: int) -> float:
        """Seconds until the endpoint's next turn, which is taken."""
        try:
            return float(self.script(keys=[KEY_PREFIX + endpoint_id], args=[rate]))
        except Exception as exc:  # noqa: BLE001 - the try waits and asks again
            log.warning("rate limit: Redis did not answer (%s); the try asks again", exc)
            raise NoTurn from exc


@lru_cache(maxsize=1)
def limiter() -> Any:
    """This process's limiter: Redis when the deployment has one, else in-process."""
    settings = get_settings()
    url = settings.redis_url or (settings.broker_url if settings.uses_redis else None)
    return RedisLimiter(url) if url else LocalLimiter()
