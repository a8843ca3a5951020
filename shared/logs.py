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

import ast
import atexit
import contextlib
import contextvars
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import tracing
from .redaction import redact
from .task_names import Task

# The ids a line about a delivery carries, in the order a JSON line shows them.
CONTEXT_FIELDS = ("organization_id", "endpoint_id", "message_id", "delivery_id", "attempt_id")
# Extra fields passed through to JSON lines when a record or the context has them.
PASSTHROUGH_FIELDS = ("task_id", "task_name", "try_number", "trigger", "status_code")

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "webhooks_log_context", default=None
)

# ---- context -------------------------------------------------------------------------------


def current_context() -> dict[str, Any]:
    """The ids bound for the running code (a copy)."""
    return dict(_context.get() or {})


@contextlib.contextmanager
def bind_context(**fields: Any) -> Iterator[None]:
    """Add ids to every line logged inside the block (per thread and per task)."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def set_context(**fields: Any) -> contextvars.Token:
    """Bind ids until ``reset_context(token)``; for signal pairs such as task pre/postrun."""
    return _context.set({**(_context.get() or {}), **fields})


def update_context(**fields: Any) -> None:
    """Add ids to the context already bound (nothing is bound: nothing happens)."""
    bound = _context.get()
    if bound is not None:
        bound.update({k: v for k, v in fields.items() if v is not None})


def reset_context(token: contextvars.Token) -> None:
    """Undo a ``set_context``."""
    with contextlib.suppress(ValueError):  # a token of another context: nothing to undo
        _context.reset(token)


class _DeliveryIds:
    """A bounded map delivery id -> (message, endpoint, organization), which never change.

    Lines about a delivery come while a task works on it, so the deliveries a worker holds
    (its threads and prefetched tasks) are what must fit; ~400 bytes an entry.
    """

    def __init__(self, size: int = 2_048) -> None:
        self._size = size
        self._ids: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, delivery_id: str, message_id: str, endpoint_id: str, org_id: str) -> None:
        with self._lock:
            self._ids[delivery_id] = (message_id, endpoint_id, org_id)
            self._ids.move_to_end(delivery_id)
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)

    def lookup(self, delivery_id: str) -> tuple[str, str, str] | None:
        with self._lock:
            return self._ids.get(delivery_id)


_delivery_ids = _DeliveryIds()


def remember_delivery(
    delivery_id: str, *, message_id: str, endpoint_id: str, organization_id: str
) -> None:
    """Record a delivery's ids, so that a line naming only the delivery shows the rest."""
    _delivery_ids.remember(delivery_id, message_id, endpoint_id, organization_id)
    bound = _context.get()
    if bound is not None and bound.get("delivery_id") == delivery_id:
        bound.setdefault("message_id", message_id)
        bound.setdefault("endpoint_id", endpoint_id)
        bound.setdefault("organization_id", organization_id)


# Tasks whose first argument is a delivery id.
DELIVERY_TASKS = (Task.DELIVER, Task.DELIVER_MANUAL)


def _celery_task_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Celery's "received" and "succeeded" lines carry the task in ``record.data``."""
    data = getattr(record, "data", None)
    if not isinstance(data, dict) or data.get("name") not in DELIVERY_TASKS:
        return {}
    fields: dict[str, Any] = {"task_id": data.get("id"), "task_name": data.get("name")}
    args = data.get("args")
    try:
        parsed = ast.literal_eval(args) if isinstance(args, str) else args
    except (ValueError, SyntaxError):
        parsed = None
    if isinstance(parsed, list | tuple) and parsed and isinstance(parsed[0], str):
        fields["delivery_id"] = parsed[0]
    return fields


def known_delivery(delivery_id: str) -> dict[str, str]:
    """The message, endpoint and organization ids of a delivery this process has seen."""
    known = _delivery_ids.lookup(delivery_id)
    if not known:
        return {}
    return dict(zip(("message_id", "endpoint_id", "organization_id"), known, strict=True))


# Where the handoff to the writer thread leaves the ids it worked out for a record.
_PREPARED_IDS = "_webhooks_ids"


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """The delivery ids (and task fields) that belong on this record's line."""
    prepared = getattr(record, _PREPARED_IDS, None)
    if prepared is not None:
        return prepared
    fields: dict[str, Any] = {}
    bound = {**_celery_task_fields(record), **(_context.get() or {})}
    for name in CONTEXT_FIELDS + PASSTHROUGH_FIELDS:
        value = getattr(record, name, None)
        if value is None:
            value = bound.get(name)
        if value is not None:
            fields[name] = value
    delivery_id = fields.get("delivery_id")
    if delivery_id and not all(k in fields for k in CONTEXT_FIELDS[:3]):
        for name, value in known_delivery(str(delivery_id)).items():
            fields.setdefault(name, value)
    fields.update(tracing.log_ids())  # the running span's trace, when tracing is on
    return fields


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
        setattr(record, _PREPARED_IDS, ids)  # the formatter's, without working them out again
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
