"""Live events for the socket (docs/api.md §7), published from any process through the broker.

Workers, beat and api processes all publish through a write-only Socket.IO client
manager on the broker; every api process listens on the same channel and relays each
event to the sockets in the event's rooms. Nothing here raises: a live event is a
courtesy on top of the database, so a broker hiccup is logged and the caller goes on.

Rooms (docs/api.md §3 visibility): root and admin join ``org:<id>:all``; a member joins
``org:<id>:account`` and ``user:<id>``. Every event goes to the organization's admin
room plus exactly one member-visible room: the account room for an account-scoped
endpoint, its owner's user room for a user-scoped one.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import Settings, get_settings
from .courier import get_courier
from .db import after_commit, get_sessionmaker
from .models import Endpoint
from .schemas import AttemptEventSchema, EndpointSchema

log = logging.getLogger(__name__)

ATTEMPT_EVENTS = ("webhook.delivered", "webhook.failed")
ENDPOINT_EVENTS = ("endpoint.created", "endpoint.updated", "endpoint.deleted", "endpoint.disabled")
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


def make_client_manager(settings: Settings, *, write_only: bool) -> Any:
    """The Socket.IO client manager on the configured broker.

    Redis (``REDIS_URL``, else a Redis broker URL) uses pub/sub, so every api process
    relays every event. Other kombu brokers use a fanout exchange. kombu's SQLAlchemy
    transport (the embedded broker) keeps exchange bindings in each process's memory, so a
    fanout published by a worker would reach no api process: it gets a named queue
    instead, which relays to one api process (the embedded mode runs exactly one).
    """
    import socketio

    channel = channel_name(settings)
    redis_url = settings.redis_url or (settings.broker_url if settings.uses_redis else None)
    if redis_url and write_only:
        return _buffered_manager_class()(redis_url, channel=channel, write_only=True)
    if redis_url:
        options: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_SECONDS}
        return socketio.RedisManager(
            redis_url, channel=channel, write_only=False, redis_options=options
        )
    if settings.broker_url.startswith("sqla+"):
        return _queue_manager_class()(settings.broker_url, channel=channel, write_only=write_only)
    return socketio.KombuManager(settings.broker_url, channel=channel, write_only=write_only)


@lru_cache(maxsize=1)
def _buffered_manager_class() -> type:
    import socketio

    class BufferedRedisManager(socketio.RedisManager):
        """A publisher whose messages leave with the process's courier (shared.courier):
        a delivery thread never waits on Redis, and a burst of attempts is one pipeline."""

        name = "redis-buffered"
        # Encoding touches no shared state and the courier has a lock of its own, so
        # threads may emit at once (shared.notify._Publisher).
        thread_safe = True

        def _publish(self, data: dict) -> None:
            get_courier(self.redis_url).publish(self.channel, self.json.dumps(data))

    return BufferedRedisManager


@lru_cache(maxsize=1)
def _queue_manager_class() -> type:
    import kombu
    import socketio

    class QueueManager(socketio.KombuManager):
        """A relay over one named queue, for kombu transports without cross-process fanout."""

        name = "kombu-queue"

        def _queue(self) -> kombu.Queue:
            # The default exchange routes by queue name on every kombu transport, including
            # the SQLAlchemy one, whose named queues live in the shared broker database.
            return kombu.Queue(self.channel, kombu.Exchange(""), routing_key=self.channel)

        def _producer_publish(self, connection: kombu.Connection):
            producer = connection.Producer(exchange=kombu.Exchange(""))
            publish = connection.ensure(producer, producer.publish)
            return lambda body: publish(body, routing_key=self.channel)

        def _publish(self, data: dict) -> None:
            super()._publish({**data, "sentAt": time.time()})

        def _listen(self):
            for message in super()._listen():
                try:
                    decoded = self.json.loads(message) if isinstance(message, str) else message
                    sent_at = float(decoded.get("sentAt", 0))
                except (ValueError, TypeError, AttributeError):
                    sent_at = 0.0
                if time.time() - sent_at <= STALE_AFTER_SECONDS:
                    yield message

    return QueueManager


class _Publisher:
    """A lazily built write-only manager, serialized unless it says it is thread-safe:
    kombu connections are not, and the worker runs many delivery threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._manager: Any = None

    def emit(self, event: str, data: dict, rooms: list[str]) -> None:
        manager = self._manager or self._build()
        if getattr(manager, "thread_safe", False):
            manager.emit(event, data, namespace="/", room=rooms)
            return
        with self._lock:
            manager.emit(event, data, namespace="/", room=rooms)

    def _build(self) -> Any:
        with self._lock:
            if self._manager is None:
                self._manager = make_client_manager(get_settings(), write_only=True)
            return self._manager

    def reset(self) -> None:
        with self._lock:
            self._manager = None


_publisher = _Publisher()


def reset() -> None:
    """Forget the publisher (tests, and after a fork)."""
    _publisher.reset()


def publish(event: str, data: dict, *, rooms: list[str]) -> bool:
    """Send one live event to the given rooms on every api process; False if it failed."""
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
