"""Logs, log context and traces of the worker and beat processes, wired through Celery's signals.

Imported by ``webhooks_worker.celery_app`` so that every process that loads the Celery
app (worker, beat, and the api, which enqueues through it) has the hooks; the api sets
up its own logging in ``create_app``. Importing ``shared.metrics`` here installs the
commit-time counters in every such process.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any

from celery import signals

from shared import log_context, logs, metrics, tracing  # noqa: F401  (metrics: the commit-time counters)
from shared.config import ConfigError, get_settings
from shared.task_names import Task

# Celery's per-task INFO lines (see _setup_logging).
QUIET_AT_INFO = ("celery.app.trace", "celery.worker.strategy")

_tokens: dict[str, contextvars.Token] = {}
_tokens_lock = threading.Lock()


def process_role(argv: list[str] | None = None) -> str:
    """``beat`` for ``celery beat``, else ``worker`` (a worker with ``--beat`` included)."""
    args = sys.argv if argv is None else argv
    return "beat" if "beat" in args and "worker" not in args else "worker"


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_kwargs: Any) -> None:
    """Replace Celery's logging setup with ours (text or JSON lines, secrets scrubbed)."""
    level = loglevel or "INFO"
    role = process_role()
    # A worker's many threads hand their lines to one writer thread (shared.logs).
    logs.configure_logging(
        get_settings().log_format, process=role, level=level, background=role == "worker"
    )
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if isinstance(numeric, int) and numeric >= logging.INFO:
        # Celery's "Task ... received" and "Task ... succeeded" lines, two per task: at a
        # thousand deliveries a second they cost more CPU than the attempt's own line,
        # which says all they do and more (shared.services.deliveries). Failures are
        # still logged (WARNING and up); --loglevel DEBUG brings them back.
        for name in QUIET_AT_INFO:
            logging.getLogger(name).setLevel(logging.WARNING)
        # Beat's "Sending due task" line for every periodic job, several a minute, buried
        # the one line per delivery a newcomer watches for; --loglevel DEBUG shows them.
        # Beat's other INFO lines (its start, its schedule file) stay.
        beat_logger = logging.getLogger("celery.beat")
        if not any(isinstance(f, QuietDueTasks) for f in beat_logger.filters):
            beat_logger.addFilter(QuietDueTasks())


class QuietDueTasks(logging.Filter):
    """Drops beat's INFO line for every task it sends (shown at --loglevel DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but "Scheduler: Sending due task ..."."""
        return not str(record.msg).startswith("Scheduler: Sending due task")


def start_tracing(role: str) -> bool:
    """Export this process's traces when OpenTelemetry's variables ask for it (``shared.tracing``).

    The Celery instrumentation names a published task's span after the task registered
    under that name, and a task it cannot find leaves the context of its span attached
    to the publishing thread for good: every process that publishes (the api too) loads
    the task modules first.
    """
    if not tracing.configure(role):
        return False
    # The process's Celery app (ours, once webhooks_worker.celery_app made it), not an
    # import of that module: it imports this one for its signal handlers.
    from celery import current_app

    current_app.loader.import_default_modules()
    return True


@signals.worker_init.connect
@signals.worker_process_init.connect
@signals.beat_init.connect
def _start_tracing(**_kwargs: Any) -> None:
    # At start, not at import: nothing of the SDK is loaded unless traces are asked for.
    try:
        start_tracing(process_role())
    except ConfigError as exc:  # Celery only logs what a signal handler raises: stop here
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(2) from None


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, args: Any = None, **_kw: Any):
    """Bind the task, and the delivery it works on, to every line it logs."""
    if task_id is None or task is None:
        return
    fields: dict[str, Any] = {"task_id": task_id, "task_name": task.name}
    if task.name in log_context.DELIVERY_TASKS and args:
        fields["delivery_id"] = args[0]
        if task.name == Task.DELIVER and len(args) > 1:
            fields["try_number"] = args[1]
        fields.update(log_context.known_delivery(str(args[0])))
    token = log_context.set_context(**fields)
    with _tokens_lock:
        _tokens[task_id] = token


@signals.task_postrun.connect
def _unbind_task(task_id: str | None = None, **_kw: Any) -> None:
    with _tokens_lock:
        token = _tokens.pop(task_id, None) if task_id else None
    if token is not None:
        log_context.reset_context(token)
