"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from shared.models import Base


def test_the_migrated_schema_matches_the_models(database):
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            fillfactor = conn.execute(
                text("SELECT reloptions FROM pg_class WHERE relname = 'deliveries'")
            ).scalar()
            due_index = conn.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_deliveries_pending_due'"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert diffs == []
    assert fillfactor == ["fillfactor=70"]
    assert due_index.endswith("WHERE ((status)::text = 'pending'::text)")
