"""Organizations, their users and keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..crypto import hash_api_key, new_api_key
from ..errors import Conflict, Invalid, NotFound
from ..models import ApiKey, Organization, OrganizationInitialization, User, new_id, utcnow
from .auth import ROLES

ORG_ID_RE = re.compile(r"org-[a-z0-9]{15}")


@dataclass
class NewUser:
    """A user together with its API key, shown only this once."""

    user: User
    api_key: str


def create_organization(
    session: Session, *, name: str, organization_id: str | None = None
) -> tuple[Organization, NewUser]:
    """Create an organization with its root user and key, and its pending initialization."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise Invalid("name must be 1-200 characters")
    if organization_id is not None:
        # fullmatch: `$` would let a trailing newline through.
        if not ORG_ID_RE.fullmatch(organization_id):
            raise Invalid("id must be 'org-' followed by 15 lowercase letters or digits")
        if session.get(Organization, organization_id) is not None:
            raise Conflict(f"Organization {organization_id} already exists")
    org = Organization(id=organization_id or new_id("org"), name=name)
    session.add(org)
    session.add(
        OrganizationInitialization(organization_id=org.id, status="pending", endpoint_ids=[])
    )
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"Organization {org.id} already exists") from None
    root = create_user(session, organization_id=org.id, role="root")
    return org, root


def create_user(session: Session, *, organization_id: str, role: str) -> NewUser:
    """Add a user with a fresh API key to an organization."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}")
    # An id of another shape names no organization (and a NUL could not even be sent).
    if (
        not ORG_ID_RE.fullmatch(organization_id)
        or session.get(Organization, organization_id) is None
    ):
        raise NotFound(f"Organization {organization_id} not found")
    user = User(id=new_id("usr"), organization_id=organization_id, role=role)
    session.add(user)
    session.flush()
    return NewUser(user=user, api_key=create_api_key(session, user_id=user.id))


def create_api_key(session: Session, *, user_id: str) -> str:
    """Issue a new key for a user; only its hash is stored."""
    key = new_api_key()
    session.add(
        ApiKey(id=new_id("key"), user_id=user_id, key_hash=hash_api_key(key), prefix=key[:12])
    )
    session.flush()
    return key


def list_organizations(session: Session) -> list[Organization]:
    """Every organization, oldest first."""
    return list(session.scalars(select(Organization).order_by(Organization.created_at)))


# If the initialization task never runs (the broker lost it), beat's retry job starts the
# initialization once this much time has passed (shared.services.initialization).
INITIALIZE_GRACE = timedelta(seconds=60)


def start_initialization(session: Session, *, organization_id: str) -> None:
    """Initialize the organization's webhooks asynchronously, once this transaction commits."""
    from ..queue import Task, enqueue_after_commit

    init = session.get(OrganizationInitialization, organization_id)
    if init is not None and init.status == "pending" and init.next_retry_at is None:
        init.next_retry_at = utcnow() + INITIALIZE_GRACE
        session.flush()
    enqueue_after_commit(session, Task.INITIALIZE_ORGANIZATION, organization_id)
