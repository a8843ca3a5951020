"""The name of every task, declared once: producers send by it and the worker registers it."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """The name of every task the worker runs: what a producer sends and a worker registers."""

    FANOUT = "webhooks.fanout"
    DELIVER = "webhooks.deliver"
    DELIVER_MANUAL = "webhooks.deliver_manual"
    SWEEP = "webhooks.sweep"
    AUTO_DISABLE = "webhooks.auto_disable"
    PURGE = "webhooks.purge"
    ENDPOINT_TIMERS = "webhooks.endpoint_timers"
    INITIALIZE_ORGANIZATION = "webhooks.initialize_organization"
    RETRY_INITIALIZATIONS = "webhooks.retry_initializations"
