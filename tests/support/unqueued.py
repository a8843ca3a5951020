"""Deliveries that exist in the database but were never handed to the broker."""

from __future__ import annotations

from sqlalchemy import select

from shared import queue
from shared.db import session_scope
from shared.models import Delivery
from shared.services import fanout, ingest


def accept_without_broker(organization_id: str, **fields) -> str:
    """Accept a sandbox.state.updated event and fan it out with no broker; the delivery id.

    As if every enqueue had been lost: tests then drive the tries (or the sweep) themselves.
    There must be exactly one matching endpoint.
    """
    event = {
        "event": "sandbox.state.updated",
        "organizationId": organization_id,
        "id": "sbx-1",
        "oldState": "started",
        "newState": "stopped",
        **fields,
    }
    sender = queue._sender
    queue.configure(None)
    try:
        with session_scope() as session:
            accepted = ingest.ingest_events(session, raw_events=[event], single=True)
            message_id = accepted[0].message.id
        with session_scope() as session:
            fanout.fan_out(session, message_ids=[message_id])
    finally:
        queue.configure(sender)
    with session_scope() as session:
        return session.scalars(select(Delivery.id).where(Delivery.message_id == message_id)).one()
