"""The team lifecycle hook: one E2B-style webhook per organization (docs/api.md §6.3).

The hook is an ordinary endpoint with category ``team-hook``: account-scoped,
payload format ``e2b``, subscriptions in E2B labels. Every write goes through
the endpoint service, so URL checks, secrets, cancellation of pending
deliveries and the other faces' views of it are the same as for any endpoint.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound
from ..models import Endpoint, Message
from . import endpoints, ingest
from .auth import Principal

CATEGORY = "team-hook"
PAYLOAD_FORMAT = "e2b"
VOCABULARY = "e2b"
# E2B's test sends a `create`; the catalog type behind that label (docs/api.md §4.1).
TEST_EVENT_LABEL = "create"
TEST_EVENT_TYPE = "sandbox.created"
# The catalog's sandbox.created example has no template, build or execution: a test from
# the hook fills them, so a receiver parsing every id of the e2b format sees each one.
TEST_SANDBOX_IDS = {
    "templateId": "base-template",
    "buildId": "00000000-0000-4000-8000-000000000001",
    "executionId": "00000000-0000-4000-8000-000000000002",
}
HOOK_NAME = "Team lifecycle hook"
HOOK_DESCRIPTION = "E2B-style sandbox lifecycle webhook of the team"

_ALREADY_REGISTERED = "The team already has a webhook; change it with PATCH or delete it first"
_NOT_REGISTERED = "The team has no webhook registered"


def find_hook(session: Session, *, organization_id: str) -> Endpoint | None:
    """The organization's live team hook (active or disabled), or None."""
    return session.scalars(
        select(Endpoint).where(
            Endpoint.organization_id == organization_id,
            Endpoint.category == CATEGORY,
            Endpoint.deleted_at.is_(None),
        )
    ).first()


def get(session: Session, *, principal: Principal) -> Endpoint:
    """The caller's team hook, readable by any member; NotFound when none is registered."""
    hook = find_hook(session, organization_id=principal.organization_id)
    if hook is None:
        raise NotFound(_NOT_REGISTERED)
    return hook


def register(
    session: Session, *, principal: Principal, url: str, events: list[str]
) -> endpoints.NewEndpoint:
    """Register the team's hook (root/admin); returns it with its signing secret, shown once."""
    principal.require_admin()
    if find_hook(session, organization_id=principal.organization_id) is not None:
        raise Conflict(_ALREADY_REGISTERED)
    try:
        return endpoints.create_endpoint(
            session,
            principal=principal,
            url=url,
            event_types=events,
            vocabulary=VOCABULARY,
            payload_format=PAYLOAD_FORMAT,
            scope="account",
            name=HOOK_NAME,
            description=HOOK_DESCRIPTION,
            category=CATEGORY,
            # docs/api.md §11.3: the team hook gets each sandbox's events in order.
            ordering="resource",
        )
    except IntegrityError:
        # Two registrations raced past the check above; the partial unique index on
        # (organization, category) let only one in. The caller rolls the request back.
        raise Conflict(_ALREADY_REGISTERED) from None


def update(
    session: Session,
    *,
    principal: Principal,
    url: str | None = None,
    events: list[str] | None = None,
) -> Endpoint:
    """Replace the hook's url and/or events (root/admin); every other field is kept."""
    principal.require_admin()
    hook = get(session, principal=principal)
    changes: dict = {}
    if url is not None:
        changes["url"] = url
    if events is not None:
        changes["event_types"] = events
    if not changes:
        return hook
    return endpoints.update_endpoint(
        session,
        principal=principal,
        endpoint_id=hook.id,
        vocabulary=VOCABULARY,
        changes=changes,
    )


def delete(session: Session, *, principal: Principal) -> Endpoint:
    """Delete the team's hook (root/admin); its pending deliveries are cancelled."""
    principal.require_admin()
    hook = get(session, principal=principal)
    return endpoints.delete_endpoint(session, principal=principal, endpoint_id=hook.id)


def send_test(session: Session, *, principal: Principal) -> Message | ingest.StoredMessage:
    """Queue a `create` example to the team's hook (any member), whatever it subscribes to."""
    hook = get(session, principal=principal)
    if not hook.is_active:
        reason = f" ({hook.disabled_reason})" if hook.disabled_reason else ""
        raise Conflict(f"The team's webhook is disabled{reason}; no test was sent")
    return ingest.send_test(
        session,
        principal=principal,
        endpoint_id=hook.id,
        event_type=TEST_EVENT_TYPE,
        extra_fields=TEST_SANDBOX_IDS,
    )
