"""failing notice cause: what an endpoint's last failure was when endpoint.failing was reported

``failing_status_code`` and ``failing_error`` keep the cause reported with ``endpoint.failing``
(docs/api.md §11.5), so that every face can show a failing endpoint's warning with its cause
without reading its attempts. Both are null while no notice stands.

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("failing_status_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("failing_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("failing_error")
        batch.drop_column("failing_status_code")
