"""failing notice cause: what an endpoint's last failure was when endpoint.failing was reported

``failing_status_code`` and ``failing_error`` keep the cause reported with ``endpoint.failing``
(docs/api.md §11.5), so that every face can show a failing endpoint's warning with its cause
without reading its attempts. Both are null while no notice stands.

``ix_endpoints_failing_unnoticed``: beat looks for failing streaks not yet reported every
few seconds; the partial index holds only those, so the look costs nothing while every
endpoint is healthy.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

FAILING_UNNOTICED = sa.text(
    "deleted_at IS NULL AND failing_since IS NOT NULL AND failing_notified_at IS NULL"
)

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("failing_status_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("failing_error", sa.Text(), nullable=True))
    op.create_index(
        "ix_endpoints_failing_unnoticed",
        "endpoints",
        ["failing_since"],
        postgresql_where=FAILING_UNNOTICED,
        sqlite_where=FAILING_UNNOTICED,
    )


def downgrade() -> None:
    op.drop_index("ix_endpoints_failing_unnoticed", table_name="endpoints")
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("failing_error")
        batch.drop_column("failing_status_code")
