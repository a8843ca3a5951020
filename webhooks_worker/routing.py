"""Which broker queue a task goes to: first attempts and retries apart.

A receiver that is down makes retries pile up, and each of them may wait the full
endpoint timeout. Routing retries (``webhooks.deliver`` try 2 and later) to their own
queue keeps them from delaying first attempts of healthy endpoints: a worker started
without ``-Q`` consumes both queues (the default), and a larger deployment runs
``-Q webhooks`` and ``-Q webhooks.retry`` pools of different sizes.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from shared.queue import Task

FIRST_QUEUE = "webhooks"
RETRY_QUEUE = "webhooks.retry"

# A worker without -Q consumes every queue listed here.
TASK_QUEUES = (
    Queue(FIRST_QUEUE, routing_key=FIRST_QUEUE),
    Queue(RETRY_QUEUE, routing_key=RETRY_QUEUE),
)


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_kw: Any):
    """Celery router: scheduled tries after the first, and beat's sweep, go to the retry queue.

    The sweep hands retries with long waits to the broker shortly before they are due:
    behind a burst of first attempts it would hand them over late.
    """
    if name == Task.SWEEP:
        return {"queue": RETRY_QUEUE}
    if name != Task.DELIVER:
        return None
    try_number = args[1] if args and len(args) > 1 else (kwargs or {}).get("try_number", 1)
    if isinstance(try_number, int) and try_number > 1:
        return {"queue": RETRY_QUEUE}
    return None
