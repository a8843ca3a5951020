"""Beat's sweep task when the broker does not say how many tasks it holds."""

from __future__ import annotations

import pytest

from shared.config import get_settings
from webhooks_worker import tasks


def test_a_broker_that_does_not_answer_has_an_unknown_backlog_not_an_empty_one():
    # Taken for empty, the sweep would re-enqueue every overdue try behind what may be a
    # long queue; unknown, it leaves them for a sweep that can see the queue.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
        get_settings.cache_clear()
        try:
            assert tasks._broker_backlog() is None
        finally:
            get_settings.cache_clear()
