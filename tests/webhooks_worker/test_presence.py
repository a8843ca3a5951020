"""Heartbeat files: how the status route counts workers on the embedded broker."""

from __future__ import annotations

import os
import time

from webhooks_worker import presence


def test_a_running_heartbeat_counts_one_worker_until_stopped(tmp_path):
    beat = presence.Heartbeat(tmp_path, "celery@host.123")
    beat.start()
    assert presence.count_present(tmp_path) == 1
    beat.stop()
    assert presence.count_present(tmp_path) == 0


def test_a_worker_killed_without_stopping_drops_out_once_its_file_is_stale(tmp_path):
    path = tmp_path / "celery@gone.alive"  # what a killed worker's heartbeat left behind
    path.touch()
    assert presence.count_present(tmp_path) == 1
    last_touch = time.time() - presence.FRESH_SECONDS - 1
    os.utime(path, (last_touch, last_touch))
    assert presence.count_present(tmp_path) == 0


def test_only_the_sqlalchemy_transport_needs_heartbeat_files():
    assert not presence.broadcasts("sqla+sqlite:///data/broker.db")
    assert presence.broadcasts("redis://127.0.0.1:6379/0")
    assert presence.broadcasts("amqp://guest@localhost//")
