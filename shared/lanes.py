"""Lanes: the broker queues that keep one organization's backlog from delaying another's.

A delivery task goes to one of ``LANES`` queues chosen by its organization (first tries to
``webhooks.<n>``, retries to ``webhooks.retry.<n>``), and every worker consumes all of them
in turn (docs/api.md §11.7, docs/decisions.md "Organizations share the workers by
lanes"). An organization with 15,000 deliveries waiting fills its own lane; another
organization's new delivery is in a different lane, and the next worker to take a task
takes it before the next one of the backlog.

The number of lanes is fixed here, not a setting: every producer (the api on every
machine, every worker, beat) must agree on which lane an organization has, and every
worker must consume all of them. Two organizations that hash to the same lane share it;
with more lanes that is rarer, but each lane is one more key every worker's fetch names.

Imported by the producers (``webhooks_worker.routing``) and by the metrics, so it holds
names only: no Celery, no kombu.
"""

from __future__ import annotations

import zlib

LANES = 16

# Queues from before lanes, still consumed: tasks with no organization (beat's chores,
# organization set-up, manual attempts) go to the first, beat's sweep to the second, and
# tasks an older api or worker published during an upgrade are found in either.
FIRST_QUEUE = "webhooks"
RETRY_QUEUE = "webhooks.retry"

FIRST_LANES = tuple(f"{FIRST_QUEUE}.{n}" for n in range(LANES))
RETRY_LANES = tuple(f"{RETRY_QUEUE}.{n}" for n in range(LANES))

# Every queue a worker consumes, by the family the metrics report it under.
FAMILIES: dict[str, tuple[str, ...]] = {
    FIRST_QUEUE: (FIRST_QUEUE, *FIRST_LANES),
    RETRY_QUEUE: (RETRY_QUEUE, *RETRY_LANES),
}
ALL_QUEUES = (*FAMILIES[FIRST_QUEUE], *FAMILIES[RETRY_QUEUE])
# `webhooks worker --queues first|retry`: the family a dedicated pool consumes.
FAMILY_OF = {"first": FIRST_QUEUE, "retry": RETRY_QUEUE}

_LANE_BY_QUEUE = {name: n for lanes in (FIRST_LANES, RETRY_LANES) for n, name in enumerate(lanes)}


def lane_of(organization_id: str) -> int:
    """The organization's lane: the same in every process and on every machine.

    CRC-32 rather than ``hash()``: Python salts string hashes per process.
    """
    return zlib.crc32(organization_id.encode()) % LANES


def queue_for(organization_id: str, *, retry: bool) -> str:
    """The queue of the organization's first tries, or of its retries."""
    return (RETRY_LANES if retry else FIRST_LANES)[lane_of(organization_id)]


def lane_of_queue(queue: str | None) -> int | None:
    """The lane a queue belongs to; None for the queues outside the lanes."""
    return _LANE_BY_QUEUE.get(queue) if queue else None
