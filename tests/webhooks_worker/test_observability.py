"""The worker's logging setup, run through Celery's setup_logging signal as Celery sends it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery import signals

from webhooks_worker import observability


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """Start with Celery's task loggers untouched; leave the process's logging as it was."""
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    quiet = [logging.getLogger(name) for name in observability.QUIET_AT_INFO]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.NOTSET)
    yield
    for logger, level in zip(quiet, levels, strict=True):
        logger.setLevel(level)
    root.handlers[:] = root_handlers
    root.setLevel(root_level)


def _set_up(loglevel) -> None:
    # Celery sends the level as a number (celery.app.log.setup_logging_subsystem).
    signals.setup_logging.send(
        sender=None, loglevel=loglevel, logfile=None, format="", colorize=False
    )


@pytest.mark.parametrize("loglevel", [logging.INFO, "INFO", logging.WARNING])
def test_celerys_per_task_lines_are_quiet_at_info(loglevel):
    _set_up(loglevel)
    for name in observability.QUIET_AT_INFO:
        logger = logging.getLogger(name)
        assert logger.level == logging.WARNING
        assert not logger.isEnabledFor(logging.INFO)
        # Failures are still logged.
        assert logger.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("loglevel", [logging.DEBUG, "DEBUG"])
def test_celerys_per_task_lines_come_back_at_debug(loglevel):
    _set_up(loglevel)
    for name in observability.QUIET_AT_INFO:
        logger = logging.getLogger(name)
        assert logger.level == logging.NOTSET
        assert logger.isEnabledFor(logging.INFO)
