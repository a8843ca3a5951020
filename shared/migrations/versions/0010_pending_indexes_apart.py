"""pending deliveries by due time, and parked ones apart

``ix_deliveries_pending_due`` held every pending delivery (``status = 'pending'``). Any
lookup of pending deliveries could use it, and the planner did whenever its statistics
had been gathered while few deliveries were pending (the usual state between bursts):
the ordering lookups of a burst's claims and records (is an earlier delivery of this
resource pending, which one is next) then read every pending delivery, milliseconds each,
instead of the few entries of their own resource in ``ix_deliveries_endpoint_status_order``.
Now it holds only the pending deliveries that have a due time, a predicate none of those
lookups implies, which is what its readers (beat's sweep, the gauges) ask for anyway.

``ix_deliveries_parked``: the pending deliveries with no due time (parked behind an
earlier delivery of their resource, docs/api.md §11.3), for the gauges and the hourly
look for parked deliveries with nothing pending before them.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

PENDING = sa.text("status = 'pending'")
DUE = sa.text("status = 'pending' AND next_attempt_at IS NOT NULL")
PARKED = sa.text("status = 'pending' AND next_attempt_at IS NULL")

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_pending_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_pending_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=DUE,
        sqlite_where=DUE,
    )
    op.create_index(
        "ix_deliveries_parked",
        "deliveries",
        ["created_at"],
        postgresql_where=PARKED,
        sqlite_where=PARKED,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_parked", table_name="deliveries")
    op.drop_index("ix_deliveries_pending_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_pending_due",
        "deliveries",
        ["next_attempt_at"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
