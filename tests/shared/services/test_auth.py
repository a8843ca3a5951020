"""Re-checking credentials that were accepted earlier (long-lived sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import update

from shared.db import session_scope
from shared.models import ApiKey, User
from shared.services.auth import Principal, credential_expiry, current_principals
from tests.conftest import JWT_SECRET


def _token(user_id: str, org_id: str, *, seconds: int = 300) -> str:
    exp = datetime.now(UTC) + timedelta(seconds=seconds)
    return jwt.encode({"sub": user_id, "org": org_id, "exp": exp}, JWT_SECRET, algorithm="HS256")


def test_current_principals_leaves_out_revoked_keys_expired_tokens_and_moved_users(
    org, add_user, make_org
):
    member = add_user(org, "member")
    admin = add_user(org, "admin")
    other = make_org("Other")
    valid_token = _token(org.user_id, org.id)
    expired_token = _token(org.user_id, org.id, seconds=-5)
    wrong_org_token = _token(org.user_id, other.id)
    forged = jwt.encode(
        {"sub": org.user_id, "org": org.id, "exp": datetime.now(UTC) + timedelta(minutes=5)},
        "not-the-secret-but-as-long-as-one-0123",
        algorithm="HS256",
    )
    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.user_id == member.user_id)
            .values(revoked_at=datetime.now(UTC))
        )
        session.execute(update(User).where(User.id == admin.user_id).values(role="member"))

    with session_scope() as session:
        found = current_principals(
            session,
            [
                org.key,
                org.key,
                member.key,
                admin.key,
                "whk_not-a-key",
                valid_token,
                expired_token,
                wrong_org_token,
                forged,
            ],
        )
    assert found == {
        org.key: Principal(org.user_id, org.id, "root"),
        admin.key: Principal(admin.user_id, org.id, "member"),
        valid_token: Principal(org.user_id, org.id, "root"),
    }


def test_only_a_jwt_has_an_expiry():
    token = _token("usr-x", "org-x", seconds=60)
    expiry = credential_expiry(token)
    assert expiry is not None
    assert abs(expiry - (datetime.now(UTC).timestamp() + 60)) < 2
    assert credential_expiry("whk_live_some-api-key") is None
