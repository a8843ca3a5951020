"""Which broker queue a task goes to: by organization, and first attempts apart from retries.

Organizations: a delivery task goes to its organization's lane (``shared.lanes``), one of
a fixed number of queues that every worker consumes in turn (kombu's Redis transport
rotates the queues it waits on, putting the one it just took from last). An
organization's backlog fills its own lane, and another organization's new task is taken
next, whichever worker on whichever machine takes it (docs/api.md §11.7).

Retries: a receiver that is down makes retries pile up, and each of them may wait the
full endpoint timeout. Retries (``webhooks.deliver`` try 2 and later) have lanes of their
own, so they do not delay first attempts of healthy endpoints, of their organization or
any other.

A worker started without ``-Q`` consumes every queue (the default, and what the Procfile
runs); ``webhooks_worker.routing.TASK_QUEUES`` lists them.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from shared import lanes
from shared.queue import Task

FIRST_QUEUE = lanes.FIRST_QUEUE
RETRY_QUEUE = lanes.RETRY_QUEUE

# A worker without -Q consumes every queue listed here.
TASK_QUEUES = tuple(Queue(name, routing_key=name) for name in lanes.ALL_QUEUES)

# The tasks that work for one organization and go to its lane when they name it.
_LANED = frozenset({Task.DELIVER, Task.FANOUT, Task.DELIVER_MANUAL})


def queue_for(name: str, args: Any, organization: str | None, lane: int | None) -> str | None:
    """The queue of task ``name``: None for Celery's default (the shared first queue).

    ``organization`` is the organization the task works for, when its producer named it;
    ``lane`` the lane of the task that publishes this one, when there is one (a retry
    enqueued by the try before it stays in its organization's lane without naming it).
    """
    if name == Task.SWEEP:
        # Beat's sweep hands retries with long waits to the broker shortly before they are
        # due: behind a burst of first attempts it would hand them over late.
        return RETRY_QUEUE
    if name not in _LANED:
        return None
    retry = name == Task.DELIVER and _try_number(args) > 1
    if organization is not None:
        return lanes.queue_for(organization, retry=retry)
    if lane is not None:
        return (lanes.RETRY_LANES if retry else lanes.FIRST_LANES)[lane]
    return RETRY_QUEUE if retry else None


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_kw: Any):
    """Celery router, for tasks sent with Celery's own ``send_task`` (no organization).

    The service's producers publish through ``webhooks_worker.celery_app``, which names
    the organization; this keeps anything else (a shell, an older producer) on the
    shared queues, retries apart.
    """
    try_number = args[1] if args and len(args) > 1 else (kwargs or {}).get("try_number", 1)
    queue = queue_for(name, [None, try_number], None, None)
    return {"queue": queue} if queue else None


def _try_number(args: Any) -> int:
    try_number = args[1] if args and len(args) > 1 else 1
    return try_number if isinstance(try_number, int) else 1
