"""every rotated-out signing secret keeps signing until its own expiry

Until now an endpoint kept one previous secret: a second rotation within 24 hours
dropped the first old secret early, though receivers may still hold it (docs/api.md §5, 6.1,
6.2). ``endpoints.previous_secret_encrypted`` now holds every rotated-out secret still
in its overlap, as a JSON list of ``{"secret": <Fernet token>, "expiresAt": <ISO 8601>}``
(oldest first), and ``previous_secret_expires_at`` the last of their expiries.

The columns keep their names and types: the worker's claim statement reads them as they
are. Each secret stays the Fernet token it was, so this needs no encryption key; a
previous secret already expired is dropped.

Revision ID: 0003
Revises: 0002
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

endpoints = sa.table(
    "endpoints",
    sa.column("id", sa.String),
    sa.column("previous_secret_encrypted", sa.Text),
    sa.column("previous_secret_expires_at", sa.DateTime(timezone=True)),
)


def _utc(value: datetime) -> datetime:
    # SQLite keeps naive UTC; PostgreSQL answers in the session's time zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _rows(bind: sa.Connection) -> list:
    return bind.execute(
        sa.select(
            endpoints.c.id,
            endpoints.c.previous_secret_encrypted,
            endpoints.c.previous_secret_expires_at,
        ).where(endpoints.c.previous_secret_encrypted.is_not(None))
    ).all()


def _set(bind: sa.Connection, endpoint_id: str, value: str | None, expires_at) -> None:
    bind.execute(
        sa.update(endpoints)
        .where(endpoints.c.id == endpoint_id)
        .values(previous_secret_encrypted=value, previous_secret_expires_at=expires_at)
    )


def upgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    for endpoint_id, token, expires_at in _rows(bind):
        if expires_at is None or _utc(expires_at) <= now:
            _set(bind, endpoint_id, None, None)
            continue
        entries = [{"secret": token, "expiresAt": _utc(expires_at).isoformat()}]
        _set(bind, endpoint_id, json.dumps(entries), expires_at)


def downgrade() -> None:
    # One slot again: the newest previous secret stays, older ones stop signing now.
    bind = op.get_bind()
    for endpoint_id, value, _ in _rows(bind):
        newest = json.loads(value)[-1]
        _set(bind, endpoint_id, newest["secret"], datetime.fromisoformat(newest["expiresAt"]))
