"""Initialization of an organization: its application record and preconfigured endpoints.

docs/api.md §6.2: at creation (asynchronously), on ``initialize`` and when beat retries a failed
run, an organization gets its application record and one endpoint per preconfigured
category at ``WEBHOOKS_PRECONFIGURED_BASE_URL/{organizationId}/{category}``. Every run
is idempotent: the organization's initialization row is locked first, so concurrent runs
(the creation task, a manual ``initialize``, a beat retry) take turns and the unique index
on (organization_id, category) is never the thing that stops a duplicate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ..config import get_settings
from ..errors import DomainError, NotFound
from ..events import PRECONFIGURED_CATEGORIES
from ..models import Application, Endpoint, Organization, OrganizationInitialization, new_id, utcnow
from .preconfigured import apply_categories, preconfigured_url

log = logging.getLogger(__name__)

# docs/api.md §6.2: the first retry comes within 60 s of a failure. Beat looks every 15 s, so a
# 30 s wait puts the retry 30-45 s after the failure; each later wait doubles, up to 1 h.
FIRST_RETRY_DELAY = 30.0
MAX_RETRY_DELAY = 3600.0
# A claimed retry holds its row this long; if the worker running it dies, the row is
# due again afterwards instead of being lost.
RETRY_LEASE = timedelta(minutes=5)
RETRY_BATCH = 100
LAST_ERROR_MAX = 2000


@dataclass
class InitializationStats:
    """How many organizations are initialized, failed or still pending."""

    total: int = 0
    initialized: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class UpdateReport:
    """What update_all_endpoints did: organizations visited, endpoints created and updated."""

    organizations: int = 0
    created: int = 0
    updated: int = 0


def retry_delay(failed_tries: int) -> float:
    """Seconds to wait after the ``failed_tries``-th failure: 30, 60, 120, ... capped at 1 h."""
    exponent = min(max(failed_tries, 1) - 1, 20)
    return min(FIRST_RETRY_DELAY * 2**exponent, MAX_RETRY_DELAY)


def preconfigured_configs() -> list[dict]:
    """The category table as callers see it, with the URL template (null when unset)."""
    base = get_settings().preconfigured_base_url
    return [
        {
            "category": item.category,
            "description": item.description,
            "event_types": list(item.event_types),
            "url_template": (
                preconfigured_url(base, "{organizationId}", item.category) if base else None
            ),
        }
        for item in PRECONFIGURED_CATEGORIES
    ]


def _upsert_initialization(session: Session, organization_id: str) -> None:
    # Organizations get their row at creation; one made another way still gets one here.
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    session.execute(
        insert(OrganizationInitialization)
        .values(
            organization_id=organization_id,
            status="pending",
            application_created=False,
            endpoints_created=False,
            endpoint_ids=[],
            retry_count=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["organization_id"])
    )


def _lock(session: Session, organization_id: str) -> OrganizationInitialization:
    """The organization's initialization row, locked until the transaction ends."""
    if session.get(Organization, organization_id) is None:
        raise NotFound(f"Organization {organization_id} not found")
    _upsert_initialization(session, organization_id)
    return session.scalars(
        select(OrganizationInitialization)
        .where(OrganizationInitialization.organization_id == organization_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def ensure_preconfigured_endpoints(session: Session, *, organization_id: str) -> list[Endpoint]:
    """The organization's preconfigured endpoints, the missing ones created (never twice)."""
    init = _lock(session, organization_id)
    endpoints, _created, _updated = apply_categories(session, init, restore=False)
    return endpoints


def initialize_organization(
    session: Session, *, organization_id: str
) -> OrganizationInitialization:
    """Create the application record and preconfigured endpoints; idempotent."""
    init = _lock(session, organization_id)
    application = session.scalars(
        select(Application).where(Application.organization_id == organization_id)
    ).first()
    if application is None:
        session.add(Application(id=new_id("app"), organization_id=organization_id))
        session.flush()
    apply_categories(session, init, restore=False)
    init.application_created = True
    init.status = "initialized"
    init.last_error = None
    init.next_retry_at = None
    init.updated_at = utcnow()
    session.flush()
    return init


def record_failure(
    session: Session, *, organization_id: str, error: str
) -> OrganizationInitialization:
    """Mark a run failed and schedule the next retry, if any is left."""
    init = _lock(session, organization_id)
    now = utcnow()
    init.status = "failed"
    init.last_error = error[:LAST_ERROR_MAX]
    init.retry_count += 1
    # retry_count failed tries so far; beat makes at most WEBHOOKS_INIT_MAX_RETRIES retries.
    if init.retry_count <= get_settings().init_max_retries:
        init.next_retry_at = now + timedelta(seconds=retry_delay(init.retry_count))
    else:
        init.next_retry_at = None
    init.updated_at = now
    session.flush()
    return init


def _error_text(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # The driver's first line says what went wrong; the SQL text stays out of it.
        first_line = (str(exc.orig).strip().splitlines() or [""])[0]
        return f"Database error: {type(exc.orig).__name__}: {first_line}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def run_initialization(
    factory: sessionmaker[Session], *, organization_id: str
) -> OrganizationInitialization:
    """Initialize in one transaction; on failure, record it in a separate one.

    NotFound (no such organization) propagates and records nothing. A database that is
    down makes recording fail too; that error propagates so the caller can retry.
    """
    with factory() as session:
        try:
            init = initialize_organization(session, organization_id=organization_id)
            session.commit()
            return init
        except NotFound:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then retried
            session.rollback()
            error = _error_text(exc)
            log.warning("initialization of %s failed: %s", organization_id, error)
    with factory() as session:
        init = record_failure(session, organization_id=organization_id, error=error)
        session.commit()
        return init


def _claimable(now: datetime, *, due_only: bool) -> list:
    table = OrganizationInitialization
    if not due_only:
        # An operator's explicit retry takes every failed organization, exhausted or not.
        return [table.status == "failed"]
    # Due: a failed run whose retry time has come, or a pending one whose run never
    # finished (its creation task was lost, or a claimed retry died with its worker).
    return [
        table.status.in_(("failed", "pending")),
        table.next_retry_at.is_not(None),
        table.next_retry_at <= now,
        table.retry_count <= get_settings().init_max_retries,
    ]


def claim_failed(session: Session, *, due_only: bool = True, limit: int = RETRY_BATCH) -> list[str]:
    """Claim initializations to run again now; each row goes to one claimant only.

    The conditional update marks the row pending with ``next_retry_at`` one lease ahead:
    a second beat running the same query at the same time no longer finds it due (on
    PostgreSQL its UPDATE waits for ours, then re-checks the condition on our row), and a
    run that dies leaves the row due again once the lease has passed.
    """
    now = utcnow()
    table = OrganizationInitialization
    cond = _claimable(now, due_only=due_only)
    candidates = list(
        session.scalars(
            select(table.organization_id)
            .where(*cond)
            .order_by(table.next_retry_at, table.organization_id)
            .limit(limit)
        )
    )
    if not candidates:
        return []
    claimed = session.scalars(
        update(table)
        .where(table.organization_id.in_(candidates), *cond)
        .values(status="pending", next_retry_at=now + RETRY_LEASE, updated_at=now)
        .returning(table.organization_id)
    )
    return sorted(claimed)


def retry_failed(
    factory: sessionmaker[Session], *, due_only: bool = True, limit: int = RETRY_BATCH
) -> list[OrganizationInitialization]:
    """Claim failed initializations (only the due ones, by default) and run each again."""
    with factory() as session:
        claimed = claim_failed(session, due_only=due_only, limit=limit)
        session.commit()
    results = []
    for organization_id in claimed:
        try:
            results.append(run_initialization(factory, organization_id=organization_id))
        except NotFound:
            continue
    return results


def get_status(session: Session, *, organization_id: str) -> OrganizationInitialization:
    """The organization's initialization status (a pending one if it never had a row)."""
    org = session.get(Organization, organization_id)
    if org is None:
        raise NotFound(f"Organization {organization_id} not found")
    init = session.get(OrganizationInitialization, organization_id)
    if init is None:
        # Read-only: describe the missing row without writing one.
        return OrganizationInitialization(
            organization_id=organization_id,
            status="pending",
            application_created=False,
            endpoints_created=False,
            endpoint_ids=[],
            last_error=None,
            retry_count=0,
            created_at=org.created_at,
            updated_at=org.created_at,
        )
    return init


def initialization_stats(session: Session) -> InitializationStats:
    """Counts of organizations by initialization status, across every organization."""
    status = func.coalesce(OrganizationInitialization.status, "pending")
    rows = session.execute(
        select(status, func.count())
        .select_from(Organization)
        .outerjoin(
            OrganizationInitialization,
            OrganizationInitialization.organization_id == Organization.id,
        )
        .group_by(status)
    )
    stats = InitializationStats()
    for name, count in rows:
        stats.total += count
        if name in ("initialized", "failed", "pending"):
            setattr(stats, name, getattr(stats, name) + count)
    return stats


def update_all_endpoints(session: Session) -> UpdateReport:
    """Re-apply the category table in place for every organization (docs/api.md §6.2).

    Ids and secrets stay; URL, event types and description are restored; missing
    endpoints are created. A second run finds nothing to change.
    """
    report = UpdateReport()
    organization_ids = list(session.scalars(select(Organization.id).order_by(Organization.id)))
    for organization_id in organization_ids:
        init = _lock(session, organization_id)
        _endpoints, created, updated = apply_categories(session, init, restore=True)
        report.organizations += 1
        report.created += created
        report.updated += updated
    return report
