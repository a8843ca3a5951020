"""The Celery application: broker settings chosen for at-least-once webhook delivery."""

from __future__ import annotations

import gc
import logging
import os
from contextlib import ExitStack
from typing import NamedTuple

from celery import Celery, signals
from celery.concurrency import get_implementation
from kombu.utils.uuid import uuid

from shared import db, lanes, queue, tracing
from shared.config import get_settings, settings_or_exit
from shared.queue import Task

from . import broker, compat, observability, presence  # noqa: F401  (logging setup, log context, metrics counters)
from .fair_share import PoolSeesPrefetchWindow
from .publisher import Pending, Publisher
from .routing import TASK_QUEUES, queue_for, route_task
from .thread_pool import ElasticThreadPool

log = logging.getLogger("webhooks.worker")

# The longest a single attempt can take: docs/api.md §5 caps timeout_seconds at 300.
MAX_ATTEMPT_SECONDS = 300
# Nested deadlines: HTTP deadline (<= 300 s) < task time limit.
TASK_TIME_LIMIT = MAX_ATTEMPT_SECONDS + 60
# How long one broker command may take before it counts as failed (Redis answers in
# milliseconds; consumers block at most 1 s in BRPOP, inside this).
BROKER_SOCKET_TIMEOUT = 3.0
# How often beat deletes expired endpoints and reports failing ones: an expiry is kept to
# within this, and a failing notice comes this late at most after its window.
ENDPOINT_TIMERS_EVERY = 10.0


def make_celery() -> Celery:
    """Build the Celery app from the settings (a bad one stops the process, naming it)."""
    settings = settings_or_exit()
    app = Celery(
        "webhooks",
        broker=settings.broker_url,
        include=["webhooks_worker.tasks", "webhooks_worker.init_tasks"],
    )
    app.conf.update(
        # Acknowledge after the task ran: on a warm shutdown a worker hands back what it
        # holds (prefetched tasks, countdowns) instead of dropping it. What a killed worker
        # held comes back through beat's sweep of the database (see ack_emulation below).
        task_acks_late=True,
        # A pool process killed by the OS (OOM, SIGKILL) requeues its task instead of acking.
        task_reject_on_worker_lost=True,
        # Delivery outcomes live in the database; results would only fill the broker.
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        # Enforced by the prefork pool only. On the thread pool the Procfile runs, an
        # attempt is bounded by the HTTP client's own total deadline (libcurl's
        # CURLOPT_TIMEOUT_MS, shared.http) and a worker that dies is covered by the
        # renewed lease.
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 20,
        task_default_queue="webhooks",
        # First attempts and retries on separate queues (webhooks_worker.routing).
        task_queues=TASK_QUEUES,
        task_routes=(route_task,),
        # One message in flight per pool slot beyond the running ones: a burst spreads
        # over every worker instead of piling up on the first that connected.
        worker_prefetch_multiplier=1,
        # Countdown tasks wait in worker memory until due; bound how many one worker holds.
        worker_eta_task_limit=20000,
        worker_hijack_root_logger=False,
        # A task running when the broker connection drops finishes and records its attempt
        # (if its task runs again, from beat's sweep, it finds the try recorded).
        # Cancelling it would discard a post the receiver may already have: a duplicate.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        # An enqueue happens after the commit, in the api's request: with a broker that
        # hangs (a partition, not a refusal) it must fail fast rather than hold the request
        # forever; the row is committed and beat's sweep sends what never reached Redis.
        broker_connection_timeout=BROKER_SOCKET_TIMEOUT,
        # One retry rides out a Redis restart; more would only hold the request longer.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
        # Kombu's Redis transport reusing one client per channel (webhooks_worker.broker);
        # rediss:// and failover lists keep kombu's own.
        broker_transport=(
            broker.TRANSPORT
            if settings.broker_url.startswith("redis://") and ";" not in settings.broker_url
            else None
        ),
        # The embedded SQLite transport hands its options to create_engine, so only
        # Redis gets them.
        broker_transport_options=(
            broker.transport_options(socket_timeout=BROKER_SOCKET_TIMEOUT)
            if settings.uses_redis
            else {}
        ),
        # Celery's persistent scheduler plus a heartbeat file for health checks.
        beat_scheduler="webhooks_worker.beat:Scheduler",
        beat_schedule={
            "sweep-due-deliveries": {"task": Task.SWEEP, "schedule": 5.0},
            "retry-failed-initializations": {
                "task": Task.RETRY_INITIALIZATIONS,
                "schedule": 15.0,
            },
            "auto-disable-failing-endpoints": {"task": Task.AUTO_DISABLE, "schedule": 300.0},
            "retention-purge": {"task": Task.PURGE, "schedule": 3600.0},
            # Expired endpoints are gone within this period of their time (docs/api.md §11.4).
            "endpoint-timers": {"task": Task.ENDPOINT_TIMERS, "schedule": ENDPOINT_TIMERS_EVERY},
        },
        timezone="UTC",
    )
    return app


app = make_celery()


# On kombu's virtual transports (Redis, the embedded SQLAlchemy one) a task goes to its
# queue's list by name, and a consuming worker declares its queues itself, so declaring
# the queue again before every publish (Celery's default) only costs CPU: kombu copies and
# binds the queue each time before finding it declared (2% of a worker's CPU in a
# fan-out). Other brokers keep Celery's declaration.
_DECLARE: list | None = (
    []
    if get_settings().broker_url.startswith(("redis://", "rediss://", "unix://", "sqla+"))
    else None
)


class Lineage(NamedTuple):
    """What a task message takes from the task that sends it, if any."""

    root_id: str | None
    parent_id: str | None
    lane: int | None


NO_LINEAGE = Lineage(None, None, None)


def _lineage() -> Lineage:
    # A fan-out's tries descend from it, as send_task says; and they stay in its lane.
    parent = app.current_worker_task
    if parent is None:
        return NO_LINEAGE
    parent_id = parent.request.id
    return Lineage(
        parent.request.root_id or parent_id,
        parent_id,
        lanes.lane_of_queue((parent.request.delivery_info or {}).get("routing_key")),
    )


# Celery's route of a task to a named queue, worked out once per (task, queue).
_ROUTES: dict[tuple[str, str], dict] = {}


def _publish(producer, name: str, calls, lineage: Lineage) -> None:
    """Publish one ``name`` task per (args, countdown, eta, organization), with the producer.

    Celery's own message API (``create_task_message``, ``send_task_message``) with the
    route ``send_task`` would take: the same message, headers and queue. ``send_task``
    itself cost ~180 us of CPU per task (its registry lookup, option merging and routing,
    a result object) against ~60 us for the message, and a fan-out publishes one task per
    delivery, a failing delivery one per retry. The route is worked out once per queue.

    The queue is the organization's lane (``webhooks_worker.routing``). A task that names
    no organization, published by a task that came from a lane (a retry, a try put back
    until it is due), stays in that lane: its producer is working for that organization.
    """
    amqp = app.amqp
    task_type = app.tasks.get(name)
    for args, countdown, eta, organization in calls:
        args = list(args)
        queue_name = queue_for(name, args, organization, lineage.lane)
        if queue_name is None:  # Celery's router decides, by the task's arguments
            options = amqp.router.route({}, name, args, None, task_type)
        else:
            options = _ROUTES.get((name, queue_name))
            if options is None:
                options = _ROUTES[(name, queue_name)] = amqp.router.route(
                    {"queue": queue_name}, name, args, None, task_type
                )
        message = amqp.create_task_message(
            uuid(),
            name,
            args,
            {},
            countdown,
            eta,
            root_id=lineage.root_id,
            parent_id=lineage.parent_id,
            argsrepr=repr(args),
            kwargsrepr="{}",
            ignore_result=True,
        )
        amqp.send_task_message(producer, name, message, declare=_DECLARE, **options)


def _send(name: str, args, countdown, eta, organization=None) -> None:
    with app.producer_or_acquire() as producer:
        _publish(producer, name, [(args, countdown, eta, organization)], _lineage())


# Tasks published per pipeline flush when sending many (kombu counts Redis commands).
PUBLISH_BATCH = 500


def _send_many(name: str, args_list, organizations=None) -> None:
    # One producer and kombu's publish batch: the LPUSHes of a fan-out leave in pipelines.
    owners = organizations if organizations is not None else [None] * len(args_list)
    with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_BATCH):
        _publish(
            producer,
            name,
            [(args, None, None, owner) for args, owner in zip(args_list, owners, strict=True)],
            _lineage(),
        )


def publish_pending(batch: list[Pending], producer=None) -> None:
    """Publish the publishing thread's batch in one pipeline, each task in its maker's trace.

    ``producer``: the app's (from its pool) unless given.
    """
    with ExitStack() as stack:
        if producer is None:
            producer = stack.enter_context(app.producer_or_acquire())
        stack.enter_context(producer.batch(max_size=PUBLISH_BATCH))
        for pending in batch:
            pending.within(lambda p=pending: _publish(producer, p.name, [p.call], p.lineage))


PUBLISHER = Publisher(publish_pending)


def _send_later(name: str, args, countdown, eta, organization=None) -> None:
    # A worker's single tasks: to the publishing thread (webhooks_worker.publisher).
    PUBLISHER.submit(
        Pending(name, (args, countdown, eta, organization), _lineage(), tracing.within_current())
    )


_send.many = _send_many  # type: ignore[attr-defined]  (shared.queue.enqueue_many)
_send_later.many = _send_many  # type: ignore[attr-defined]  (already one pipeline)


def install_sender(*, publishing_thread: bool = False) -> None:
    """Make ``shared.queue`` put tasks on this app's broker (api, worker, beat and CLI call it).

    ``publishing_thread``: single tasks go through the process's publishing thread
    (the worker's: ``webhooks_worker.publisher``) instead of being published at once.
    Called at start, never as a side effect of importing this module: whatever only
    imports the tasks (a test, a script, a tool reading the settings) leaves the broker
    alone until it asks for it.
    """
    queue.configure(_send_later if publishing_thread else _send)


@signals.worker_init.connect
def _install_worker_sender(**_kwargs) -> None:
    # Before the first task runs: tasks enqueue follow-up work (first tries, retries).
    install_sender(publishing_thread=True)


@signals.beat_init.connect
def _install_beat_sender(**_kwargs) -> None:
    # Before the first schedule runs (the sweep's overdue tries).
    install_sender()


@signals.worker_shutdown.connect
def _publish_what_is_waiting(**_kwargs) -> None:
    # After the pool has stopped: no task hands anything over any more.
    PUBLISHER.stop()


def broker_eviction_warning(broker_url: str) -> str | None:
    """A warning when the Redis broker may evict keys under memory pressure, else None.

    Queued tasks are Redis keys; under any
    maxmemory-policy but noeviction Redis may drop them when full. Nothing is lost (beat's
    sweep finds the tries in the database) but they go out late.
    """
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(
            broker_url,
            socket_timeout=BROKER_SOCKET_TIMEOUT,
            socket_connect_timeout=BROKER_SOCKET_TIMEOUT,
        )
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        finally:
            client.close()
    except redis.RedisError as exc:  # a managed Redis may refuse CONFIG
        log.info("could not read the broker's maxmemory-policy: %s", exc.__class__.__name__)
        return None
    if policy and policy != "noeviction":
        return (
            f"the Redis broker's maxmemory-policy is {policy}: when full, Redis may evict "
            "queued tasks (beat's sweep resends them, late); set maxmemory-policy noeviction"
        )
    return None


@signals.worker_init.connect
def _elastic_thread_pool(sender=None, **_kwargs) -> None:
    # Before the pool is made: `--pool threads` runs webhooks_worker.thread_pool's pool,
    # so that every command line (Procfile, compose, tests) stays Celery's own.
    if sender is not None and get_implementation(sender.pool_cls) is get_implementation("threads"):
        sender.pool_cls = ElasticThreadPool


# Due countdown tasks keep their place in the prefetch window until they start
# (webhooks_worker.fair_share).
app.steps["consumer"].add(PoolSeesPrefetchWindow)


@signals.worker_init.connect
def _skip_pre_ping(**_kwargs) -> None:
    # Before any task runs: a ping per transaction is a round trip on the hot path.
    db.skip_pre_ping()


@signals.worker_ready.connect
@signals.worker_process_init.connect
def _freeze_startup_objects(**_kwargs) -> None:
    # Celery, kombu, SQLAlchemy and our modules leave ~130,000 long-lived objects that every
    # full collection walks with the GIL held: 114 ms with all 128 threads stopped, seen in
    # the benchmark's latency scenario. Frozen, a full collection walks only what came since.
    gc.freeze()


@signals.worker_ready.connect
def _warn_of_slower_or_unsafe_broker_settings(**_kwargs) -> None:
    warning = broker_eviction_warning(get_settings().broker_url)
    if warning:
        log.warning(warning)
    if app.conf.broker_transport == broker.TRANSPORT:  # the channel that would batch reads
        slower = compat.inactive_reason()
        if slower:
            log.warning(slower)


_heartbeat: presence.Heartbeat | None = None


@signals.worker_ready.connect
def _announce_presence(sender=None, **_kwargs) -> None:
    # Only where a control ping cannot find the worker (webhooks_worker.presence).
    global _heartbeat
    settings = get_settings()
    if presence.broadcasts(settings.broker_url) or _heartbeat is not None:
        return
    name = f"{getattr(sender, 'hostname', None) or 'worker'}.{os.getpid()}"
    _heartbeat = presence.Heartbeat(presence.presence_dir(settings.data_dir), name)
    _heartbeat.start()


@signals.worker_shutdown.connect
def _withdraw_presence(**_kwargs) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
