"""Retention: messages and attempts older than WEBHOOKS_RETENTION_DAYS are purged."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ..config import get_settings
from ..models import Attempt, Delivery, Message, ResourceSequence, utcnow
from .deliveries.ordering import release_stranded

# Small batches, each its own transaction, so no table is locked for long.
PURGE_BATCH = 1000


def purge_expired(factory: sessionmaker[Session], *, max_batches: int = 1000) -> dict[str, int]:
    """Delete expired messages (with their deliveries and attempts) and expired attempts."""
    cutoff = utcnow() - timedelta(days=get_settings().retention_days)
    counts = {"messages": 0, "attempts": 0}
    for _ in range(max_batches):
        with factory() as session:
            ids = list(
                session.scalars(
                    select(Attempt.id).where(Attempt.created_at < cutoff).limit(PURGE_BATCH)
                )
            )
            if not ids:
                break
            session.execute(delete(Attempt).where(Attempt.id.in_(ids)))
            session.commit()
            counts["attempts"] += len(ids)
    for _ in range(max_batches):
        with factory() as session:
            ids = list(
                session.scalars(
                    select(Message.id).where(Message.created_at < cutoff).limit(PURGE_BATCH)
                )
            )
            if not ids:
                break
            delivery_ids = select(Delivery.id).where(Delivery.message_id.in_(ids))
            session.execute(delete(Attempt).where(Attempt.delivery_id.in_(delivery_ids)))
            session.execute(delete(Delivery).where(Delivery.message_id.in_(ids)))
            session.execute(delete(Message).where(Message.id.in_(ids)))
            session.commit()
            counts["messages"] += len(ids)
    counts["sequences"] = _purge_sequences(factory, cutoff)
    # An ordered delivery parked behind one just purged while pending goes now.
    with factory() as session:
        counts["released"] = release_stranded(session, utcnow())
        session.commit()
    return counts


def _purge_sequences(factory: sessionmaker[Session], cutoff: datetime) -> int:
    """Forget the ``webhook-sequence`` counters of resources unheard of since the cutoff.

    Their deliveries are gone with their messages; a resource heard of again after that
    long counts from 1 again (docs/api.md §11.3).
    """
    with factory() as session:
        purged = session.execute(
            delete(ResourceSequence).where(ResourceSequence.updated_at < cutoff)
        ).rowcount
        session.commit()
    return purged
