"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.orm import Session

from shared.crypto import decrypt, encrypt, new_signing_secret
from shared.migrate import alembic_config, upgrade
from shared.models import Base, Endpoint, Organization
from shared.services.endpoint_secrets import previous_secrets, signing_secrets

# Timestamps go through the database: PostgreSQL keeps microseconds, the driver's
# conversions no more than that.
ONE_MS = timedelta(milliseconds=1)


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
    assert due_index.endswith(
        "WHERE (((status)::text = 'pending'::text) AND (next_attempt_at IS NOT NULL))"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_database(request, tmp_path, database) -> Iterator[str]:
    """An empty database of its own, for migrating step by step."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    base, _, name = database.rpartition("/")
    drop = text(f'DROP DATABASE IF EXISTS "{name}_steps" WITH (FORCE)')
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(drop)
        conn.execute(text(f'CREATE DATABASE "{name}_steps"'))
    yield f"{base}/{name}_steps"
    with admin.connect() as conn:
        conn.execute(drop)
    admin.dispose()


def test_0003_keeps_each_previous_secret_in_its_overlap_and_drops_expired_ones(blank_database):
    url = blank_database
    upgrade(url, "0002")
    now = datetime.now(UTC)
    secrets = {name: new_signing_secret() for name in ("current", "previous", "expired")}
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Organization.__table__).values(id="org-a", name="A"))
            for endpoint_id, previous, expires_at in (
                ("whk-rotated", "previous", now + timedelta(hours=3)),
                ("whk-expired", "expired", now - timedelta(seconds=1)),
                ("whk-never", None, None),
            ):
                conn.execute(
                    insert(Endpoint.__table__).values(
                        id=endpoint_id,
                        organization_id="org-a",
                        url="https://example.com/hook",
                        secret_encrypted=encrypt(secrets["current"]),
                        previous_secret_encrypted=encrypt(secrets[previous]) if previous else None,
                        previous_secret_expires_at=expires_at,
                    )
                )
        upgrade(url, "head")
        with Session(engine) as session:
            rotated, expired, never = (
                session.get(Endpoint, i) for i in ("whk-rotated", "whk-expired", "whk-never")
            )
            assert signing_secrets(rotated) == [secrets["current"], secrets["previous"]]
            assert [expiry for _, expiry in previous_secrets(rotated)] == [
                rotated.previous_secret_expires_at
            ]
            assert abs(rotated.previous_secret_expires_at - (now + timedelta(hours=3))) < ONE_MS
            # Nothing readable at rest: the secret is the Fernet token it was.
            assert secrets["previous"] not in rotated.previous_secret_encrypted
            assert signing_secrets(rotated, now=now + timedelta(hours=4)) == [secrets["current"]]
            for endpoint in (expired, never):
                assert endpoint.previous_secret_encrypted is None
                assert endpoint.previous_secret_expires_at is None
                assert signing_secrets(endpoint) == [secrets["current"]]

        command.downgrade(alembic_config(url), "0002")
        with engine.connect() as conn:
            token, expires_at = conn.execute(
                select(
                    Endpoint.previous_secret_encrypted, Endpoint.previous_secret_expires_at
                ).where(Endpoint.id == "whk-rotated")
            ).one()
        assert decrypt(token) == secrets["previous"]
        assert abs(expires_at - (now + timedelta(hours=3))) < ONE_MS
    finally:
        engine.dispose()


def test_alembic_upgrade_head_from_the_checkout_migrates_the_database_url(database, tmp_path):
    """The top-level alembic.ini, run as an operator would, against a fresh database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from alembic.script import ScriptDirectory

    root = Path(__file__).resolve().parents[2]
    base, _, _name = database.rpartition("/")
    fresh = f"webhooks_alembic_{os.getpid()}"
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{fresh}"'))
        conn.execute(text(f'CREATE DATABASE "{fresh}"'))
    try:
        # The bare scheme an operator writes; DATABASE_URL is read as every process reads it.
        url = f"postgresql://{base.split('://', 1)[1]}/{fresh}"
        env = {**os.environ, "DATABASE_URL": url, "WEBHOOKS_DATA_DIR": str(tmp_path)}
        for secret in ("WEBHOOKS_ADMIN_TOKEN", "WEBHOOKS_ENCRYPTION_KEY"):
            env.pop(secret)  # the schema needs no secret
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "Running upgrade" in result.stderr
        head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
        engine = create_engine(base + "/" + fresh)
        try:
            with engine.connect() as conn:
                version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        finally:
            engine.dispose()
        assert version == head
        assert diffs == []
        again = subprocess.run(
            [sys.executable, "-m", "alembic", "current"],
            cwd=root, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert again.returncode == 0 and head in again.stdout
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)'))
        admin.dispose()
