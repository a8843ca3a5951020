"""messages remember the trace that reported them

With tracing on, a try that beat's sweep hands to the broker long after the report (a
retry due in more than a minute, a lost task) continues the message's trace: the
message keeps the W3C traceparent of the request that reported it. Null when tracing is
off, and for messages stored before this revision.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("trace_parent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("messages", "trace_parent")
