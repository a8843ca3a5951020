"""manual attempts asked for are rows until they are made

A manual resend or recover used to live only in the broker: an emptied Redis lost the
request, and a delivery the resend had created stayed ``pending`` for ever with nothing
scheduled. ``manual_requests`` holds each asked-for attempt (its id is the attempt's
id) until the attempt is recorded; beat's sweep hands a request that was not made in
time to the broker again.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manual_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_manual_requests_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manual_requests")),
    )
    op.create_index(
        op.f("ix_manual_requests_enqueued"), "manual_requests", ["enqueued_at"], unique=False
    )
    op.create_index(
        op.f("ix_manual_requests_delivery"), "manual_requests", ["delivery_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("manual_requests")
