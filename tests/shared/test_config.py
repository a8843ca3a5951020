"""Settings: defaults, validation, and a bad value stopping the process with its name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.config import DEFAULT_RETRY_SCHEDULE, ConfigError, load_settings

BASE = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/x",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "WEBHOOKS_ADMIN_TOKEN": "0123456789abcdef0123",
    "WEBHOOKS_ENCRYPTION_KEY": "0dmv2Bhpj4d6C9W-YKaRH4A2e-_SMOiP5d7oBkBHkxM=",
}


def test_defaults(tmp_path):
    settings = load_settings({**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path)})
    assert settings.database_url == "postgresql+psycopg2://postgres@127.0.0.1:5432/x"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert settings.max_payload_bytes == 256 * 1024
    assert settings.disable_after_hours == 120 and settings.retention_days == 30
    assert settings.init_max_retries == 10 and settings.jwt_secret is None
    assert not settings.allow_private_targets.allows(__import__("ipaddress").ip_address("10.0.0.1"))
    assert settings.uses_redis and not settings.embedded


def test_embedded_default_needs_nothing(tmp_path):
    settings = load_settings({"WEBHOOKS_DATA_DIR": str(tmp_path)})
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path / 'webhooks.db'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    # Generated secrets are kept, so that every local process agrees on them.
    again = load_settings({"WEBHOOKS_DATA_DIR": str(tmp_path)})
    assert again.admin_token == settings.admin_token
    assert again.encryption_key == settings.encryption_key
    assert oct((tmp_path / "admin-token").stat().st_mode & 0o777) == "0o600"


def test_broker_override_and_empty_allowlist(tmp_path):
    settings = load_settings(
        {
            **BASE,
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "",
            "WEBHOOKS_RETRY_SCHEDULE": "1, 2.5,3",
            "WEBHOOKS_DATA_DIR": str(tmp_path),
        }
    )
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert settings.retry_schedule == (1, 2.5, 3)
    assert not settings.allow_private_targets.allows(
        __import__("ipaddress").ip_address("127.0.0.1")
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("WEBHOOKS_ADMIN_TOKEN", "short"),
        ("WEBHOOKS_JWT_SECRET", "short"),
        ("WEBHOOKS_ENCRYPTION_KEY", "not-a-fernet-key"),
        ("WEBHOOKS_RETRY_SCHEDULE", "5,abc"),
        ("WEBHOOKS_RETRY_SCHEDULE", "5,-1"),
        ("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "ftp://x"),
        ("WEBHOOKS_MAX_PAYLOAD_BYTES", "lots"),
        ("WEBHOOKS_MAX_PAYLOAD_BYTES", "10"),
        ("WEBHOOKS_DISABLE_AFTER_HOURS", "-3"),
        ("WEBHOOKS_RETENTION_DAYS", "0"),
        ("WEBHOOKS_INIT_MAX_RETRIES", "x"),
        ("WEBHOOKS_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path, name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), name: value})
    assert name in str(info.value)


def test_a_bad_value_stops_the_process_at_start(tmp_path):
    env = {**os.environ, **BASE, "WEBHOOKS_RETENTION_DAYS": "never"}
    result = subprocess.run(
        [sys.executable, "-m", "webhooks_api.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WEBHOOKS_RETENTION_DAYS" in result.stderr
    result = subprocess.run(
        [sys.executable, "-c", "import webhooks_api.wsgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "WEBHOOKS_RETENTION_DAYS" in result.stderr
