"""Endpoints: create, read, change, delete, rotate secrets, and their delivery stats."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .. import events, filters, notify
from ..config import get_settings
from ..crypto import encrypt, new_signing_secret
from ..errors import Forbidden, Invalid, NotFound
from ..models import Delivery, Endpoint, new_id, utcnow
from ..targets import validate_target_url
from . import endpoint_flow, endpoint_headers, endpoint_lifetime, operational_events
from .auth import Principal

PAYLOAD_FORMATS = ("daytona", "envelope", "e2b")
SCOPES = ("user", "account")
TIMEOUT_RANGE = (5, 300)
RETRIES_RANGE = (0, 10)


# A dataclass, not a NamedTuple: a route returns it for its schema to render, and Flask
# reads a returned tuple as (body, status).
@dataclass(frozen=True, slots=True)
class NewEndpoint:
    """A created endpoint and its signing secret in clear, which only this answer shows."""

    endpoint: Endpoint
    secret: str


def _visible(principal: Principal):
    """The SQL condition for endpoints this principal may see (docs/api.md §3)."""
    cond = (Endpoint.organization_id == principal.organization_id) & Endpoint.deleted_at.is_(None)
    if not principal.is_admin:
        cond &= or_(Endpoint.user_id == principal.user_id, Endpoint.scope == "account")
    return cond


def get_endpoint(session: Session, *, principal: Principal, endpoint_id: str) -> Endpoint:
    """An endpoint the caller can see, else NotFound."""
    if "\x00" in endpoint_id:
        # No id holds a NUL (PostgreSQL text cannot), and the driver refuses to send one.
        raise NotFound("Webhook endpoint not found")
    endpoint = session.scalars(
        select(Endpoint).where(Endpoint.id == endpoint_id, _visible(principal))
    ).first()
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} not found")
    return endpoint


def get_endpoint_for_change(
    session: Session, *, principal: Principal, endpoint_id: str
) -> Endpoint:
    """An endpoint the caller may change: members only their own (403 when merely visible)."""
    endpoint = get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    check_can_change(principal, endpoint)
    return endpoint


def check_can_change(principal: Principal, endpoint: Endpoint) -> None:
    """Raise Forbidden unless the caller may change this endpoint."""
    if principal.is_admin:
        return
    if endpoint.scope == "account" or endpoint.user_id != principal.user_id:
        raise Forbidden("Only root or admin can change this webhook endpoint")


def list_endpoints(
    session: Session,
    *,
    principal: Principal,
    offset: int = 0,
    limit: int | None = None,
    category: str | None = None,
) -> tuple[list[Endpoint], int]:
    """The endpoints the caller can see, oldest first, with the total count."""
    cond = _visible(principal)
    if category is not None:
        cond &= Endpoint.category == category
    total = session.scalar(select(func.count()).select_from(Endpoint).where(cond)) or 0
    query = select(Endpoint).where(cond).order_by(Endpoint.created_at, Endpoint.id).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def _check_range(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{name} must be an integer between {lo} and {hi}")
    return value


def _check_text(name: str, value: object, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if len(value) > max_len:
        raise Invalid(f"{name} must be at most {max_len} characters")
    return value


def validate_subscriptions(
    vocabulary: str, event_types: object, *, principal: Principal, scope: str
) -> list[str]:
    """Check a subscription list in the vocabulary of the face that writes it (docs/api.md §4.1)."""
    if not isinstance(event_types, list) or not all(isinstance(e, str) for e in event_types):
        raise Invalid("event types must be a list of strings")
    if vocabulary == "v1":
        return events.validate_v1_event_types(event_types, is_root=principal.is_root, scope=scope)
    if vocabulary == "e2b":
        return events.validate_e2b_events(event_types)
    return events.validate_event_types(event_types, is_root=principal.is_root, scope=scope)


def create_endpoint(
    session: Session,
    *,
    principal: Principal,
    url: str,
    event_types: list[str],
    vocabulary: str,
    payload_format: str,
    scope: str = "user",
    description: str | None = None,
    name: str | None = None,
    timeout_seconds: int = 30,
    max_retries: int = 3,
    category: str | None = None,
    headers: object = None,
    payload_filter: object = None,
    resource_id: str | None = None,
    expires_at: object = None,
    ordering: str = "none",
    rate_limit: int | None = None,
) -> NewEndpoint:
    """Create an endpoint; returns it with its signing secret (shown only now)."""
    if scope not in SCOPES:
        raise Invalid("scope must be 'user' or 'account'")
    if scope == "account":
        principal.require_admin()
    if payload_format not in PAYLOAD_FORMATS:
        raise Invalid(f"payload format must be one of {', '.join(PAYLOAD_FORMATS)}")
    url = validate_target_url(url, get_settings().allow_private_targets)
    subscriptions = validate_subscriptions(
        vocabulary, event_types, principal=principal, scope=scope
    )
    secret = new_signing_secret()
    now = utcnow()
    endpoint = Endpoint(
        id=new_id("whk"),
        organization_id=principal.organization_id,
        user_id=principal.user_id if scope == "user" else None,
        scope=scope,
        url=url,
        name=_check_text("name", name, 200),
        description=_check_text("description", description, 2000),
        event_types=subscriptions,
        is_active=True,
        payload_format=payload_format,
        timeout_seconds=_check_range("timeout_seconds", timeout_seconds, *TIMEOUT_RANGE),
        max_retries=_check_range("max_retries", max_retries, *RETRIES_RANGE),
        category=category,
        filter=filters.validate_filter(payload_filter),
        # docs/api.md §11.4
        resource_id=endpoint_lifetime.check_resource_id(resource_id),
        expires_at=endpoint_lifetime.check_expires_at(expires_at),
        ordering=endpoint_flow.check_ordering(ordering),
        rate_limit=endpoint_flow.check_rate_limit(rate_limit),
        secret_encrypted=encrypt(secret),
        headers_encrypted=endpoint_headers.encrypted_headers(headers),
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    session.flush()
    notify.endpoint_event_after_commit(session, "endpoint.created", endpoint.id)
    return NewEndpoint(endpoint, secret)


# Fields update_endpoint accepts; each face maps its own names onto these.
UPDATABLE = (
    "url",
    "event_types",
    "is_active",
    "description",
    "name",
    "timeout_seconds",
    "max_retries",
    "scope",
    "payload_format",
    "headers",
    "filter",
    "expires_at",
    *endpoint_flow.FIELDS,
)


def update_endpoint(
    session: Session,
    *,
    principal: Principal,
    endpoint_id: str,
    vocabulary: str,
    changes: dict,
) -> Endpoint:
    """Apply a partial update; validation happens before anything is written."""
    endpoint_lifetime.check_not_changed(changes)
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise Invalid(f"Unknown field: {sorted(unknown)[0]}")
    endpoint = get_endpoint_for_change(session, principal=principal, endpoint_id=endpoint_id)
    scope = changes.get("scope", endpoint.scope)
    if scope not in SCOPES:
        raise Invalid("scope must be 'user' or 'account'")
    if scope == "account" and scope != endpoint.scope:
        principal.require_admin()
    values: dict = {}
    if "url" in changes:
        values["url"] = validate_target_url(changes["url"], get_settings().allow_private_targets)
    if "event_types" in changes:
        values["event_types"] = validate_subscriptions(
            vocabulary, changes["event_types"], principal=principal, scope=scope
        )
    elif scope != endpoint.scope:
        # docs/api.md §4.1: the write rules of a face apply to the names being written; the stored
        # ones stay as they were given, in whichever face's vocabulary. The scope rules of
        # docs/api.md §3 still hold for them (account-level types only on account scope, by root).
        events.check_account_level(endpoint.event_types, is_root=principal.is_root, scope=scope)
    if "is_active" in changes:
        if not isinstance(changes["is_active"], bool):
            raise Invalid("is_active must be a boolean")
        values["is_active"] = changes["is_active"]
    for field, max_len in (("description", 2000), ("name", 200)):
        if field in changes:
            values[field] = _check_text(field, changes[field], max_len)
    if "timeout_seconds" in changes:
        values["timeout_seconds"] = _check_range(
            "timeout_seconds", changes["timeout_seconds"], *TIMEOUT_RANGE
        )
    if "max_retries" in changes:
        values["max_retries"] = _check_range("max_retries", changes["max_retries"], *RETRIES_RANGE)
    if "payload_format" in changes:
        if changes["payload_format"] not in PAYLOAD_FORMATS:
            raise Invalid(f"payload format must be one of {', '.join(PAYLOAD_FORMATS)}")
        values["payload_format"] = changes["payload_format"]
    if "headers" in changes:
        values["headers_encrypted"] = endpoint_headers.encrypted_headers(
            changes["headers"], stored=endpoint_headers.stored_headers(endpoint.headers_encrypted)
        )
    if "filter" in changes:
        values["filter"] = filters.validate_filter(changes["filter"])
    if "expires_at" in changes:
        values["expires_at"] = endpoint_lifetime.check_expires_at(changes["expires_at"])
    values.update(endpoint_flow.flow_changes(changes))
    if scope != endpoint.scope:
        values["scope"] = scope
        values["user_id"] = None if scope == "account" else principal.user_id

    was_active = endpoint.is_active
    disabling = was_active and values.get("is_active") is False
    if disabling:
        # Deliveries before the endpoint row: a worker recording an attempt locks its
        # delivery, then updates the endpoint; taking them in that order cannot deadlock.
        cancel_pending_deliveries(session, endpoint_id=endpoint.id, reason="Endpoint disabled")
    for key, value in values.items():
        setattr(endpoint, key, value)
    if disabling:
        endpoint.disabled_reason = "Disabled by a user"
    elif not was_active and values.get("is_active") is True:
        endpoint.disabled_reason = None
        endpoint.failing_since = None
        endpoint.failing_notified_at = None
    endpoint.updated_at = utcnow()
    session.flush()
    disabled = was_active and values.get("is_active") is False
    notify.endpoint_event_after_commit(
        session, "endpoint.disabled" if disabled else "endpoint.updated", endpoint.id
    )
    if disabled:
        operational_events.report_disabled(
            session, endpoint_id=endpoint.id, reason=endpoint.disabled_reason
        )
    return endpoint


def delete_endpoint(session: Session, *, principal: Principal, endpoint_id: str) -> Endpoint:
    """Soft-delete an endpoint (its history stays) and cancel its pending deliveries."""
    endpoint = get_endpoint_for_change(session, principal=principal, endpoint_id=endpoint_id)
    # Deliveries before the endpoint row, in the order a recording worker takes them.
    cancel_pending_deliveries(session, endpoint_id=endpoint.id, reason="Endpoint deleted")
    endpoint.deleted_at = utcnow()
    endpoint.is_active = False
    endpoint.updated_at = endpoint.deleted_at
    session.flush()
    notify.endpoint_event_after_commit(session, "endpoint.deleted", endpoint.id)
    return endpoint


def disable_endpoint(session: Session, *, endpoint_id: str, reason: str) -> bool:
    """Disable an endpoint on the service's own decision; False if it already was."""
    now = utcnow()
    result = session.execute(
        update(Endpoint)
        .where(Endpoint.id == endpoint_id, Endpoint.is_active.is_(True))
        .values(is_active=False, disabled_reason=reason, updated_at=now)
    )
    if result.rowcount:
        cancel_pending_deliveries(session, endpoint_id=endpoint_id, reason=reason)
        notify.endpoint_event_after_commit(session, "endpoint.disabled", endpoint_id)
        operational_events.report_disabled(session, endpoint_id=endpoint_id, reason=reason)
    return bool(result.rowcount)


def cancel_pending_deliveries(session: Session, *, endpoint_id: str, reason: str) -> int:
    """Mark every pending delivery of the endpoint cancelled; queued tasks then do nothing."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.endpoint_id == endpoint_id, Delivery.status == "pending")
        .values(
            status="cancelled",
            next_attempt_at=None,
            error_message=reason,
            updated_at=utcnow(),
        )
    )
    return result.rowcount or 0
