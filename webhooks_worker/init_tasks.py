"""Celery tasks of organization initialization: the first run and beat's retries."""

from __future__ import annotations

import logging

from shared.db import get_sessionmaker
from shared.errors import NotFound
from shared.services import initialization
from shared.task_names import Task

from .celery_app import app
from .tasks import DB_RETRY

log = logging.getLogger("webhooks.worker")


@app.task(name=Task.INITIALIZE_ORGANIZATION, **DB_RETRY)
def initialize_organization(organization_id: str) -> str:
    """Initialize an organization's webhooks; a failure is recorded for beat to retry.

    Run twice, the second run finds the application and endpoints there and adds nothing.
    """
    try:
        init = initialization.run_initialization(
            get_sessionmaker(), organization_id=organization_id
        )
    except NotFound:
        log.warning("initialization of %s skipped: no such organization", organization_id)
        return "gone"
    return init.status


@app.task(name=Task.RETRY_INITIALIZATIONS, **DB_RETRY)
def retry_initializations() -> int:
    """Run again the failed initializations whose retry is due; returns how many ran.

    Run twice at once (two beats), each due row is claimed by one run only.
    """
    results = initialization.retry_failed(get_sessionmaker(), due_only=True)
    for init in results:
        log.info(
            "initialization retry of %s: %s%s",
            init.organization_id,
            init.status,
            f" ({init.last_error})" if init.last_error else "",
        )
    return len(results)
