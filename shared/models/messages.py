"""Messages, their per-endpoint deliveries, and every attempt made."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, utcnow


class Message(Base):
    """One reported event or one custom send, as accepted."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    # Canonical catalog type or a custom name.
    event_type: Mapped[str] = mapped_column(String(128))
    # The caller's idempotency key, unique per organization.
    event_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # The event's fields as reported (without event/timestamp), or the custom payload.
    # Plain JSON, not JSONB: JSONB reorders keys, and receivers get the fields in the
    # order the platform reported them.
    payload: Mapped[dict] = mapped_column(JSON)
    # The payloads' timestamp, formatted once (ISO 8601 UTC with milliseconds).
    timestamp: Mapped[str] = mapped_column(String(40))
    custom: Mapped[bool] = mapped_column(Boolean, default=False)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    # A test message goes to this endpoint only, whatever it subscribes to.
    target_endpoint_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The W3C traceparent of the request that reported it, when tracing is on: tries that
    # beat's sweep hands to the broker later continue the message's trace.
    trace_parent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set once the deliveries exist; null means the fan-out is still owed.
    fanned_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("organization_id", "event_id", name="uq_messages_org_event_id"),
        Index("ix_messages_org_created", "organization_id", "created_at", "id"),
        Index("ix_messages_org_type_created", "organization_id", "event_type", "created_at"),
        Index("ix_messages_fanout_owed", "fanned_out_at", "created_at"),
        Index("ix_messages_created", "created_at"),
    )


class Delivery(Base):
    """A message on its way to one endpoint: the truth about what is due."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    organization_id: Mapped[str] = mapped_column(String(40))
    # The name this delivery carries in its endpoint's format.
    event_type: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Scheduled tries made so far; try n is the n-th automatic attempt.
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # Manual and test attempts, which do not count against max_attempts.
    extra_attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A worker holds the try until then; an expired lease means the worker died.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a task for the current try was last handed to the broker (null: not yet).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    http_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Ordering (docs/api.md §11.3, migration 0007): the event's resource and this
    # delivery's place among that resource's deliveries to its endpoint. Both null when
    # the endpoint is unordered or the event has no resource: such a delivery is never held.
    resource_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    sequence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A later delivery of the same resource was made while this one was pending, and may
    # be parked behind it: this one's end must let the next go (migration 0009).
    # Defaulted by the database only: inserts that select their rows (``ingest_statements``)
    # would otherwise have to carry it.
    successor_waits: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The time the endpoint's rate limit gave this try (docs/api.md §11.6); null when it
    # did not have to wait.
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("message_id", "endpoint_id", name="uq_deliveries_message_endpoint"),
        Index("ix_deliveries_endpoint_created", "endpoint_id", "created_at"),
        # An endpoint's deliveries by status and, for ordered ones, by resource and sequence:
        # is an earlier delivery of a resource still pending, which one is next (migration
        # 0009). One index for both: with a separate ordering index, the planner took the
        # (endpoint, status) one whenever its statistics, gathered while few deliveries were
        # pending, rated "the endpoint's pending deliveries" as a handful, and filtered every
        # pending delivery of the endpoint for each lookup, exactly when a burst made them many.
        Index(
            "ix_deliveries_endpoint_status_order",
            "endpoint_id",
            "status",
            "resource_id",
            "sequence",
        ),
        # Pending deliveries with a due time, what the sweep and the gauges read; not every
        # pending delivery, so that no lookup of a resource's pending deliveries can take it
        # for a scan of them all (migration 0010).
        Index(
            "ix_deliveries_pending_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
            sqlite_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
        ),
        # Parked deliveries (no due time), for the gauges and the hourly stranded look.
        Index(
            "ix_deliveries_parked",
            "created_at",
            postgresql_where=text("status = 'pending' AND next_attempt_at IS NULL"),
            sqlite_where=text("status = 'pending' AND next_attempt_at IS NULL"),
        ),
        Index("ix_deliveries_org_status", "organization_id", "status", "message_id"),
        # Ended deliveries whose successor's release may still be owed (migration 0009).
        Index(
            "ix_deliveries_release_owed",
            "id",
            postgresql_where=text("successor_waits AND status <> 'pending'"),
            sqlite_where=text("successor_waits AND status <> 'pending'"),
        ),
        # Room in each page for the claim's heap-only update (migration 0002).
        {"postgresql_with": {"fillfactor": 70}},
    )

    @property
    def attempt_number(self) -> int:
        """Attempts made so far, scheduled, manual and test alike (the faces' attempt number)."""
        return self.attempt_count + self.extra_attempt_count


class Attempt(Base):
    """One HTTP request made for a delivery, whatever its outcome."""

    __tablename__ = "attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(40))
    organization_id: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))
    # The scheduled try this attempt was (null for manual and test attempts).
    try_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # A redelivered task can never record a second attempt for the same scheduled try.
        UniqueConstraint("delivery_id", "try_number", name="uq_attempts_delivery_try"),
        Index("ix_attempts_message_created", "message_id", "created_at"),
        Index("ix_attempts_created", "created_at"),
    )


class ManualRequest(Base):
    """A manual attempt asked for (a resend, a recover) and not made yet.

    The broker only carries the task; this row is what survives an emptied Redis, so
    beat's sweep can hand the task to the broker again. The attempt's record deletes it.
    """

    __tablename__ = "manual_requests"

    # The attempt id the request was given: its attempt row will carry it.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))
    # A worker making the attempt holds it until then (the endpoint's timeout and a margin).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a task for it was last handed to the broker.
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The time the endpoint's rate limit gave this attempt, when it had to wait.
    slot_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_manual_requests_enqueued", "enqueued_at"),
        Index("ix_manual_requests_delivery", "delivery_id"),
    )


class ResourceSequence(Base):
    """The last ``webhook-sequence`` an ordered endpoint's deliveries of one resource got.

    Upserted by each fan-out (docs/api.md §11.3); the row lock it takes is also what keeps
    two concurrent fan-outs of one resource in the order they were accepted.
    """

    __tablename__ = "resource_sequences"

    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    resource_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(Integer)
    # Untouched since the retention period: forgotten (shared.services.retention). Not
    # indexed, so that each fan-out's upsert of the counter stays a heap-only update.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
