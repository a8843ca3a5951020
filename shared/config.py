"""Settings from the environment, validated once at start (docs/api.md §9)."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet

from . import config_checks as checks
from .config_checks import ConfigError
from .redaction import redact
from .targets import AllowList, parse_allowlist

DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000)
# A worker process's most delivery threads, and the threads it runs while posts answer
# quickly (webhooks_worker.thread_pool); the Procfile and the benchmark start from these.
DEFAULT_WORKER_CONCURRENCY = 256
DEFAULT_WORKER_CORE_THREADS = 8
# The most delivery processes one `webhooks worker` runs (each holds its own database and
# HTTP pools; more than this on one machine is a typo rather than a plan).
MAX_WORKER_PROCESSES = 256


def default_worker_processes() -> int:
    """One delivery process per core this process may run on (cpusets and taskset count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """Everything the processes read from the environment."""

    database_url: str
    broker_url: str
    redis_url: str | None
    admin_token: str
    jwt_secret: str | None
    # Fernet keys, newest first: the first encrypts, every one decrypts (key rotation).
    encryption_keys: tuple[str, ...]
    retry_schedule: tuple[int, ...]
    allow_private_targets: AllowList
    preconfigured_base_url: str | None
    max_payload_bytes: int
    disable_after_hours: float
    retention_days: int
    init_max_retries: int
    data_dir: Path
    log_format: str = "text"
    worker_concurrency: int = DEFAULT_WORKER_CONCURRENCY
    # Threads a worker runs while its posts answer quickly; it grows towards
    # worker_concurrency as posts wait on slow receivers (webhooks_worker.thread_pool).
    worker_core_threads: int = DEFAULT_WORKER_CORE_THREADS
    # Delivery processes `webhooks worker` supervises (webhooks_worker.supervisor).
    worker_processes: int = 1
    # "async": the worker's delivery writes (claim, record, fan-out) do not wait for
    # PostgreSQL's WAL flush (shared.db.ASYNC_COMMIT); "sync": they do.
    delivery_commit: str = "async"
    embedded: bool = False
    # Bearer token /metrics asks for; None leaves it open.
    metrics_token: str | None = None
    # Hours of continuous failure before endpoint.failing is reported (docs/api.md §11.5).
    failing_notice_hours: float = 24.0
    extra: dict = field(default_factory=dict)

    @property
    def encryption_key(self) -> str:
        """The key that encrypts new secrets (the first of WEBHOOKS_ENCRYPTION_KEY)."""
        return self.encryption_keys[0]

    @property
    def uses_redis(self) -> bool:
        """True when the broker is Redis (production), false on the embedded broker."""
        return self.broker_url.startswith(("redis://", "rediss://"))


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _retry_schedule(env: dict[str, str]) -> tuple[int | float, ...]:
    raw = env.get("WEBHOOKS_RETRY_SCHEDULE", "").strip()
    if not raw:
        return DEFAULT_RETRY_SCHEDULE
    values = []
    for part in raw.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise ConfigError(
                f"WEBHOOKS_RETRY_SCHEDULE must be comma-separated seconds, got {part.strip()!r}"
            ) from None
        if not 0 < value <= 7 * 86400:
            raise ConfigError(
                f"WEBHOOKS_RETRY_SCHEDULE entries must be between 0 and 604800 seconds, got {part}"
            )
        values.append(int(value) if value.is_integer() else value)
    return tuple(values)


def _data_dir(env: dict[str, str]) -> Path:
    return Path(env.get("WEBHOOKS_DATA_DIR") or ".webhooks").resolve()


def load_database_url(environ: dict[str, str] | None = None) -> str:
    """Only the database URL, for schema migrations, which need no secret."""
    env = dict(os.environ if environ is None else environ)
    return checks.database_url(env, _data_dir(env))


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad variable."""
    env = dict(os.environ if environ is None else environ)
    data_dir = _data_dir(env)

    redis_url = env.get("REDIS_URL", "").strip() or None
    embedded = not env.get("DATABASE_URL", "").strip() and not redis_url
    database_url = checks.database_url(env, data_dir)

    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"REDIS_URL must be a redis:// URL, got {redact(redis_url)!r}")
        checks.check_redis_url("REDIS_URL", redis_url)

    broker_url = checks.celery_broker_url(env) or redis_url
    if not broker_url:
        # kombu's SQLAlchemy transport on a SQLite file: a broker with nothing to install.
        data_dir.mkdir(parents=True, exist_ok=True)
        broker_url = f"sqla+sqlite:///{data_dir / 'broker.db'}"

    admin_token = env.get("WEBHOOKS_ADMIN_TOKEN", "").strip()
    encryption_key = env.get("WEBHOOKS_ENCRYPTION_KEY", "").strip()
    if database_url.startswith("postgresql"):
        checks.require_shared_secrets(admin_token=admin_token, encryption_key=encryption_key)
    if not admin_token:
        admin_token = checks.persisted_secret(
            data_dir, "admin-token", lambda: secrets.token_urlsafe(32)
        )
    elif len(admin_token) < 16:
        raise ConfigError("WEBHOOKS_ADMIN_TOKEN must be at least 16 characters")

    jwt_secret = env.get("WEBHOOKS_JWT_SECRET", "").strip() or None
    if jwt_secret is not None and len(jwt_secret) < 16:
        raise ConfigError("WEBHOOKS_JWT_SECRET must be at least 16 characters")

    if not encryption_key:
        encryption_key = checks.persisted_secret(
            data_dir, "encryption-key", lambda: Fernet.generate_key().decode()
        )
    encryption_keys = checks.fernet_keys(encryption_key)

    metrics_token = env.get("WEBHOOKS_METRICS_TOKEN", "").strip() or None
    if metrics_token is not None and len(metrics_token) < 16:
        raise ConfigError("WEBHOOKS_METRICS_TOKEN must be at least 16 characters")

    try:
        allow = parse_allowlist(env.get("WEBHOOKS_ALLOW_PRIVATE_TARGETS"))
    except ValueError as exc:
        raise ConfigError(f"WEBHOOKS_ALLOW_PRIVATE_TARGETS: {exc}") from None

    base_url = env.get("WEBHOOKS_PRECONFIGURED_BASE_URL", "").strip() or None
    if base_url:
        checks.check_http_url("WEBHOOKS_PRECONFIGURED_BASE_URL", base_url)
        checks.check_preconfigured_base(base_url)

    log_format = env.get("WEBHOOKS_LOG_FORMAT", "text").strip() or "text"
    if log_format not in ("text", "json"):
        raise ConfigError("WEBHOOKS_LOG_FORMAT must be 'text' or 'json'")

    delivery_commit = env.get("WEBHOOKS_DELIVERY_COMMIT", "async").strip() or "async"
    if delivery_commit not in ("async", "sync"):
        raise ConfigError(
            f"WEBHOOKS_DELIVERY_COMMIT must be 'async' or 'sync', got {delivery_commit!r}"
        )

    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        redis_url=redis_url,
        admin_token=admin_token,
        jwt_secret=jwt_secret,
        encryption_keys=encryption_keys,
        retry_schedule=_retry_schedule(env),
        allow_private_targets=allow,
        preconfigured_base_url=base_url.rstrip("/") if base_url else None,
        max_payload_bytes=_int(
            env, "WEBHOOKS_MAX_PAYLOAD_BYTES", 256 * 1024, 1024, 64 * 1024 * 1024
        ),
        disable_after_hours=_float(env, "WEBHOOKS_DISABLE_AFTER_HOURS", 120.0, 0.0001, 24 * 365),
        retention_days=_int(env, "WEBHOOKS_RETENTION_DAYS", 30, 1, 3650),
        init_max_retries=_int(env, "WEBHOOKS_INIT_MAX_RETRIES", 10, 0, 1000),
        data_dir=data_dir,
        log_format=log_format,
        worker_concurrency=_int(
            env, "WEBHOOKS_WORKER_CONCURRENCY", DEFAULT_WORKER_CONCURRENCY, 1, 1000
        ),
        worker_core_threads=_int(
            env, "WEBHOOKS_WORKER_CORE_THREADS", DEFAULT_WORKER_CORE_THREADS, 1, 1000
        ),
        worker_processes=_int(
            env, "WEBHOOKS_WORKER_PROCESSES", default_worker_processes(), 1, MAX_WORKER_PROCESSES
        ),
        delivery_commit=delivery_commit,
        embedded=embedded,
        metrics_token=metrics_token,
        failing_notice_hours=_float(env, "WEBHOOKS_FAILING_NOTICE_HOURS", 24.0, 0.0001, 24 * 365),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded on first use."""
    return load_settings()


def settings_or_exit(exit_code: int = 2) -> Settings:
    """The settings, or the process stops at start with a line naming the bad variable."""
    try:
        return get_settings()
    except ConfigError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        raise SystemExit(exit_code) from None
