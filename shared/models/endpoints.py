"""Endpoints: where an organization's messages are delivered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, UTCDateTime, utcnow


class Endpoint(Base):
    """A receiver URL with its subscriptions, format, limits and (encrypted) signing secrets."""

    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    # Null for account-scoped endpoints.
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    scope: Mapped[str] = mapped_column(String(16), default="user")
    url: Mapped[str] = mapped_column(String(2048))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    event_types: Mapped[list] = mapped_column(JSONType, default=list)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload_format: Mapped[str] = mapped_column(String(16), default="envelope")
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=30)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    # Preconfigured category (sandbox-events, ...), "team-hook", or null.
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # Every rotated-out secret still signing: a JSON list of {secret: <Fernet token>,
    # expiresAt} (migration 0003; services.endpoint_secrets.previous_secrets reads it), and the last
    # of their expiries. Singular names from 0001, kept: the worker's claim reads them.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Start of the current run of consecutive failures (auto-disable clock); null when healthy.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Endpoints are soft-deleted so that their deliveries and attempts stay on record.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Why the service deleted it by itself ("resource ended", "expired"); null otherwise.
    deleted_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The options of docs/api.md §11 (migration 0006).
    # Custom headers: one Fernet token of a JSON object, since values often carry a
    # receiver's credentials.
    headers_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Payload filter as given; null for none.
    filter: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    # Server default only: rows written by code older than migration 0006 get it too.
    ordering: Mapped[str] = mapped_column(String(16), server_default="none")
    # Attempts per second; null for no limit.
    rate_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The one resource (an event's id) the endpoint is bound to; null for none.
    resource_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When endpoint.failing was reported for the current failing streak (once per streak).
    failing_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The last failure as reported with that notice, the warning's cause (migration 0008).
    failing_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failing_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A receiver's Retry-After on a 429 or 503 holds every try of the endpoint until then
    # (docs/api.md §11.6; migration 0007).
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_endpoints_org_live", "organization_id", "created_at"),
        # One team hook per organization (docs/api.md §6.3), and one endpoint per
        # preconfigured category.
        Index(
            "uq_endpoints_org_category",
            "organization_id",
            "category",
            unique=True,
            postgresql_where=text("deleted_at IS NULL AND category IS NOT NULL"),
            sqlite_where=text("deleted_at IS NULL AND category IS NOT NULL"),
        ),
        Index(
            "ix_endpoints_expiring",
            "expires_at",
            postgresql_where=text("deleted_at IS NULL AND expires_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NULL AND expires_at IS NOT NULL"),
        ),
        # Failing streaks not reported yet (beat's endpoint.failing look, migration 0008).
        Index(
            "ix_endpoints_failing_unnoticed",
            "failing_since",
            postgresql_where=text(
                "deleted_at IS NULL AND failing_since IS NOT NULL AND failing_notified_at IS NULL"
            ),
            sqlite_where=text(
                "deleted_at IS NULL AND failing_since IS NOT NULL AND failing_notified_at IS NULL"
            ),
        ),
        Index(
            "ix_endpoints_org_resource",
            "organization_id",
            "resource_id",
            postgresql_where=text("deleted_at IS NULL AND resource_id IS NOT NULL"),
            sqlite_where=text("deleted_at IS NULL AND resource_id IS NOT NULL"),
        ),
    )

    @property
    def status(self) -> str:
        """``active`` or ``disabled``, as every face shows an endpoint's state."""
        return "active" if self.is_active else "disabled"

    @property
    def failing_notice(self) -> dict | None:
        """The standing endpoint.failing notice with its cause, or None (docs/api.md §11.5)."""
        if self.failing_notified_at is None:
            return None
        return {
            "since": self.failing_since,
            "notified_at": self.failing_notified_at,
            "last_status_code": self.failing_status_code,
            "last_error": self.failing_error,
        }
