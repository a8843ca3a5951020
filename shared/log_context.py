"""The ids a log line about a delivery carries, and where they come from (shared.logs).

First found wins: the record's own ``extra``; the log context of the running code
(``bind_context``, which the worker binds for the duration of a task); a small in-process
cache from delivery id to the other three ids, filled whenever a delivery row is loaded.
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from . import tracing
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
PREPARED_IDS = "_webhooks_ids"


def record_ids(record: logging.LogRecord) -> dict[str, Any]:
    """The delivery ids (and task fields) that belong on this record's line."""
    prepared = getattr(record, PREPARED_IDS, None)
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
