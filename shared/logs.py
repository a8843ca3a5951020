"""Log setup for every process: text for people, JSON lines for machines, secrets scrubbed.

``WEBHOOKS_LOG_FORMAT=json`` makes each record one JSON object on one line with
``time``, ``level``, ``logger``, ``process`` (api, worker, beat, cli), ``message`` and, on
every line about a delivery, its ``delivery_id``, ``message_id``, ``endpoint_id`` and
``organization_id``. Those ids come from three places, first found wins:

1. the record's own ``extra`` (``log.info(..., extra={"delivery_id": ...})``);
2. the log context of the running code (``bind_context``), which the worker binds for
   the duration of a task (``webhooks_worker.observability``);
3. a small in-process cache from delivery id to the other three ids, filled whenever a
   delivery row is loaded, so a line that knows only the delivery id gets the rest.

Secrets never reach a line: signing secrets, API keys, bearer tokens, JWTs, URL
passwords and the configured platform token, JWT secret and encryption key are replaced
before a record is written, whatever the format.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from .log_context import PREPARED_IDS, record_ids, remember_delivery
from .redaction import redact

# ---- formatters ----------------------------------------------------------------------------


def _secrets() -> tuple[str, ...]:
    """The configured literal secrets, so that none is ever echoed (empty before config)."""
    try:
        from .config import get_settings

        settings = get_settings()
    except Exception:  # noqa: BLE001 - a bad config is reported elsewhere; scrub by pattern
        return ()
    return tuple(
        s
        for s in (
            settings.admin_token,
            settings.jwt_secret,
            settings.metrics_token,
            *settings.encryption_keys,
        )
        if s
    )


def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ids from the record, the context and the delivery cache."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        secrets = _secrets()
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "message": redact(record.getMessage(), secrets),
        }
        line.update(record_ids(record))
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            line["exception"] = redact(text, secrets)
        elif record.exc_text:
            line["exception"] = redact(record.exc_text, secrets)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Celery's familiar layout, ids appended as key=value, secrets scrubbed."""

    def __init__(self, process: str) -> None:
        super().__init__("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = record_ids(record)
        if ids:
            text += " " + " ".join(f"{k}={v}" for k, v in ids.items())
        return redact(text, _secrets())


# ---- setup ---------------------------------------------------------------------------------

_HANDLER_MARK = "_webhooks_handler"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def make_handler(log_format: str, process: str, stream: Any = None) -> logging.Handler:
    """A stream handler with the formatter for ``log_format`` ("text" or "json")."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    formatter: logging.Formatter = (
        JsonFormatter(process) if log_format == "json" else TextFormatter(process)
    )
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    return handler


class _Handoff(logging.handlers.QueueHandler):
    """Hands a record to the writer thread with what only the logging thread knows.

    The message is rendered and the ids bound to the running code (its task, its
    delivery) are copied onto the record here, since the writer thread has neither.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        ids = record_ids(record)
        for name, value in ids.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        setattr(record, PREPARED_IDS, ids)  # the formatter's, without working them out again
        record.msg, record.args = record.getMessage(), None
        return record


class _Writer:
    """The thread that formats and writes a process's log lines, in the order logged."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.listener = logging.handlers.QueueListener(
            self.queue, handler, respect_handler_level=True
        )
        self.listener.start()
        self._running = True

    def stop(self) -> None:
        """Write what is queued and end the thread."""
        if self._running:
            self._running = False
            self.listener.stop()


_writer: _Writer | None = None


def stop_background() -> None:
    """Write every queued line now and stop the writer thread (at exit, and in tests)."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop()


def _restart_writer_in_child() -> None:
    # A forked child has the parent's queue but not its thread: give it its own.
    global _writer
    if _writer is not None:
        _writer = _Writer(_writer.handler)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, _Handoff):
                handler.queue = _writer.queue


atexit.register(stop_background)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_writer_in_child)


def configure_logging(
    log_format: str,
    *,
    process: str,
    level: int | str = logging.INFO,
    stream: Any = None,
    background: bool = False,
) -> logging.Handler:
    """Install our handler on the root logger (once per process; a second call replaces it).

    Gunicorn's own loggers are routed through it too, so that access and error lines
    share the format. With ``background``, lines are formatted and written by one writer
    thread: a worker's hundred threads no longer queue for the stream's lock, each
    holding it across a write to stderr (a tenth of a worker's CPU at full load).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    stop_background()
    handler = make_handler(log_format, process, stream)
    handler.setLevel(level)
    if background:
        global _writer
        _writer = _Writer(handler)
        handler = _Handoff(_writer.queue)
        handler.setLevel(level)
        setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    watch_deliveries()
    # Only ever lowered: a process embedding another's setup (tests) keeps what it asked for.
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    if root.level == logging.NOTSET or root.level > wanted:
        root.setLevel(wanted)
    if log_format == "json":
        for name in ("gunicorn.error", "gunicorn.access"):
            gunicorn_logger = logging.getLogger(name)
            if gunicorn_logger.handlers:
                gunicorn_logger.handlers = [handler]
                gunicorn_logger.propagate = False
    return handler


_watching = False


def watch_deliveries() -> None:
    """Remember the ids of every delivery row this process loads (for ``record_ids``)."""
    global _watching
    if _watching:
        return
    from sqlalchemy import event

    from .models import Delivery

    def _remember(target: Delivery, *_args: Any) -> None:
        if target.id and target.message_id and target.endpoint_id:
            remember_delivery(
                target.id,
                message_id=target.message_id,
                endpoint_id=target.endpoint_id,
                organization_id=target.organization_id,
            )

    event.listen(Delivery, "load", _remember)
    _watching = True
