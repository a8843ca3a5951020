"""The Celery settings that make delivery at-least-once, and the limits they must nest in."""

from __future__ import annotations

import os
import sys

import pytest

from shared import retry_policy
from shared.services import deliveries, endpoints
from shared.services.deliveries import sweep
from tests.support.stack import RedisServer, Service
from webhooks_worker import celery_app
from webhooks_worker.celery_app import app

# Issue 5: a try whose task was lost is attempted within this long after it was due.
RECOVERY_BOUND = 60


def test_tasks_survive_a_dying_worker_and_stay_bounded_in_memory():
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert 0 < conf.worker_eta_task_limit <= 50_000
    # Tasks running when the broker connection drops finish and record their attempt.
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.task_ignore_result is True


def test_deadlines_nest_http_then_task():
    longest_attempt = endpoints.TIMEOUT_RANGE[1]
    assert longest_attempt <= celery_app.MAX_ATTEMPT_SECONDS
    assert app.conf.task_soft_time_limit > longest_attempt
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit


def test_the_broker_keeps_no_copy_of_held_tasks_the_database_does():
    # The sweep, not a Redis visibility timeout, returns what a killed worker held
    # (test_recovery.py shows it within the recovery bound).
    assert app.conf.broker_transport_options["ack_emulation"] is False
    assert "visibility_timeout" not in app.conf.broker_transport_options


def test_a_lost_try_is_found_well_within_the_recovery_bound():
    sweep_every = app.conf.beat_schedule["sweep-due-deliveries"]["schedule"]
    # Worst case for a worker killed mid-attempt: its lease lapses (the last renewal plus
    # LEASE_SECONDS), then the next sweep; for a task lost from the broker: overdue, then
    # the next sweep. Each must leave 15 s for the worker to pick the task up.
    mid_attempt = deliveries.LEASE_RENEW_EVERY + deliveries.LEASE_SECONDS + sweep_every
    lost_task = sweep.OVERDUE_AFTER.total_seconds() + sweep_every
    assert max(mid_attempt, lost_task) <= RECOVERY_BOUND - 15
    assert deliveries.LEASE_SECONDS >= 3 * deliveries.LEASE_RENEW_EVERY


def test_the_sweep_hands_a_long_wait_over_before_it_is_due():
    sweep_every = app.conf.beat_schedule["sweep-due-deliveries"]["schedule"]
    # Seen by a sweep at most sweep_every after entering the lookahead, the try must still
    # leave 10 s for the sweep's task to be taken and its tries published.
    assert sweep.LOOKAHEAD.total_seconds() - sweep_every >= 10
    # Only long waits go through the sweep: shorter ones are countdowns from the start.
    assert sweep.LOOKAHEAD.total_seconds() < retry_policy.MAX_BROKER_COUNTDOWN


def test_a_hung_broker_fails_an_enqueue_in_bounded_time():
    options = app.conf.broker_transport_options
    assert options["socket_timeout"] <= 5 and options["socket_connect_timeout"] <= 5
    retries = app.conf.task_publish_retry_policy["max_retries"]
    assert (retries + 1) * options["socket_timeout"] <= 15


def test_an_evicting_redis_is_reported_and_a_safe_one_is_not(tmp_path):
    evicting = RedisServer(tmp_path, extra_args=("--maxmemory-policy", "allkeys-lru"))
    safe = RedisServer(tmp_path)
    try:
        warning = celery_app.broker_eviction_warning(evicting.url)
        assert warning is not None and "allkeys-lru" in warning and "noeviction" in warning
        assert celery_app.broker_eviction_warning(safe.url) is None
        assert celery_app.broker_eviction_warning("sqla+sqlite:///x.db") is None
        # A worker started on it says so in its log at start.
        worker = Service(
            "worker",
            [
                sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "worker",
                "--pool", "threads", "--concurrency", "1", "--without-gossip",
                "--without-mingle", "--without-heartbeat",
            ],
            {**os.environ, "REDIS_URL": evicting.url},
            tmp_path / "worker.log",
        )  # fmt: skip
        try:
            worker.wait_for_log("maxmemory-policy is allkeys-lru")
        finally:
            worker.stop(5)
    finally:
        evicting.kill()
        safe.kill()


@pytest.mark.parametrize("name", ["webhooks.deliver", "webhooks.sweep", "webhooks.fanout"])
def test_delivery_tasks_are_registered_with_explicit_names(name):
    app.loader.import_default_modules()
    assert name in app.tasks
