"""Beat as an operator sees it: a quiet log by default and a heartbeat a health check reads.

Each test runs a real ``celery beat`` process on a private Redis (nothing consumes its
queues, so what beat sent stays there to be counted).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.stack import ROOT, RedisServer, Service
from tests.support.waiting import wait_until
from webhooks_worker.beat import STALE_AFTER_SECONDS, heartbeat_path
from webhooks_worker.routing import RETRY_QUEUE

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.kill()


def start_beat(tmp_path: Path, redis_url: str, loglevel: str, name: str) -> tuple[Service, Path]:
    schedule = tmp_path / f"{name}-schedule"
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("CELERY_BROKER_URL", None)
    beat = Service(
        name,
        [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "beat",
         "--loglevel", loglevel, "--schedule", str(schedule)],
        env,
        tmp_path / f"{name}.log",
    )  # fmt: skip
    return beat, schedule


def sent_sweeps(redis_server: RedisServer) -> int:
    return redis_server.client().llen(RETRY_QUEUE)


def test_beat_sends_its_jobs_without_a_log_line_for_each_by_default(tmp_path, private_redis):
    beat, _schedule = start_beat(tmp_path, private_redis.url, "INFO", "beat")
    try:
        # A sweep sent: beat is working, and has had a line to write (celery logs the
        # line before it sends; a second sweep, 5 s later, would show nothing more).
        wait_until(lambda: sent_sweeps(private_redis) >= 1, timeout=40, interval=0.2)
    finally:
        beat.stop()
    log = beat.log_text()
    assert "beat: Starting..." in log
    assert "Sending due task" not in log


def test_beat_logs_each_job_it_sends_at_debug(tmp_path, private_redis):
    beat, _schedule = start_beat(tmp_path, private_redis.url, "DEBUG", "beat-verbose")
    try:
        wait_until(lambda: sent_sweeps(private_redis) >= 1, timeout=40, interval=0.2)
        beat.wait_for_log("Sending due task sweep-due-deliveries", timeout=10)
    finally:
        beat.stop()


def compose_beat_check(schedule: Path) -> subprocess.CompletedProcess:
    """The compose file's beat health check, run against this beat's schedule file."""
    test = COMPOSE["services"]["beat"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    schedule_in_compose = COMPOSE["services"]["beat"]["command"][-1]
    argv = [sys.executable if part == "python" else part for part in test[1:]]
    argv = [str(schedule) if part == schedule_in_compose else part for part in argv]
    assert str(schedule) in argv, "the health check reads the schedule file beat is given"
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_compose_health_check_passes_while_beat_ticks_and_fails_once_it_stops(
    tmp_path, private_redis
):
    beat, schedule = start_beat(tmp_path, private_redis.url, "INFO", "beat-health")
    try:
        not_yet = compose_beat_check(schedule)
        if not heartbeat_path(schedule).exists():
            assert not_yet.returncode == 1
            assert "has not ticked yet" in not_yet.stderr
        wait_until(lambda: heartbeat_path(schedule).exists(), timeout=30)
        first = heartbeat_path(schedule).stat().st_mtime
        # Touched again on later ticks, not only once at start.
        wait_until(lambda: heartbeat_path(schedule).stat().st_mtime > first, timeout=20)
        healthy = compose_beat_check(schedule)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        beat.kill()  # a beat that stopped ticking, as a hung one would
    # A minute and more without a tick: the check fails, saying how long.
    stale = time.time() - STALE_AFTER_SECONDS - 5
    os.utime(heartbeat_path(schedule), (stale, stale))
    stuck = compose_beat_check(schedule)
    assert stuck.returncode == 1
    assert "beat last ticked" in stuck.stderr
