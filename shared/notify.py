"""Live events for the socket (docs/api.md §7), published from any process through the broker.

Workers, beat and api processes all publish through python-socketio's write-only client
manager on the broker; every api process listens on the same channel and relays each
event to the sockets in the event's rooms. On Redis the manager's PUBLISHes leave with
the process's courier (``shared.courier``: one pipeline every few milliseconds, with the
metrics counters), so a delivery thread only encodes its event; on other brokers one
background thread per process sends them.
Nothing here raises: a live event is a courtesy on top of the database, so a broker
hiccup is logged and the caller goes on.

Rooms (docs/api.md §3 visibility): root and admin join ``org:<id>:all``; a member joins
``org:<id>:account`` and ``user:<id>``. Every event goes to the organization's admin
room plus exactly one member-visible room: the account room for an account-scoped
endpoint, its owner's user room for a user-scoped one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Settings, get_settings
from .courier import Courier, get_courier
from .courier import flush_all as flush_courier
from .db import after_commit, get_sessionmaker
from .models import Endpoint
from .schemas import AttemptEventSchema, EndpointSchema

log = logging.getLogger(__name__)

ATTEMPT_EVENTS = ("webhook.delivered", "webhook.failed")
ENDPOINT_EVENTS = (
    "endpoint.created",
    "endpoint.updated",
    "endpoint.deleted",
    "endpoint.disabled",
    "endpoint.failing",
)
# Live events older than this are dropped by a queue-based relay (embedded broker): a
# dashboard that was away does not want a minute-old replay, it reloads what it shows.
STALE_AFTER_SECONDS = 30.0
# The relay gives up connecting to Redis after this long (and tries again).
CONNECT_TIMEOUT_SECONDS = 2.0


def admin_room(organization_id: str) -> str:
    """The room of an organization's root and admin sockets: they see every endpoint."""
    return f"org:{organization_id}:all"


def account_room(organization_id: str) -> str:
    """The room of an organization's member sockets, for account-scoped endpoints."""
    return f"org:{organization_id}:account"


def user_room(user_id: str) -> str:
    """The room of one member's sockets, for the endpoints that member owns."""
    return f"user:{user_id}"


def rooms_for_principal(*, organization_id: str, user_id: str, role: str) -> list[str]:
    """The rooms a socket of this user joins."""
    if role in ("root", "admin"):
        return [admin_room(organization_id)]
    return [account_room(organization_id), user_room(user_id)]


def rooms_for_endpoint(*, organization_id: str, scope: str, user_id: str | None) -> list[str]:
    """The admin room plus the one member room that can see this endpoint."""
    if scope == "user" and user_id:
        return [admin_room(organization_id), user_room(user_id)]
    if scope == "user":
        # A user-scoped endpoint whose owner was removed: only root and admin see it.
        return [admin_room(organization_id)]
    return [admin_room(organization_id), account_room(organization_id)]


def channel_name(settings: Settings) -> str:
    """The pub/sub channel, per Redis database so that deployments sharing a server stay apart."""
    url = settings.redis_url or settings.broker_url
    db = urlparse(url).path.strip("/") if url.startswith(("redis://", "rediss://")) else ""
    return f"webhooks-socket.{db or 0}"


def _redis_relay_url(settings: Settings) -> str | None:
    return settings.redis_url or (settings.broker_url if settings.uses_redis else None)


def make_client_manager(settings: Settings, *, write_only: bool) -> Any:
    """The Socket.IO client manager on the configured broker, or None for the embedded one.

    Redis (``REDIS_URL``, else a Redis broker URL) uses python-socketio's RedisManager
    (pub/sub: every api process relays every event); other kombu brokers its
    KombuManager (a fanout exchange). kombu's SQLAlchemy transport (the embedded broker)
    keeps exchange bindings in each process's memory, so a fanout published by a worker
    would reach no api process: there the api runs a ``QueueRelay`` instead, with
    python-socketio's in-process manager.
    """
    import socketio

    channel = channel_name(settings)
    redis_url = _redis_relay_url(settings)
    if redis_url:
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if write_only:  # a listener waits on its subscription as long as it likes
            options["socket_timeout"] = CONNECT_TIMEOUT_SECONDS
        manager = socketio.RedisManager(
            redis_url, channel=channel, write_only=write_only, redis_options=options
        )
        if write_only:
            # The manager builds python-socketio's own message and hands it to the Redis
            # client in its public ``redis`` attribute: the courier stands in for that
            # client, so a burst of attempts' events is one pipeline instead of a round
            # trip each. Should a later python-socketio call something else on it, its
            # publish fails, the manager reconnects with a Redis client of its own and
            # publishes directly: slower, never lost.
            manager.redis = CourierRedis(get_courier(redis_url))
            manager.connected = True
        return manager
    if settings.broker_url.startswith("sqla+"):
        return None
    return socketio.KombuManager(settings.broker_url, channel=channel, write_only=write_only)


class CourierRedis:
    """The one Redis method a write-only manager publishes with, sent by the courier."""

    def __init__(self, courier: Courier) -> None:
        self.courier = courier

    def publish(self, channel: str, payload: str | bytes) -> int:
        """Queue ``payload`` for the courier's next pipeline (no receiver count is known)."""
        self.courier.publish(channel, payload)
        return 0


class QueueRelay:
    """Live events over one named queue of the embedded broker (kombu's SimpleQueue).

    The queue lives in the broker's database, so a worker's events reach the api process
    that reads it (the embedded mode runs exactly one). Events older than
    STALE_AFTER_SECONDS are dropped on the way out: a dashboard that was away does not
    want a replay, it reloads what it shows.
    """

    def __init__(self, broker_url: str, channel: str) -> None:
        self.broker_url = broker_url
        self.channel = channel
        self._connection: Any = None
        self._queue: Any = None

    def emit(self, event: str, data: dict, namespace: str = "/", room: Any = None) -> None:
        """Put one event on the queue (the signature of a client manager's ``emit``)."""
        if self._queue is None:
            import kombu

            self._connection = kombu.Connection(self.broker_url)
            self._queue = self._connection.SimpleQueue(self.channel)
        self._queue.put(
            {"event": event, "data": data, "rooms": room, "namespace": namespace,
             "sentAt": time.time()}
        )  # fmt: skip

    def relay(self, deliver: Callable[[str, dict, Any, str], None], *, wait: float = 1.0) -> int:
        """Hand every waiting fresh event to ``deliver(event, data, rooms, namespace)``.

        Waits up to ``wait`` seconds for the first one; returns how many were delivered.
        """
        import kombu

        with kombu.Connection(self.broker_url) as connection:
            queue = connection.SimpleQueue(self.channel)
            try:
                return self._drain(queue, deliver, wait)
            finally:
                queue.close()

    def run(self, deliver: Callable[[str, dict, Any, str], None]) -> None:
        """Relay for ever (the api's background task); a broker error is logged and retried."""
        import kombu

        while True:
            try:
                with kombu.Connection(self.broker_url) as connection:
                    queue = connection.SimpleQueue(self.channel)
                    try:
                        while True:
                            self._drain(queue, deliver, 1.0)
                    finally:
                        queue.close()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any one failure
                log.warning("live event relay: %s; retrying", exc)
                time.sleep(CONNECT_TIMEOUT_SECONDS)

    @staticmethod
    def _drain(queue: Any, deliver: Callable[[str, dict, Any, str], None], wait: float) -> int:
        delivered = 0
        timeout: float | None = wait
        while True:
            try:
                message = queue.get(block=timeout is not None, timeout=timeout)
            except queue.Empty:
                return delivered
            timeout = None  # drain what else is there, without waiting
            message.ack()
            body = message.payload
            if not isinstance(body, dict):
                continue
            if time.time() - float(body.get("sentAt") or 0) > STALE_AFTER_SECONDS:
                continue
            deliver(body["event"], body["data"], body.get("rooms"), body.get("namespace") or "/")
            delivered += 1


def make_relay(settings: Settings) -> QueueRelay | None:
    """The embedded broker's relay, or None where a client manager relays (make_client_manager)."""
    if _redis_relay_url(settings) or not settings.broker_url.startswith("sqla+"):
        return None
    return QueueRelay(settings.broker_url, channel_name(settings))


# Live events waiting for the publishing thread; the oldest are dropped beyond this (a
# broker that is away for long loses courtesy events, never work).
MAX_PENDING = 10_000


class _Publisher:
    """Emits every live event through the process's write-only manager.

    A manager whose publishes go to the courier (Redis) never waits on the broker and
    shares nothing between calls but the courier's locked buffer, so the calling thread
    emits itself: handing each event to another thread cost more than encoding it. Any
    other manager is used by one background thread only (kombu connections are not
    thread-safe), and a delivery thread only appends to its queue.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, dict, list[str]]] = deque(maxlen=MAX_PENDING)
        self._ready = threading.Condition(self._lock)
        self._manager: Any = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._busy = False
        # The manager when the calling thread emits itself (its publishes are buffered).
        self._direct: Any = None

    def emit(self, event: str, data: dict, rooms: list[str]) -> None:
        direct = self._direct
        if direct is not None and self._pid == os.getpid():
            direct.emit(event, data, namespace="/", room=rooms)
            return
        with self._lock:
            if self._pid != os.getpid():  # a forked child has no thread and no connection
                self._pid, self._manager, self._thread = os.getpid(), None, None
                self._direct = None
                self._pending.clear()
            if self._manager is None and not self._pending and not self._busy:
                self._manager = self._build()
                if _buffered(self._manager):
                    self._direct = self._manager
            if self._direct is not None:
                self._direct.emit(event, data, namespace="/", room=rooms)
                return
            self._pending.append((event, data, rooms))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="live-events", daemon=True)
                self._thread.start()
                atexit.register(self.flush, CONNECT_TIMEOUT_SECONDS)  # a normal exit sends them
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending:
                    self._busy = False
                    self._ready.notify_all()
                    self._ready.wait()
                event, data, rooms = self._pending.popleft()
                self._busy = True
            try:
                self._send(event, data, rooms)
            except Exception as exc:  # noqa: BLE001 - a live event never breaks anything
                log.warning("live event %s not published: %s", event, exc)

    def _send(self, event: str, data: dict, rooms: list[str]) -> None:
        if self._manager is None:
            self._manager = self._build()
        self._manager.emit(event, data, namespace="/", room=rooms)

    @staticmethod
    def _build() -> Any:
        settings = get_settings()
        return make_relay(settings) or make_client_manager(settings, write_only=True)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was handed to the broker; False on timeout."""
        with self._lock:
            handed = self._ready.wait_for(lambda: not self._pending and not self._busy, timeout)
        flush_courier()
        return handed

    def reset(self) -> None:
        with self._lock:
            self._manager = None
            self._direct = None


def _buffered(manager: Any) -> bool:
    return isinstance(getattr(manager, "redis", None), CourierRedis)


_publisher = _Publisher()


def reset() -> None:
    """Forget the publisher's manager (tests that change the settings)."""
    _publisher.reset()


def flush(timeout: float = CONNECT_TIMEOUT_SECONDS * 2) -> bool:
    """Send the live events this process queued now (tests, and at exit)."""
    return _publisher.flush(timeout)


def publish(event: str, data: dict, *, rooms: list[str]) -> bool:
    """Queue one live event for the given rooms on every api process; False if it failed."""
    try:
        _publisher.emit(event, data, rooms)
    except Exception as exc:  # noqa: BLE001 - a live event never breaks its caller
        log.warning("live event %s not published: %s", event, exc)
        return False
    return True


# One instance each, shared by every thread: a schema keeps no state between dumps, and
# building one costs several times what a dump does (the worker publishes per attempt).
_ENDPOINT = EndpointSchema()
_ATTEMPT_EVENT = AttemptEventSchema()


def publish_endpoint_event(event: str, endpoint_id: str) -> bool:
    """Publish ``endpoint.*`` for an endpoint as it is now in the database."""
    try:
        with get_sessionmaker()() as session:
            endpoint = session.get(Endpoint, endpoint_id)
            if endpoint is None:
                return False
            # The organization service's endpoint, exactly as its REST answers show it.
            data = {
                "organizationId": endpoint.organization_id,
                "endpoint": _ENDPOINT.dump(endpoint),
            }
            rooms = rooms_for_endpoint(
                organization_id=endpoint.organization_id,
                scope=endpoint.scope,
                user_id=endpoint.user_id,
            )
    except Exception as exc:  # noqa: BLE001 - a live event never breaks its caller
        log.warning("live event %s for %s not published: %s", event, endpoint_id, exc)
        return False
    return publish(event, data, rooms=rooms)


def endpoint_event_after_commit(session: Session, event: str, endpoint_id: str) -> None:
    """Publish ``endpoint.*`` once the session commits; a rolled-back change says nothing."""
    after_commit(session, lambda: publish_endpoint_event(event, endpoint_id))


def attempt_event(outcome: Any, *, scope: str, owner_id: str | None) -> tuple[str, dict, list]:
    """The ``webhook.delivered``/``webhook.failed`` event of a recorded attempt, and its rooms.

    ``outcome`` is a ``shared.services.deliveries.Outcome`` with an attempt.
    """
    attempt = outcome.attempt
    data = _ATTEMPT_EVENT.dump(outcome)
    event = "webhook.delivered" if attempt.status == "success" else "webhook.failed"
    rooms = rooms_for_endpoint(
        organization_id=attempt.organization_id, scope=scope, user_id=owner_id
    )
    return event, data, rooms


def publish_attempt(outcome: Any) -> bool:
    """Publish the live event of a task's outcome; nothing when the task made no attempt."""
    if getattr(outcome, "attempt", None) is None:
        return False
    if getattr(outcome, "endpoint_scope", None) is not None:
        # The worker read the endpoint for the attempt already: no second query.
        event, data, rooms = attempt_event(
            outcome, scope=outcome.endpoint_scope, owner_id=outcome.endpoint_owner
        )
        return publish(event, data, rooms=rooms)
    try:
        with get_sessionmaker()() as session:
            row = session.execute(
                select(Endpoint.scope, Endpoint.user_id).where(
                    Endpoint.id == outcome.attempt.endpoint_id
                )
            ).first()
    except Exception as exc:  # noqa: BLE001 - a live event never breaks its caller
        log.warning("live event for delivery %s not published: %s", outcome.delivery_id, exc)
        return False
    if row is None:
        return False
    event, data, rooms = attempt_event(outcome, scope=row.scope, owner_id=row.user_id)
    return publish(event, data, rooms=rooms)
