"""Preconfigured endpoints: one per category of the table (shared.events) at
``WEBHOOKS_PRECONFIGURED_BASE_URL/{organizationId}/{category}``, made and restored by an
organization's initialization (shared.services.initialization, which holds the lock).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import notify
from ..config import get_settings
from ..crypto import encrypt, new_signing_secret
from ..events import PRECONFIGURED_CATEGORIES, PreconfiguredCategory
from ..models import Endpoint, OrganizationInitialization, new_id, utcnow
from ..targets import parse_allowlist, validate_target_url

# Preconfigured URLs are operator configuration, not user input: they skip the save-time
# SSRF check (the operator may well point them at an internal collector). The connect-time
# guard in shared/http.py still applies to every delivery, so nothing is opened by this.
_OPERATOR_URLS = parse_allowlist("*")


def preconfigured_url(base_url: str, organization_id: str, category: str) -> str:
    """The URL of one preconfigured endpoint of an organization."""
    return f"{base_url.rstrip('/')}/{organization_id}/{category}"


def _display_name(category: str) -> str:
    return category.replace("-", " ").capitalize()


def _preconfigured(session: Session, organization_id: str) -> dict[str, Endpoint]:
    categories = [item.category for item in PRECONFIGURED_CATEGORIES]
    rows = session.scalars(
        select(Endpoint).where(
            Endpoint.organization_id == organization_id,
            Endpoint.category.in_(categories),
            Endpoint.deleted_at.is_(None),
        )
    )
    return {endpoint.category: endpoint for endpoint in rows}


def _create_preconfigured(
    session: Session, organization_id: str, item: PreconfiguredCategory, url: str
) -> Endpoint:
    # Not endpoints.create_endpoint: no user makes these (the service does, on its own
    # authority), and their URL is operator configuration (see _OPERATOR_URLS).
    now = utcnow()
    endpoint = Endpoint(
        id=new_id("whk"),
        organization_id=organization_id,
        user_id=None,
        scope="account",
        url=validate_target_url(url, _OPERATOR_URLS, resolve=False),
        name=_display_name(item.category),
        description=item.description,
        event_types=list(item.event_types),
        is_active=True,
        payload_format="daytona",
        timeout_seconds=30,
        max_retries=3,
        category=item.category,
        secret_encrypted=encrypt(new_signing_secret()),
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    notify.endpoint_event_after_commit(session, "endpoint.created", endpoint.id)
    return endpoint


def apply_categories(
    session: Session, init: OrganizationInitialization, *, restore: bool
) -> tuple[list[Endpoint], int, int]:
    """Create missing preconfigured endpoints (and, with ``restore``, reset changed ones).

    The caller holds the initialization row's lock. Returns the endpoints in category
    order with the numbers created and updated.
    """
    organization_id = init.organization_id
    existing = _preconfigured(session, organization_id)
    base = get_settings().preconfigured_base_url
    created = updated = 0
    if base:
        for item in PRECONFIGURED_CATEGORIES:
            url = preconfigured_url(base, organization_id, item.category)
            endpoint = existing.get(item.category)
            if endpoint is None:
                existing[item.category] = _create_preconfigured(session, organization_id, item, url)
                created += 1
            elif restore and (
                endpoint.url != url
                or endpoint.event_types != list(item.event_types)
                or endpoint.description != item.description
            ):
                # In place: the id and the signing secrets stay, so receivers keep working.
                endpoint.url = validate_target_url(url, _OPERATOR_URLS, resolve=False)
                endpoint.event_types = list(item.event_types)
                endpoint.description = item.description
                endpoint.updated_at = utcnow()
                notify.endpoint_event_after_commit(session, "endpoint.updated", endpoint.id)
                updated += 1
    ordered = [
        existing[item.category] for item in PRECONFIGURED_CATEGORIES if item.category in existing
    ]
    ids = [endpoint.id for endpoint in ordered]
    if init.endpoint_ids != ids:
        init.endpoint_ids = ids
    init.endpoints_created = bool(ids)
    session.flush()
    return ordered, created, updated
