"""Probes of the broker and the workers, for the platform's status route (docs/api.md §6.2)."""

from __future__ import annotations

import logging

from shared.config import get_settings

from . import presence
from .celery_app import app

log = logging.getLogger("webhooks.health")

# Short enough that a status check answers quickly, long enough for an idle worker on
# the same network to answer a broadcast ping.
PING_TIMEOUT = 0.5


def broker_ok(timeout: float = 2.0) -> bool:
    """Whether the broker accepts a connection within ``timeout`` seconds."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            # Opening a channel makes the transport really talk to the broker.
            conn.default_channel  # noqa: B018
        return True
    except Exception as exc:  # noqa: BLE001 - any failure means the broker is not usable
        log.warning("broker check failed: %s", exc.__class__.__name__)
        return False


def worker_count(timeout: float = PING_TIMEOUT) -> int:
    """How many workers answer a control ping within ``timeout`` seconds.

    On a broker without broadcasts (the embedded default): how many keep their heartbeat
    file fresh (webhooks_worker.presence).
    """
    settings = get_settings()
    if not presence.broadcasts(settings.broker_url):
        return presence.count_present(presence.presence_dir(settings.data_dir))
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception as exc:  # noqa: BLE001 - no broker, or a transport without broadcast
        log.warning("worker ping failed: %s", exc.__class__.__name__)
        return 0
    return len(replies)
