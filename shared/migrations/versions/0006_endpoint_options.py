"""endpoint options: custom headers, payload filter, ordering, rate limit, resource binding, expiry

Columns for the endpoint options of docs/api.md §11, all nullable or defaulted, so existing
endpoints keep behaving as before:

- ``headers_encrypted``: the custom headers as one Fernet token of a JSON object (values
  often carry a receiver's credentials, so they are encrypted like signing secrets).
- ``filter``: the payload filter as given (JSON), null for none.
- ``ordering``: ``none`` or ``resource``.
- ``rate_limit``: attempts per second, null for none.
- ``resource_id``: the one resource an endpoint is bound to, null for none.
- ``expires_at``: when the endpoint is deleted, null for never.
- ``deleted_reason``: why the service deleted an endpoint by itself (``resource ended``,
  ``expired``), null for a deletion by a person.
- ``failing_notified_at``: when ``endpoint.failing`` was reported for the current failing
  streak, so it is reported once per streak.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LIVE_EXPIRING = sa.text("deleted_at IS NULL AND expires_at IS NOT NULL")
LIVE_BOUND = sa.text("deleted_at IS NULL AND resource_id IS NOT NULL")


def upgrade() -> None:
    json_type = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("headers_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("filter", json_type, nullable=True))
        batch.add_column(
            sa.Column("ordering", sa.String(length=16), nullable=False, server_default="none")
        )
        batch.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("resource_id", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deleted_reason", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("failing_notified_at", sa.DateTime(timezone=True), nullable=True)
        )
    # Beat's expiry sweep reads live endpoints with an expiry; fan-out finds the endpoints
    # bound to an event's resource.
    op.create_index(
        "ix_endpoints_expiring",
        "endpoints",
        ["expires_at"],
        postgresql_where=LIVE_EXPIRING,
        sqlite_where=LIVE_EXPIRING,
    )
    op.create_index(
        "ix_endpoints_org_resource",
        "endpoints",
        ["organization_id", "resource_id"],
        postgresql_where=LIVE_BOUND,
        sqlite_where=LIVE_BOUND,
    )


def downgrade() -> None:
    op.drop_index("ix_endpoints_org_resource", table_name="endpoints")
    op.drop_index("ix_endpoints_expiring", table_name="endpoints")
    with op.batch_alter_table("endpoints") as batch:
        for column in (
            "failing_notified_at",
            "deleted_reason",
            "expires_at",
            "resource_id",
            "rate_limit",
            "ordering",
            "filter",
            "headers_encrypted",
        ):
            batch.drop_column(column)
