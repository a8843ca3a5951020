"""Signing secrets: rotation with a day's overlap, the root-only reveal, and which sign now."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from ..crypto import decrypt, encrypt, new_signing_secret
from ..errors import Conflict
from ..models import Endpoint, utcnow
from ..payloads import format_timestamp
from .auth import Principal
from .endpoints import get_endpoint, get_endpoint_for_change

# docs/api.md §5: a rotated-out secret keeps signing alongside the new one for a day.
ROTATION_OVERLAP = timedelta(hours=24)
# At most this many secrets sign a message at once (the current one and those rotated out
# in the last 24 h). Each adds a signature of about 50 bytes to the webhook-signature
# header, and HTTP servers commonly refuse a header line past 8 KiB; a script rotating in
# a loop would otherwise make every delivery unreadable. A rotation past it is refused
# until the oldest rotated-out secret expires.
MAX_SIGNING_SECRETS = 10


def rotate_secret(session: Session, *, principal: Principal, endpoint_id: str) -> str:
    """Replace the signing secret; every rotated-out one keeps signing for its own 24 hours."""
    endpoint = get_endpoint_for_change(session, principal=principal, endpoint_id=endpoint_id)
    # Locked, so that two rotations at once cannot each drop the secret the other kept.
    session.refresh(endpoint, with_for_update=True)
    now = utcnow()
    expires_at = now + ROTATION_OVERLAP
    kept = [entry for entry in previous_secrets(endpoint) if entry[1] > now]
    # Signing after this rotation: those kept, the current one, and the new one.
    if len(kept) + 2 > MAX_SIGNING_SECRETS:
        oldest = min(expiry for _token, expiry in kept)
        raise Conflict(
            f"Too many rotations: {MAX_SIGNING_SECRETS} secrets would sign each message. "
            f"The oldest rotated-out secret stops signing at {format_timestamp(oldest)}; "
            "rotate again after that"
        )
    kept.append((endpoint.secret_encrypted, expires_at))
    endpoint.previous_secret_encrypted = json.dumps(
        [{"secret": token, "expiresAt": expiry.isoformat()} for token, expiry in kept]
    )
    endpoint.previous_secret_expires_at = expires_at  # the last of them to expire
    secret = new_signing_secret()
    endpoint.secret_encrypted = encrypt(secret)
    endpoint.updated_at = now
    session.flush()
    return secret


def reveal_secret(session: Session, *, principal: Principal, endpoint_id: str) -> str:
    """The current signing secret, for root only (docs/api.md §6.2)."""
    principal.require_root()
    endpoint = get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
    return decrypt(endpoint.secret_encrypted)


def previous_secrets(endpoint: Endpoint) -> list[tuple[str, datetime]]:
    """The rotated-out secrets, each still encrypted, with its expiry; oldest first.

    ``previous_secret_encrypted`` holds them as a JSON list of ``{secret, expiresAt}``
    (migration 0003), each secret a Fernet token of its own; ``previous_secret_expires_at``
    is the last expiry, so that an endpoint with no rotation under way is not parsed.
    """
    if not endpoint.previous_secret_encrypted:
        return []
    return [
        (entry["secret"], datetime.fromisoformat(entry["expiresAt"]))
        for entry in json.loads(endpoint.previous_secret_encrypted)
    ]


def signing_secrets(endpoint: Endpoint, *, now: datetime | None = None) -> list[str]:
    """Every secret that signs right now: the current one, and each previous within its 24 h."""
    now = now or utcnow()
    secrets = [decrypt(endpoint.secret_encrypted)]
    if endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        secrets.extend(
            decrypt(token) for token, expires_at in previous_secrets(endpoint) if expires_at > now
        )
    return secrets
