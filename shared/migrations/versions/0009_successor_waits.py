"""successor waits: a pending ordered delivery knows when a later one is parked behind it

``deliveries.successor_waits`` is set on the last pending delivery of a resource when a
fan-out makes a later delivery of that resource to the same ordered endpoint (docs/api.md
§11.3). The later one is then made parked (no due time, no task), and the end of the
marked one lets it go. A delivery that ends unmarked has nothing behind it, so the common
case (one event per resource in flight) costs no extra statement at its end.

``ix_deliveries_release_owed``: the end's release clears the mark of the ended delivery
in the same statement, so an ended delivery still marked is one whose worker died before
the release; beat's sweep looks for those every few seconds, through this partial index
of them (empty while nothing is owed).

``ix_deliveries_endpoint_status_order`` (endpoint, status, resource, sequence) replaces both
``ix_deliveries_endpoint_status`` and ``ix_deliveries_resource_order``: the ordering
lookups (is an earlier delivery of this resource pending, which is next) and the
endpoint's deliveries by status use one index. With two, a planner whose statistics were
gathered while few deliveries were pending took the (endpoint, status) index for the
ordering lookups and filtered every pending delivery of the endpoint for each, exactly
when a burst had made them many. Building it reads the whole table once: on a large
deployment the upgrade takes that long, and writes to deliveries wait for it.

Deliveries pending at upgrade are marked when they are ordered, since an earlier version
may have parked later ones behind them without marking: at worst their end looks for a
successor and finds none.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

ORDERED_PENDING = sa.text("status = 'pending' AND sequence IS NOT NULL")
RELEASE_OWED = sa.text("successor_waits AND status <> 'pending'")

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(
            sa.Column("successor_waits", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE deliveries SET successor_waits = true "
        "WHERE status = 'pending' AND sequence IS NOT NULL"
    )
    op.drop_index("ix_deliveries_resource_order", table_name="deliveries")
    op.drop_index("ix_deliveries_endpoint_status", table_name="deliveries")
    op.create_index(
        "ix_deliveries_endpoint_status_order",
        "deliveries",
        ["endpoint_id", "status", "resource_id", "sequence"],
    )
    op.create_index(
        "ix_deliveries_release_owed",
        "deliveries",
        ["id"],
        postgresql_where=RELEASE_OWED,
        sqlite_where=RELEASE_OWED,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_release_owed", table_name="deliveries")
    op.drop_index("ix_deliveries_endpoint_status_order", table_name="deliveries")
    op.create_index("ix_deliveries_endpoint_status", "deliveries", ["endpoint_id", "status"])
    op.create_index(
        "ix_deliveries_resource_order",
        "deliveries",
        ["endpoint_id", "resource_id", "sequence"],
        postgresql_where=ORDERED_PENDING,
        sqlite_where=ORDERED_PENDING,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("successor_waits")
