"""The rate limiter's schedule (docs/api.md §11.6), in the process and in Redis."""

from __future__ import annotations

import bisect
from collections import deque

import pytest

from shared.rate_limit import NoTurn, RedisLimiter, next_turn
from tests.conftest import TEST_REDIS_URL
from tests.support.outage import closed_port


def _most_in_a_second(turns: list[float]) -> int:
    return max(bisect.bisect_left(turns, t + 1.0 - 1e-9) - i for i, t in enumerate(turns))


def test_a_quiet_endpoint_gets_a_seconds_worth_at_once_then_an_even_pace():
    schedule: deque[float] = deque()
    turns = [next_turn(schedule, 20, 100.0) for _ in range(100)]
    assert turns[:20] == [100.0] * 20
    assert turns[20] == 101.0
    assert [round(b - a, 6) for a, b in zip(turns[20:], turns[21:], strict=False)] == [0.05] * 79
    assert _most_in_a_second(turns) == 20


def test_no_second_gets_more_than_the_rate_whenever_tries_ask():
    schedule: deque[float] = deque()
    now, turns = 0.0, []
    for step in range(2000):
        now += (step * 7919 % 13) / 100  # irregular arrivals, bursts and gaps
        turns.append(next_turn(schedule, 7, now))
        assert turns[-1] >= now
    assert turns == sorted(turns)
    assert _most_in_a_second(turns) <= 7


def test_every_process_shares_one_schedule_in_redis(redis_client):
    first, second = RedisLimiter(TEST_REDIS_URL), RedisLimiter(TEST_REDIS_URL)
    waits = [limiter.reserve("whk-shared", 5) for _ in range(4) for limiter in (first, second)]
    # Two processes asking for eight turns of a 5/s endpoint: five now, three a second on.
    assert sum(w < 0.5 for w in waits) == 5
    assert sorted(waits)[5] > 0.9


def test_without_an_answer_from_redis_no_turn_is_given():
    limiter = RedisLimiter(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(NoTurn):
        limiter.reserve("whk-away", 5)
