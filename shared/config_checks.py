"""Checks of single settings' values: URLs as their libraries will read them, and secrets.

shared.config assembles the settings from these; each check raises ConfigError with a
message that names its variable.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

from .errors import Invalid
from .redaction import redact
from .targets import parse_allowlist, validate_target_url


class ConfigError(Exception):
    """A setting has a bad value; the message names the variable."""


def persisted_secret(data_dir: Path, name: str, make: callable) -> str:
    """A development secret kept in the data directory so that every local process agrees."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def require_shared_secrets(*, admin_token: str, encryption_key: str) -> None:
    """On PostgreSQL every host must be given the same platform token and encryption key.

    A key generated into one host's data folder would encrypt signing secrets that the
    workers on every other host cannot read, and each api would accept its own token.
    """
    missing = [
        name
        for name, value in (
            ("WEBHOOKS_ADMIN_TOKEN", admin_token),
            ("WEBHOOKS_ENCRYPTION_KEY", encryption_key),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            "WEBHOOKS_ADMIN_TOKEN and WEBHOOKS_ENCRYPTION_KEY must both be set when "
            f"DATABASE_URL is PostgreSQL ({' and '.join(missing)} missing): every api, worker "
            "and beat process of a deployment needs the same two values. Make a key with "
            '`python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`'
        )


def fernet_keys(raw: str) -> tuple[str, ...]:
    """WEBHOOKS_ENCRYPTION_KEY as a list of Fernet keys, comma-separated, newest first."""
    keys = tuple(part.strip() for part in raw.split(","))
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            which = f"key {position} of " if len(keys) > 1 else ""
            raise ConfigError(
                f"WEBHOOKS_ENCRYPTION_KEY: {which}the value is not a Fernet key (URL-safe "
                "base64 of 32 bytes; several keys are separated by commas, newest first)"
            ) from None
    return keys


# The brokers the processes are built for: Redis (production) and kombu's SQLAlchemy
# transport (the embedded default, `sqla+sqlite://`). Any other transport kombu knows is
# passed to Celery as it is.
_BROKER_EXAMPLES = "redis://, rediss://, sqla+sqlite:// or sqla+postgresql://"


def celery_broker_url(env: dict[str, str]) -> str | None:
    """CELERY_BROKER_URL checked as kombu will read it, so a bad value stops the start."""
    raw = env.get("CELERY_BROKER_URL", "").strip()
    if not raw:
        return None
    from kombu.transport import TRANSPORT_ALIASES

    urls = []
    # Celery takes a `;`-separated list of failover brokers.
    for url in (part.strip() for part in raw.split(";")):
        scheme, sep, rest = url.partition("://")
        transport = scheme.partition("+")[0]
        if not sep or transport not in TRANSPORT_ALIASES:
            raise ConfigError(
                f"CELERY_BROKER_URL must be a broker URL ({_BROKER_EXAMPLES}), got {redact(url)!r}"
            )
        if transport in ("sqla", "sqlalchemy"):
            url = _sqlalchemy_broker_url(url, scheme, rest)
        elif transport in ("redis", "rediss"):
            check_redis_url("CELERY_BROKER_URL", url)
        else:
            try:
                urlsplit(url).port  # noqa: B018 - parsing is the check
            except ValueError as exc:
                raise ConfigError(f"CELERY_BROKER_URL: {exc}, got {redact(url)!r}") from None
        urls.append(url)
    return ";".join(urls)


def _sqlalchemy_broker_url(url: str, scheme: str, rest: str) -> str:
    """A `sqla+<database URL>` broker whose database SQLAlchemy can open with our drivers."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    database = scheme.partition("+")[2]
    if database in ("postgres", "postgresql"):
        # As for DATABASE_URL: SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2.
        database = "postgresql+psycopg2"
        url = f"{scheme.partition('+')[0]}+{database}://{rest}"
    try:
        make_url(f"{database}://{rest}").get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError):
        raise ConfigError(
            "CELERY_BROKER_URL must name a database SQLAlchemy can open after sqla+ "
            f"(sqla+sqlite:///path or sqla+postgresql://...), got {redact(url)!r}"
        ) from None
    return url


def check_database_url(url: str) -> None:
    """DATABASE_URL as SQLAlchemy will read it: a known dialect and driver, a numeric port."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
        port = parsed.port
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"DATABASE_URL is not a database URL SQLAlchemy can open ({redact(str(exc))}), "
            f"got {redact(url)!r}"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"DATABASE_URL port must be 1-65535, got {redact(url)!r}")


def check_redis_url(name: str, url: str) -> None:
    """A Redis URL as redis-py will read it, with a host and a numeric database."""
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{name}: {redact(str(exc))}, got {redact(url)!r}") from None
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    if not parts.hostname:
        raise ConfigError(f"{name} must name a host (redis://host:6379/0), got {redact(url)!r}")
    # redis-py silently reads a non-numeric path (redis://host/cache) as database 0.
    database = parts.path.lstrip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ConfigError(
            f"{name} database must be a number (redis://host:6379/0), got {redact(url)!r}"
        )


def check_http_url(name: str, url: str) -> None:
    """An http(s) URL with a host and, if any, a numeric port."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - parsing is the check
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}, got {redact(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} must be an http:// or https:// URL with a host, got {redact(url)!r}"
        )


# The operator chose the preconfigured base, so its address is trusted (private ranges
# included), as shared.services.preconfigured does when it saves those endpoints.
_OPERATOR_URLS = parse_allowlist("*")


def check_preconfigured_base(url: str) -> None:
    """The base of preconfigured endpoints' URLs must make URLs an endpoint may have.

    Every organization's initialization appends ``/{organizationId}/{category}`` and saves
    the result as an endpoint, under the rules of any endpoint's URL (no credentials,
    spaces or port 0). A base that breaks them would fail every initialization, so it
    stops the process instead.
    """
    name = "WEBHOOKS_PRECONFIGURED_BASE_URL"
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # Not echoed: a query string is where a token would sit.
        raise ConfigError(
            f"{name} must not have a query or fragment (the organization and category are "
            "appended as path segments)"
        )
    try:
        validate_target_url(
            f"{url.rstrip('/')}/org-example/all-events", _OPERATOR_URLS, resolve=False
        )
    except Invalid as exc:
        raise ConfigError(f"{name}: {exc.message}, got {redact(url)!r}") from None


def database_url(env: dict[str, str], data_dir: Path) -> str:
    """DATABASE_URL checked and with the driver we ship; the embedded SQLite file when unset."""
    database_url = env.get("DATABASE_URL", "").strip()
    if not database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'webhooks.db'}"
    for plain in ("postgres://", "postgresql://"):
        # SQLAlchemy 2.1 would pick psycopg 3 for a bare scheme; we ship psycopg2.
        if database_url.startswith(plain):
            database_url = "postgresql+psycopg2://" + database_url[len(plain) :]
    if not database_url.startswith(("postgresql", "sqlite")):
        raise ConfigError(
            f"DATABASE_URL must be a postgresql:// or sqlite:// URL, got {redact(database_url)!r}"
        )
    check_database_url(database_url)
    return database_url
