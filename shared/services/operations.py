"""What an operator does across organizations: the services behind the ``webhooks`` CLI.

The tenant-facing services act for a ``Principal`` inside one organization. An operator
at a shell on the servers already holds the database, so these act for the platform:
list every organization and endpoint, issue keys, disable and enable endpoints, follow
new messages and attempts, recover failed deliveries, and check the parts the service
depends on. Like every service, they take the session (or session factory) explicitly
and leave the transaction to the caller.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .. import notify
from ..errors import Invalid, NotFound
from ..models import (
    Attempt,
    Endpoint,
    Message,
    Organization,
    OrganizationInitialization,
    User,
    utcnow,
)
from . import deliveries, retention
from .auth import Principal
from .endpoint_stats import EndpointWithStats, with_stats
from .endpoints import disable_endpoint
from .organizations import create_api_key

# ---- organizations and keys ----------------------------------------------------------------


@dataclass
class OrganizationSummary:
    """An organization with the figures an operator looks at first."""

    organization: Organization
    initialization_status: str | None
    users: int
    endpoints: int


def list_organization_summaries(session: Session) -> list[OrganizationSummary]:
    """Every organization, oldest first, with its users, live endpoints and init status."""
    users = dict(
        session.execute(
            select(User.organization_id, func.count()).group_by(User.organization_id)
        ).all()
    )
    endpoints = dict(
        session.execute(
            select(Endpoint.organization_id, func.count())
            .where(Endpoint.deleted_at.is_(None))
            .group_by(Endpoint.organization_id)
        ).all()
    )
    rows = session.execute(
        select(Organization, OrganizationInitialization.status)
        .outerjoin(
            OrganizationInitialization,
            OrganizationInitialization.organization_id == Organization.id,
        )
        .order_by(Organization.created_at, Organization.id)
    ).all()
    return [
        OrganizationSummary(org, status, users.get(org.id, 0), endpoints.get(org.id, 0))
        for org, status in rows
    ]


def root_user(session: Session, *, organization_id: str) -> User:
    """The organization's root user (the oldest, should there be several)."""
    if session.get(Organization, organization_id) is None:
        raise NotFound(f"Organization {organization_id} not found")
    user = session.scalars(
        select(User)
        .where(User.organization_id == organization_id, User.role == "root")
        .order_by(User.created_at, User.id)
    ).first()
    if user is None:
        raise NotFound(f"Organization {organization_id} has no root user")
    return user


def issue_api_key(
    session: Session, *, user_id: str | None = None, organization_id: str | None = None
) -> tuple[User, str]:
    """A new API key for a user, or for an organization's root user; shown only now."""
    if (user_id is None) == (organization_id is None):
        raise Invalid("give either a user id or an organization id")
    if user_id is not None:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"User {user_id} not found")
    else:
        user = root_user(session, organization_id=organization_id or "")
    return user, create_api_key(session, user_id=user.id)


def operator_principal(organization_id: str) -> Principal:
    """The operator acting as the organization's root, for services that take a Principal.

    The operator already has the whole database; this only lets the CLI reuse the
    organization services (and their rules) instead of copying them. Nothing records
    this principal's user id.
    """
    return Principal(user_id="operator", organization_id=organization_id, role="root")


# ---- endpoints -----------------------------------------------------------------------------


def list_all_endpoints(
    session: Session,
    *,
    organization_id: str | None = None,
    status: str | None = None,
    url_contains: str | None = None,
    category: str | None = None,
    failing: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[EndpointWithStats], int]:
    """Live endpoints of every organization (or one), oldest first, with stats and total."""
    if status not in (None, "active", "disabled"):
        raise Invalid("status must be active or disabled")
    if not 1 <= limit <= 10_000:
        raise Invalid("limit must be between 1 and 10000")
    cond = Endpoint.deleted_at.is_(None)
    if organization_id:
        cond &= Endpoint.organization_id == organization_id
    if status:
        cond &= Endpoint.is_active.is_(status == "active")
    if url_contains:
        cond &= Endpoint.url.contains(url_contains, autoescape=True)
    if category:
        cond &= Endpoint.category == category
    if failing:
        cond &= Endpoint.failing_since.is_not(None)
    total = session.scalar(select(func.count()).select_from(Endpoint).where(cond)) or 0
    rows = list(
        session.scalars(
            select(Endpoint)
            .where(cond)
            .order_by(Endpoint.created_at, Endpoint.id)
            .offset(max(offset, 0))
            .limit(limit)
        )
    )
    return with_stats(session, rows), total


def _live_endpoint(session: Session, endpoint_id: str) -> Endpoint:
    endpoint = session.get(Endpoint, endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found")
    return endpoint


def set_endpoint_active(
    session: Session, *, endpoint_id: str, active: bool, reason: str | None = None
) -> tuple[Endpoint, bool]:
    """Enable or disable an endpoint as an operator; returns it and whether it changed.

    Disabling cancels its pending deliveries, as every disable does (docs/api.md §5); enabling
    clears the reason and the failure clock.
    """
    endpoint = _live_endpoint(session, endpoint_id)
    if not active:
        changed = disable_endpoint(
            session, endpoint_id=endpoint.id, reason=reason or "Disabled by an operator"
        )
        session.refresh(endpoint)
        return endpoint, changed
    if endpoint.is_active:
        return endpoint, False
    endpoint.is_active = True
    endpoint.disabled_reason = None
    endpoint.failing_since = None
    endpoint.failing_notified_at = None
    endpoint.updated_at = utcnow()
    session.flush()
    notify.endpoint_event_after_commit(session, "endpoint.updated", endpoint.id)
    return endpoint, True


def recover_endpoint(
    session: Session, *, endpoint_id: str, since: datetime, until: datetime | None = None
) -> int:
    """Queue one manual attempt for each failed delivery of the endpoint in the window.

    The semantics of the faces' ``recover`` routes (docs/api.md §6.1): the same service, run
    for the endpoint's organization by the operator.
    """
    endpoint = _live_endpoint(session, endpoint_id)
    return deliveries.recover_failed(
        session,
        principal=operator_principal(endpoint.organization_id),
        endpoint_id=endpoint.id,
        since=since,
        until=until,
    )


# ---- retention -----------------------------------------------------------------------------


def count_expired(session: Session, *, retention_days: int) -> dict[str, int]:
    """How many messages and attempts the retention purge would delete now."""
    cutoff = utcnow() - timedelta(days=retention_days)
    return {
        "messages": session.scalar(
            select(func.count()).select_from(Message).where(Message.created_at < cutoff)
        )
        or 0,
        "attempts": session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.created_at < cutoff)
        )
        or 0,
    }


def purge_in_batches(factory: sessionmaker[Session]) -> Iterator[dict[str, int]]:
    """Run the retention purge one batch at a time, yielding each batch's counts.

    Each step is ``retention.purge_expired`` limited to one batch (its own transaction),
    so a caller can show progress and stop between batches.
    """
    while True:
        counts = retention.purge_expired(factory, max_batches=1)
        if not counts["messages"] and not counts["attempts"]:
            return
        yield counts


# ---- time windows --------------------------------------------------------------------------

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(value: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time, or a duration ago such as ``30m``, ``6h``, ``7d``."""
    from .ingest import parse_timestamp

    match = _RELATIVE.match(value or "")
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return (now or utcnow()) - timedelta(seconds=seconds)
    return parse_timestamp(value, "time")


# ---- checks --------------------------------------------------------------------------------


@dataclass
class Check:
    """One part's verdict for ``webhooks check``."""

    part: str
    ok: bool
    detail: str


def check_database(factory: sessionmaker[Session], *, database_url: str) -> Check:
    """The database answers, and its schema is at the latest migration."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from ..migrate import alembic_config

    started = time.perf_counter()
    try:
        with factory() as session:
            session.execute(text("SELECT 1"))
            latency = round((time.perf_counter() - started) * 1000, 2)
            current = set(MigrationContext.configure(session.connection()).get_current_heads())
    except SQLAlchemyError as exc:
        return Check("database", False, f"unreachable: {error_reason(exc)}")
    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    if current != heads:
        shown = ", ".join(sorted(current)) or "empty"
        return Check(
            "database",
            False,
            f"schema at {shown}, latest is {', '.join(sorted(heads))}: run `webhooks migrate`",
        )
    return Check("database", True, f"{latency} ms, schema at {', '.join(sorted(heads))}")


def error_reason(exc: BaseException) -> str:
    """The first line of a driver's error (refused, too many clients, ...), secrets scrubbed."""
    from ..logs import redact

    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return redact(lines[0] if lines else orig.__class__.__name__)[:200]


# ---- migrations ----------------------------------------------------------------------------

# Any constant shared by every `webhooks migrate`: the key of the PostgreSQL advisory lock.
MIGRATION_LOCK_KEY = 0x77686B73  # "whks"


@contextlib.contextmanager
def migration_lock(database_url: str) -> Iterator[None]:
    """Serialize schema upgrades: several processes starting at once migrate one at a time.

    Alembic takes no lock of its own; on PostgreSQL a session advisory lock makes the
    second ``webhooks migrate`` wait for the first and then find nothing to do.
    """
    if not database_url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
