"""Who is calling: API keys, JWTs and the platform token (docs/api.md §3)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import get_settings
from ..crypto import hash_api_key
from ..errors import Forbidden, NotFound, Unauthorized
from ..models import ApiKey, User

ROLES = ("root", "admin", "member")


@dataclass(frozen=True)
class Principal:
    """An authenticated user of one organization."""

    user_id: str
    organization_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        """Root and admin run the whole organization's webhooks."""
        return self.role in ("root", "admin")

    @property
    def is_root(self) -> bool:
        """Only root subscribes account-level events and reads signing secrets."""
        return self.role == "root"

    def require_admin(self) -> None:
        """Raise Forbidden unless root or admin."""
        if not self.is_admin:
            raise Forbidden("This action requires the root or admin role")

    def require_root(self) -> None:
        """Raise Forbidden unless root."""
        if not self.is_root:
            raise Forbidden("This action requires the root role")

    def check_organization(self, organization_id: str) -> None:
        """Another organization's resources do not exist for this caller (404, never 403)."""
        if organization_id != self.organization_id:
            raise NotFound(f"Organization {organization_id} not found")


def is_platform_token(token: str | None) -> bool:
    """Constant-time comparison with WEBHOOKS_ADMIN_TOKEN."""
    if not token:
        return False
    return hmac.compare_digest(token.encode(), get_settings().admin_token.encode())


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


def authenticate(session: Session, credential: str | None) -> Principal:
    """The user behind an API key or a JWT; Unauthorized when missing or wrong."""
    if not credential:
        raise Unauthorized("Missing credentials: send X-API-Key or Authorization: Bearer")
    if _looks_like_jwt(credential):
        return _authenticate_jwt(session, credential)
    row = session.execute(
        select(User.id, User.organization_id, User.role)
        .join(ApiKey, ApiKey.user_id == User.id)
        .where(ApiKey.key_hash == hash_api_key(credential), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        raise Unauthorized("Invalid API key")
    return Principal(user_id=row.id, organization_id=row.organization_id, role=row.role)


def _authenticate_jwt(session: Session, token: str) -> Principal:
    secret = get_settings().jwt_secret
    if not secret:
        raise Unauthorized("JWT authentication is not enabled")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "org", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    subject = str(claims["sub"])
    # No user id holds a NUL, and the driver cannot send one: such a token names nobody.
    user = None if "\x00" in subject else session.get(User, subject)
    # The token names an organization; it must be the user's own (docs/api.md §10).
    if user is None or user.organization_id != str(claims["org"]):
        raise Unauthorized("Invalid token")
    return Principal(user_id=user.id, organization_id=user.organization_id, role=user.role)


# Credentials per query when re-checking many (an IN list PostgreSQL plans quickly).
RECHECK_BATCH = 500


def credential_expiry(credential: str) -> float | None:
    """When an authenticated credential stops being valid (a JWT's ``exp``), else None.

    Only for a credential ``authenticate`` accepted: the signature is not checked again.
    """
    if not _looks_like_jwt(credential):
        return None
    try:
        exp = jwt.decode(credential, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return float(exp) if isinstance(exp, int | float) else None


def current_principals(session: Session, credentials: Iterable[str]) -> dict[str, Principal]:
    """The user each credential authenticates as now; those that no longer do are absent.

    For re-checking many long-lived connections at once: a revoked key, an expired JWT or
    a user gone from its organization is left out. One query per RECHECK_BATCH keys and
    one per RECHECK_BATCH token subjects, however many credentials.
    """
    keys: dict[str, str] = {}
    subjects: dict[str, tuple[str, str]] = {}
    secret = get_settings().jwt_secret
    for credential in set(credentials):
        if not _looks_like_jwt(credential):
            keys[hash_api_key(credential)] = credential
            continue
        if not secret:
            continue
        try:
            claims = jwt.decode(
                credential, secret, algorithms=["HS256"], options={"require": ["sub", "org", "exp"]}
            )
        except jwt.InvalidTokenError:
            continue
        subject = str(claims["sub"])
        if "\x00" not in subject:
            subjects[credential] = (subject, str(claims["org"]))
    found: dict[str, Principal] = {}
    hashes = list(keys)
    for start in range(0, len(hashes), RECHECK_BATCH):
        rows = session.execute(
            select(ApiKey.key_hash, User.id, User.organization_id, User.role)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash.in_(hashes[start : start + RECHECK_BATCH]))
            .where(ApiKey.revoked_at.is_(None))
        )
        for row in rows:
            found[keys[row.key_hash]] = Principal(
                user_id=row.id, organization_id=row.organization_id, role=row.role
            )
    user_ids = sorted({subject for subject, _org in subjects.values()})
    users: dict[str, Principal] = {}
    for start in range(0, len(user_ids), RECHECK_BATCH):
        rows = session.execute(
            select(User.id, User.organization_id, User.role).where(
                User.id.in_(user_ids[start : start + RECHECK_BATCH])
            )
        )
        for row in rows:
            users[row.id] = Principal(
                user_id=row.id, organization_id=row.organization_id, role=row.role
            )
    for credential, (subject, organization_id) in subjects.items():
        user = users.get(subject)
        if user is not None and user.organization_id == organization_id:
            found[credential] = user
    return found
