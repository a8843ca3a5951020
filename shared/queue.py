"""Handing work to the broker without importing Celery into the services.

Each task may name the organization it works for (``organization``): the sender puts it
in that organization's lane (``shared.lanes``), so one organization's backlog does not
delay another's (docs/api.md §11.7). Tasks that name none go to the shared queues.

The real sender (Celery's message API) is installed explicitly at start, by the
api's app factory, the worker's and beat's start signals and the CLI
(``webhooks_worker.celery_app.install_sender``); importing a module installs
nothing. A failed enqueue is logged, never raised: the row is already committed,
and beat's sweep finds work whose task never arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from . import tracing
from .db import after_commit
from .task_names import Task

__all__ = [
    "Task",
    "configure",
    "enqueue",
    "enqueue_after_commit",
    "enqueue_many",
    "enqueue_many_after_commit",
]

log = logging.getLogger(__name__)


# (task, args, countdown, eta, organization id or None)
Sender = Callable[[str, Sequence[Any], float | None, datetime | None, str | None], None]
_sender: Sender | None = None


def configure(sender: Sender | None) -> None:
    """Install the function that puts a task on the broker."""
    global _sender
    _sender = sender


def enqueue(
    task: str,
    *args: Any,
    countdown: float | None = None,
    eta: datetime | None = None,
    organization: str | None = None,
) -> bool:
    """Send a task now; False (and a log line) when the broker refuses it."""
    if _sender is None:
        log.warning("no broker configured; %s left to the sweep", task)
        return False
    try:
        _sender(task, args, countdown, eta, organization)
    except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweep
        log.warning("enqueue of %s failed (%s); beat's sweep will recover it", task, exc)
        return False
    return True


def enqueue_many(
    task: str,
    args_list: Sequence[Sequence[Any]],
    organizations: Sequence[str | None] | None = None,
) -> bool:
    """Send one task per argument tuple, in one broker round trip when the sender can.

    ``organizations`` names each task's organization, in the order of ``args_list``.
    A sender may offer ``many(task, args_list, organizations)`` (the Celery sender publishes
    through one batched producer: a fan-out to a thousand endpoints is one pipeline to
    Redis, not a thousand commands); any other sender gets the tasks one by one.
    """
    if not args_list:
        return True
    owners = list(organizations) if organizations is not None else [None] * len(args_list)
    many = getattr(_sender, "many", None)
    if many is None:
        return all(
            [
                enqueue(task, *args, organization=owner)
                for args, owner in zip(args_list, owners, strict=True)
            ]
        )
    try:
        many(task, args_list, owners)
    except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweep
        log.warning(
            "enqueue of %d %s tasks failed (%s); beat's sweep will recover them",
            len(args_list),
            task,
            exc,
        )
        return False
    return True


def enqueue_many_after_commit(
    session: Session,
    task: str,
    args_list: Sequence[Sequence[Any]],
    organizations: Sequence[str | None] | None = None,
) -> None:
    """Send tasks (see ``enqueue_many``) once the session's transaction has committed."""
    if args_list:
        after_commit(session, tracing.carry(lambda: enqueue_many(task, args_list, organizations)))


def enqueue_after_commit(
    session: Session,
    task: str,
    *args: Any,
    countdown: float | None = None,
    eta: datetime | None = None,
    organization: str | None = None,
) -> None:
    """Send a task once the session's transaction has committed."""
    after_commit(
        session,
        tracing.carry(
            lambda: enqueue(task, *args, countdown=countdown, eta=eta, organization=organization)
        ),
    )
