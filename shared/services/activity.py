"""Following activity: new messages and attempts as they are written (``messages tail``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ..models import (
    Attempt,
    Delivery,
    Message,
    utcnow,
)


@dataclass
class Activity:
    """A new message or a new attempt, as ``messages tail`` shows it."""

    kind: str  # "message" or "attempt"
    id: str
    created_at: datetime
    organization_id: str
    message_id: str
    event_type: str | None = None
    endpoint_id: str | None = None
    delivery_id: str | None = None
    status: str | None = None
    status_code: int | None = None
    duration_ms: int | None = None
    trigger: str | None = None
    url: str | None = None
    error: str | None = None
    # A message's own: the caller's eventId, and whether it is a test or a custom send.
    event_id: str | None = None
    test: bool = False
    custom: bool = False


# Rows get their created_at before their transaction commits, so a row can become visible
# after newer ones. Every few polls the tail looks back this far for rows it has not shown
# yet: a writer's transaction (one attempt, one api request) commits well within it.
TAIL_OVERLAP = timedelta(seconds=5)
TAIL_LATE_EVERY = 4
TAIL_BATCH = 500
TAIL_LATE_BATCH = 5000


def _bounded(
    model: Any,
    *,
    after: tuple[datetime, str] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> Any:
    """Rows after a (created_at, id) keyset, or created within a window (both ends in)."""
    if after is not None:
        created, last_id = after
        return or_(
            model.created_at > created, and_(model.created_at == created, model.id > last_id)
        )
    assert window is not None
    return model.created_at.between(*window)


class _Stream:
    """One table followed by ``ActivityTail``: its cursor and the ids shown near it."""

    def __init__(self, fetch: Callable[..., list[Activity]], cursor: datetime) -> None:
        self.fetch = fetch
        # A keyset: rows of one batch share their created_at, so the id breaks ties.
        self.cursor = cursor
        self.cursor_id = ""
        self.seen: OrderedDict[str, datetime] = OrderedDict()

    def take(self, found: list[Activity]) -> list[Activity]:
        fresh = [a for a in found if a.id not in self.seen]
        for item in fresh:
            self.seen[item.id] = item.created_at
            if (item.created_at, item.id) > (self.cursor, self.cursor_id):
                self.cursor, self.cursor_id = item.created_at, item.id
        horizon = self.cursor - TAIL_OVERLAP
        for item_id, created in list(self.seen.items()):
            if created < horizon:
                del self.seen[item_id]
        return fresh


class ActivityTail:
    """Follows new messages and attempts by polling their ``created_at`` indexes.

    Each table has its own cursor. A poll reads the rows created at or after it (a
    bounded batch, so a burst is worked through in order); every few polls it also
    reads the overlap window behind it for rows whose transaction committed late. Ids
    already shown are skipped, so nothing is printed twice.
    """

    def __init__(
        self,
        factory: sessionmaker[Session] | Callable[[], Session],
        *,
        since: datetime | None = None,
        organization_id: str | None = None,
        endpoint_id: str | None = None,
    ) -> None:
        self.factory = factory
        self.cursor = since or utcnow()
        self.organization_id = organization_id
        self.endpoint_id = endpoint_id
        self._streams = (
            _Stream(self._messages, self.cursor),
            _Stream(self._attempts, self.cursor),
        )
        self._polls = 0

    def poll(self) -> list[Activity]:
        """New activity since the previous poll, oldest first."""
        self._polls += 1
        late = self._polls % TAIL_LATE_EVERY == 0
        found: list[Activity] = []
        with self.factory() as session:
            for stream in self._streams:
                rows = stream.fetch(
                    session, after=(stream.cursor, stream.cursor_id), limit=TAIL_BATCH
                )
                if late:
                    rows += stream.fetch(
                        session,
                        window=(stream.cursor - TAIL_OVERLAP, stream.cursor),
                        limit=TAIL_LATE_BATCH,
                    )
                found += stream.take(rows)
        found.sort(key=lambda a: (a.created_at, 0 if a.kind == "message" else 1, a.id))
        return found

    def follow(self, interval: float, sleep: Callable[[float], None]) -> Iterator[Activity]:
        """Poll forever, ``interval`` seconds apart, yielding activity as it appears."""
        while True:
            yield from self.poll()
            sleep(interval)

    def _messages(self, session: Session, *, limit: int, **bounds: Any) -> list[Activity]:
        query = select(Message).where(_bounded(Message, **bounds))
        if self.organization_id:
            query = query.where(Message.organization_id == self.organization_id)
        if self.endpoint_id:
            # Messages with a delivery to this endpoint (the fan-out may come a moment later).
            query = query.where(
                select(Delivery.id)
                .where(Delivery.message_id == Message.id, Delivery.endpoint_id == self.endpoint_id)
                .exists()
            )
        query = query.order_by(Message.created_at, Message.id).limit(limit)
        return [
            Activity(
                kind="message",
                id=m.id,
                created_at=m.created_at,
                organization_id=m.organization_id,
                message_id=m.id,
                event_type=m.event_type,
                event_id=m.event_id,
                test=m.test,
                custom=m.custom,
            )
            for m in session.scalars(query)
        ]

    def _attempts(self, session: Session, *, limit: int, **bounds: Any) -> list[Activity]:
        query = (
            select(Attempt, Delivery.event_type)
            .join(Delivery, Delivery.id == Attempt.delivery_id)
            .where(_bounded(Attempt, **bounds))
        )
        if self.organization_id:
            query = query.where(Attempt.organization_id == self.organization_id)
        if self.endpoint_id:
            query = query.where(Attempt.endpoint_id == self.endpoint_id)
        query = query.order_by(Attempt.created_at, Attempt.id).limit(limit)
        return [
            Activity(
                kind="attempt",
                id=a.id,
                created_at=a.created_at,
                organization_id=a.organization_id,
                message_id=a.message_id,
                event_type=event_type,
                endpoint_id=a.endpoint_id,
                delivery_id=a.delivery_id,
                status=a.status,
                status_code=a.status_code,
                duration_ms=a.duration_ms,
                trigger=a.trigger,
                url=a.url,
                error=a.error,
            )
            for a, event_type in session.execute(query)
        ]
