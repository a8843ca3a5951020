"""ordering per resource and pacing per endpoint

What docs/api.md §11.3 (ordering) and §11.6 (rate limit) need besides the endpoint
columns of 0006:

- ``resource_sequences``: the last ``webhook-sequence`` given per (endpoint, resource),
  upserted by every fan-out to an ordered endpoint; its row is also what serializes two
  fan-outs of the same resource. No index but its key: every upsert of a counter then
  stays a heap-only update, and retention's hourly purge reads the table once.
- ``deliveries.resource_id`` and ``deliveries.sequence``: set on deliveries to an ordered
  endpoint of an event with a resource; null otherwise (never held).
- ``deliveries.slot_at`` and ``manual_requests.slot_at``: the time the rate limiter gave a
  try that had to wait for its turn; the try goes then without asking again.
- ``endpoints.paused_until``: a receiver's Retry-After (429, 503) holds all of the
  endpoint's tries until then.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ORDERED_PENDING = sa.text("status = 'pending' AND sequence IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "resource_sequences",
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=256), nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["endpoints.id"],
            name="fk_resource_sequences_endpoint_id_endpoints",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("endpoint_id", "resource_id", name="pk_resource_sequences"),
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("resource_id", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("sequence", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("slot_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("manual_requests") as batch:
        batch.add_column(sa.Column("slot_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    # The claim asks whether an earlier delivery of the resource is still pending, and a
    # delivery that ends finds the next one: both walk this index.
    op.create_index(
        "ix_deliveries_resource_order",
        "deliveries",
        ["endpoint_id", "resource_id", "sequence"],
        postgresql_where=ORDERED_PENDING,
        sqlite_where=ORDERED_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_resource_order", table_name="deliveries")
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("paused_until")
    with op.batch_alter_table("manual_requests") as batch:
        batch.drop_column("slot_at")
    with op.batch_alter_table("deliveries") as batch:
        for column in ("slot_at", "sequence", "resource_id"):
            batch.drop_column(column)
    op.drop_table("resource_sequences")
