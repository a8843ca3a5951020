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
    assert settings.failing_notice_hours == 24
    assert settings.init_max_retries == 10 and settings.jwt_secret is None
    assert not settings.allow_private_targets.allows(__import__("ipaddress").ip_address("10.0.0.1"))
    assert settings.uses_redis and not settings.embedded
    assert settings.worker_concurrency == 256 and settings.worker_core_threads == 8
    # One delivery process per core of the machine.
    assert settings.worker_processes == len(__import__("os").sched_getaffinity(0))


def test_failing_notice_hours_takes_fractions(tmp_path):
    env = {**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), "WEBHOOKS_FAILING_NOTICE_HOURS": "0.001"}
    assert load_settings(env).failing_notice_hours == 0.001


def test_worker_processes_can_be_set(tmp_path):
    env = {**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), "WEBHOOKS_WORKER_PROCESSES": " 3 "}
    assert load_settings(env).worker_processes == 3


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
    ("value", "broker_url"),
    [
        ("rediss://:pw@cache:6380/2", "rediss://:pw@cache:6380/2"),
        ("redis://a:6379/0;redis://b:6379/0", "redis://a:6379/0;redis://b:6379/0"),
        (
            "sqla+sqlite:////var/lib/webhooks/broker.db",
            "sqla+sqlite:////var/lib/webhooks/broker.db",
        ),
        # The driver we ship, as for DATABASE_URL (SQLAlchemy 2.1 would pick psycopg 3).
        ("sqla+postgresql://u@db:5432/broker", "sqla+postgresql+psycopg2://u@db:5432/broker"),
        ("sqla+postgres://u@db/broker", "sqla+postgresql+psycopg2://u@db/broker"),
        ("amqp://guest@rabbit:5672//", "amqp://guest@rabbit:5672//"),
    ],
)
def test_broker_urls_kombu_knows_are_accepted(tmp_path, value, broker_url):
    settings = load_settings(
        {**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), "CELERY_BROKER_URL": value}
    )
    assert settings.broker_url == broker_url


def test_a_bad_broker_url_is_named_without_its_password(tmp_path):
    env = {**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), "CELERY_BROKER_URL": "htp://:s3cret@h/0"}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert str(info.value).startswith("CELERY_BROKER_URL must be a broker URL")
    assert "s3cret" not in str(info.value)


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
        ("WEBHOOKS_FAILING_NOTICE_HOURS", "0"),
        ("WEBHOOKS_FAILING_NOTICE_HOURS", "soon"),
        ("WEBHOOKS_RETENTION_DAYS", "0"),
        ("WEBHOOKS_INIT_MAX_RETRIES", "x"),
        ("WEBHOOKS_WORKER_CORE_THREADS", "0"),
        ("WEBHOOKS_WORKER_PROCESSES", "0"),
        ("WEBHOOKS_WORKER_PROCESSES", "two"),
        ("WEBHOOKS_WORKER_PROCESSES", "100000"),
        ("WEBHOOKS_LOG_FORMAT", "xml"),
        ("WEBHOOKS_DELIVERY_COMMIT", "off"),
        ("CELERY_BROKER_URL", "http://127.0.0.1:6379/0"),
        ("CELERY_BROKER_URL", "127.0.0.1:6379"),
        ("CELERY_BROKER_URL", "bogus://x"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:port/0"),
        ("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0;ftp://x"),
        ("CELERY_BROKER_URL", "sqla+nonsense:///x"),
        ("CELERY_BROKER_URL", "sqla+mysql://u@h/db"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path, name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), name: value})
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgresql://u:s3cret@h:notaport/db"),
        ("DATABASE_URL", "postgresql://u:s3cret@h:99999/db"),
        ("DATABASE_URL", "postgresqlx://u:s3cret@h/db"),
        ("DATABASE_URL", "postgresql+nodriver://h/db"),
        ("REDIS_URL", "redis://:s3cret@h:abc/0"),
        ("REDIS_URL", "redis://:s3cret@h/notadb"),
        ("REDIS_URL", "redis://"),
        ("CELERY_BROKER_URL", "redis://h/notadb"),
        ("CELERY_BROKER_URL", "rediss://h:6379/0;redis://:s3cret@h/cache"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "https://h:abc/x"),
        # Bases that every organization's preconfigured endpoints would inherit.
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://u:s3cret@hooks.example.com/x"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://hooks.example.com/a b"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://hooks.example.com/x?s3cret=1"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://hooks.example.com/x#s3cret"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://hooks.example.com:0/x"),
    ],
)
def test_a_malformed_url_names_its_variable_without_its_password(tmp_path, name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), name: value})
    assert str(info.value).startswith(name)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgresql://u:pw@[::1]:5433/db?sslmode=require"),
        ("DATABASE_URL", "postgresql:///db?host=/var/run/postgresql"),
        ("REDIS_URL", "unix:///run/redis.sock?db=2"),
        ("REDIS_URL", "redis://cache"),
        ("CELERY_BROKER_URL", "redis://cache:6379/"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "https://hooks.example.com:8443/base/"),
    ],
)
def test_well_formed_urls_are_accepted(tmp_path, name, value):
    load_settings({**BASE, "WEBHOOKS_DATA_DIR": str(tmp_path), name: value})


def test_a_private_preconfigured_base_is_the_operators_choice(tmp_path):
    # Preconfigured endpoints are the operator's own collectors: no allow list needed.
    settings = load_settings(
        {
            **BASE,
            "WEBHOOKS_DATA_DIR": str(tmp_path),
            "WEBHOOKS_PRECONFIGURED_BASE_URL": "http://10.0.0.5/hooks/",
        }
    )
    assert settings.preconfigured_base_url == "http://10.0.0.5/hooks"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgresql://u@h:notaport/db"),
        ("REDIS_URL", "redis://h/notadb"),
        ("WEBHOOKS_PRECONFIGURED_BASE_URL", "http://"),
    ],
)
@pytest.mark.parametrize("code", ["import webhooks_api.wsgi", "import webhooks_worker.celery_app"])
def test_a_malformed_url_stops_the_api_and_the_worker_at_start(name, value, code):
    env = {**os.environ, **BASE, name: value}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert name in result.stderr


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
    assert result.returncode == 4  # gunicorn stops the server on 4 (webhooks_api.wsgi)
    assert "WEBHOOKS_RETENTION_DAYS" in result.stderr


@pytest.mark.parametrize("code", ["import webhooks_api.wsgi", "import webhooks_worker.celery_app"])
def test_a_bad_broker_url_stops_the_api_and_the_worker_at_start(code):
    env = {**os.environ, **BASE, "CELERY_BROKER_URL": "redis:/127.0.0.1:6379/0"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "CELERY_BROKER_URL must be a broker URL" in result.stderr


# ---- secrets shared by every host ----------------------------------------------------------

OLD_KEY = "0dmv2Bhpj4d6C9W-YKaRH4A2e-_SMOiP5d7oBkBHkxM="
NEW_KEY = "Jq5cQ2qgq4m3sVt9o1vJr0yD8cKp2dE7wZ6hN4bXa1U="
# The real entry points an operator starts, each as its own process.
ENTRY_POINTS = {
    "api": [sys.executable, "-m", "gunicorn", "webhooks_api.wsgi:app", "--bind",
            "127.0.0.1:0", "--no-control-socket"],
    "worker": [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "worker",
               "--pool", "threads", "--without-gossip", "--without-mingle"],
    "beat": [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "beat",
             "--schedule", "/dev/null"],
    "cli": [sys.executable, "-m", "webhooks_api.cli", "org", "list"],
    "rotation": [sys.executable, "-m", "webhooks_api.cli", "rotate-encryption-key"],
}  # fmt: skip


def _start(argv: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """Run an entry point to its end; one that started anyway is stopped by the timeout."""
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    # A closed port: a process that got past its settings would find no broker to work on.
    env["REDIS_URL"] = f"redis://127.0.0.1:{_closed_port()}/0"
    env["WEBHOOKS_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("missing", [
    ("WEBHOOKS_ADMIN_TOKEN", "WEBHOOKS_ENCRYPTION_KEY"),
    ("WEBHOOKS_ENCRYPTION_KEY",),
    ("WEBHOOKS_ADMIN_TOKEN",),
])  # fmt: skip
@pytest.mark.parametrize("process", sorted(ENTRY_POINTS))
def test_no_process_starts_on_postgresql_without_the_shared_secrets(process, missing, tmp_path):
    env = {**BASE, "DATABASE_URL": os.environ["DATABASE_URL"]}
    for name in missing:
        env[name] = None
    result = _start(ENTRY_POINTS[process], env, tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "WEBHOOKS_ADMIN_TOKEN and WEBHOOKS_ENCRYPTION_KEY must both be set" in result.stderr
    assert f"({' and '.join(missing)} missing)" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was generated for this host to use instead.
    assert not (tmp_path / "data" / "encryption-key").exists()
    assert not (tmp_path / "data" / "admin-token").exists()


def test_settings_need_both_secrets_on_postgresql_only(tmp_path):
    bare = {"DATABASE_URL": BASE["DATABASE_URL"], "WEBHOOKS_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        load_settings(bare)
    assert "WEBHOOKS_ADMIN_TOKEN and WEBHOOKS_ENCRYPTION_KEY" in str(info.value)
    # The embedded default, and SQLite with Redis, still generate their own.
    assert load_settings({"WEBHOOKS_DATA_DIR": str(tmp_path)}).encryption_keys
    with_redis = {"REDIS_URL": BASE["REDIS_URL"], "WEBHOOKS_DATA_DIR": str(tmp_path)}
    assert load_settings(with_redis).admin_token


def test_the_encryption_key_may_be_a_list_whose_first_key_encrypts(tmp_path):
    value = f" {NEW_KEY} , {OLD_KEY} "
    settings = load_settings(
        {**BASE, "WEBHOOKS_ENCRYPTION_KEY": value, "WEBHOOKS_DATA_DIR": str(tmp_path)}
    )
    assert settings.encryption_keys == (NEW_KEY, OLD_KEY)
    assert settings.encryption_key == NEW_KEY


@pytest.mark.parametrize("value", [f"{NEW_KEY},not-a-key", f"{NEW_KEY},", "short"])
def test_a_bad_key_in_the_list_stops_the_process_naming_the_variable(value, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(
            {**BASE, "WEBHOOKS_ENCRYPTION_KEY": value, "WEBHOOKS_DATA_DIR": str(tmp_path)}
        )
    assert "WEBHOOKS_ENCRYPTION_KEY" in str(info.value)
    assert "not-a-key" not in str(info.value)  # a key, even a broken one, is never echoed
    result = _start(ENTRY_POINTS["worker"], {**BASE, "WEBHOOKS_ENCRYPTION_KEY": value}, tmp_path)
    assert result.returncode != 0
    assert "WEBHOOKS_ENCRYPTION_KEY" in result.stderr and "Traceback" not in result.stderr
