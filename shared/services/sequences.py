"""The ``webhook-sequence`` of deliveries to ordered endpoints, given at fan-out.

docs/api.md §11.3: each delivery of one resource (the event's ``id``) to an ordered
endpoint is numbered 1, 2, 3, ... in the order the service accepted the messages. The
numbers come from one counter row per (endpoint, resource), upserted in the fan-out's
own transaction: the upsert returns the new last number and keeps the row locked until
the fan-out commits, so a second fan-out of the same resource (another request, another
worker) waits for the first and numbers after it. Within one fan-out, messages are
numbered in the order given (an ingest array's order).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import Delivery, DeliveryStatus, Ordering, ResourceSequence

_S = ResourceSequence.__table__
_D = Delivery.__table__
# ``status = 'pending'`` written into the ordering statements (here and in
# ``deliveries.ordering``), not bound: the claim and the release are prepared once per
# connection (``shared.db.autocommit_rows``), and their generic plan must see the status
# as what it is to rate the ordering index (``ix_deliveries_endpoint_status_order``) on
# endpoint, status and resource; with a parameter it walked every pending delivery of
# the endpoint instead.
PENDING_LITERAL = literal_column(f"'{DeliveryStatus.PENDING.value}'")


def resource_of(message: Any) -> str | None:
    """The resource a message's deliveries are ordered by: a platform event's ``id``.

    Custom sends and test messages have none (docs/api.md §11.3: never held).
    """
    if message.custom or message.test:
        return None
    resource = message.payload.get("id") if isinstance(message.payload, dict) else None
    return resource if isinstance(resource, str) and resource else None


def ordered_endpoints(endpoints_by_org: dict[str, list]) -> set[str]:
    """The ids of the ordered endpoints among a fan-out's targets."""
    return {
        endpoint.id
        for endpoints in endpoints_by_org.values()
        for endpoint in endpoints
        if getattr(endpoint, "ordering", Ordering.NONE) == Ordering.RESOURCE
    }


def assign_sequences(
    session: Session, keys: Sequence[tuple[str, str]], *, now: datetime
) -> list[int]:
    """The next sequence of each (endpoint, resource) in ``keys``, in the order given.

    One statement for the whole fan-out. Counters are taken in a fixed order (sorted),
    so two fan-outs sharing several resources cannot deadlock on each other's rows.
    """
    if not keys:
        return []
    counts: dict[tuple[str, str], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts)
    last = _upsert(session, ordered, [counts[k] for k in ordered], now)
    # The fan-out's numbers for a key are the last ``count`` up to the counter's new value.
    next_of = {key: last[key] - counts[key] + 1 for key in ordered}
    sequences = []
    for key in keys:
        sequences.append(next_of[key])
        next_of[key] += 1
    return sequences


def _upsert(
    session: Session, keys: list[tuple[str, str]], counts: list[int], now: datetime
) -> dict[tuple[str, str], int]:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        rows = select(
            func.unnest(literal([k[0] for k in keys], ARRAY(String))).label("endpoint_id"),
            func.unnest(literal([k[1] for k in keys], ARRAY(String))).label("resource_id"),
            func.unnest(literal(counts, ARRAY(Integer))).label("last_sequence"),
        ).subquery()
        stmt = postgresql.insert(_S).from_select(
            ["endpoint_id", "resource_id", "last_sequence", "updated_at"],
            select(rows.c.endpoint_id, rows.c.resource_id, rows.c.last_sequence, func.now())
            .select_from(rows)
            .order_by(rows.c.endpoint_id, rows.c.resource_id),
        )
    else:
        stmt = sqlite.insert(_S).values(
            [
                {"endpoint_id": e, "resource_id": r, "last_sequence": n, "updated_at": now}
                for (e, r), n in zip(keys, counts, strict=True)
            ]
        )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_S.c.endpoint_id, _S.c.resource_id],
        set_={
            "last_sequence": _S.c.last_sequence + stmt.excluded.last_sequence,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(_S.c.endpoint_id, _S.c.resource_id, _S.c.last_sequence)
    return {(e, r): n for e, r, n in connection.execute(stmt)}


_KEYS = select(
    func.unnest(cast(bindparam("endpoint_ids"), ARRAY(String))).label("endpoint_id"),
    func.unnest(cast(bindparam("resource_ids"), ARRAY(String))).label("resource_id"),
    func.unnest(cast(bindparam("sequences"), ARRAY(Integer))).label("sequence"),
).subquery("keys")


# The delivery just before each new one (its key, the sequence before), marked if still
# pending. One exact lookup per key on the ordering index (endpoint, status, resource,
# sequence). ``status`` is asked of the marked row itself:
# PostgreSQL checks it again on the row's newest version when the row was changed
# meanwhile, so a delivery that just ended is not marked.
def _mark(endpoint_id: Any, resource_id: Any, sequence: Any) -> Any:
    return (
        update(_D)
        .where(
            _D.c.endpoint_id == endpoint_id,
            _D.c.resource_id == resource_id,
            _D.c.sequence == sequence,
            _D.c.status == PENDING_LITERAL,
        )
        .values(successor_waits=True)
        .returning(_D.c.endpoint_id, _D.c.resource_id)
    )


_MARK_MANY = _mark(_KEYS.c.endpoint_id, _KEYS.c.resource_id, _KEYS.c.sequence)
_MARK_ONE = _mark(bindparam("k_endpoint_id"), bindparam("k_resource_id"), bindparam("k_sequence"))


def wait_in_line(session: Session, keys: list[tuple[str, str, int]]) -> set[tuple[str, str]]:
    """Of these (endpoint, resource, sequence before) keys, those whose delivery before is
    still pending: the fan-out's new delivery of such a key is made parked behind it.

    The delivery before is marked in the fan-out's transaction, and its end releases the
    next one. When it has ended already the new one is made due; an earlier delivery
    still pending (the one before ended out of turn, by a manual resend) then holds it at
    its claim (``deliveries.ordering``), and that one was marked when a later one was
    made. Run in the transaction that took the keys' sequences
    (``assign_sequences``), which keeps any other fan-out of them out until it commits.
    """
    if not keys:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        endpoint_ids, resource_ids, numbers = (list(column) for column in zip(*keys, strict=True))
        rows = session.execute(
            _MARK_MANY,
            {"endpoint_ids": endpoint_ids, "resource_ids": resource_ids, "sequences": numbers},
        )
        return {(e, r) for e, r in rows}
    # SQLite: the fan-out's transaction holds the database's write lock already.
    waiting = set()
    for endpoint_id, resource_id, number in keys:
        row = session.execute(
            _MARK_ONE,
            {"k_endpoint_id": endpoint_id, "k_resource_id": resource_id, "k_sequence": number},
        ).first()
        if row is not None:
            waiting.add((endpoint_id, resource_id))
    return waiting
