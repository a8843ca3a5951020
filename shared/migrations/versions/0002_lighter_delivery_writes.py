"""lighter writes on the delivery hot path

Every delivery is updated twice (its claim, then its record) and gets one attempt row, so
each index on those tables is written several times per delivery; PostgreSQL spent
a large share of the service's CPU on index writes. Three changes:

- ``attempts``: ``ix_attempts_delivery`` (delivery_id) goes; ``uq_attempts_delivery_try``
  (delivery_id, try_number) already answers every lookup by delivery.
- ``deliveries``: the due-tries index covers pending deliveries only. Every query that
  reads it (beat's sweep, the due gauges) asks for pending ones, and a delivery that is
  delivered or failed no longer adds an entry at its last update.
- ``deliveries``: fillfactor 70, so that the claim (which changes only the unindexed lease)
  is a heap-only update that writes no index at all.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_attempts_delivery", table_name="attempts")
    op.drop_index("ix_deliveries_status_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_pending_due",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    if op.get_bind().dialect.name == "postgresql":
        # Applies to pages written from now on; existing ones fill up as rows are updated.
        op.execute("ALTER TABLE deliveries SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    op.drop_index("ix_deliveries_pending_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_status_due", "deliveries", ["status", "next_attempt_at"], unique=False
    )
    op.create_index("ix_attempts_delivery", "attempts", ["delivery_id"], unique=False)
