"""Real-service fixtures: PostgreSQL, Redis, a Celery worker process and loopback receivers.

The environment is set before any project module is imported, so that every process
(this one and the worker it starts) reads the same test settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# CI names its database; a developer's run gets its own, so concurrent runs never collide.
AUTO_DATABASE = "TEST_DATABASE_URL" not in os.environ
# pytest-xdist's workers (gw0, gw1, ...) each run a share of the tests with their own worker
# process and TRUNCATE between tests, so each gets a database and a Redis db of its own.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(_XDIST_WORKER[2:]) if _XDIST_WORKER.startswith("gw") else 0
# One run's workers share this, so that their Redis dbs are picked together and differ.
_RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))


def _worker_database_url(url: str) -> str:
    base, _, name = url.rpartition("/")
    return url if _WORKER_INDEX == 0 else f"{base}/{name}_{_XDIST_WORKER}"


def _worker_redis_url(url: str) -> str:
    # Dbs 1..15 (0 is the default everything else uses). Each worker takes every second db
    # from the given one: the db after it is the worker's spare (tests/webhooks_worker/
    # test_celery_app.py publishes there so the session's worker cannot take the messages).
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db) - 1 + 2 * _WORKER_INDEX) % 15 + 1}"


TEST_DATABASE_URL = _worker_database_url(
    os.environ.get(
        "TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/webhooks_test_{os.getpid()}"
    )
)
TEST_REDIS_URL = _worker_redis_url(
    os.environ.get(
        "TEST_REDIS_URL", f"redis://127.0.0.1:6379/{1 + zlib.crc32(_RUN_ID.encode()) % 15}"
    )
)
ADMIN_TOKEN = "test-platform-token-0123456789"
JWT_SECRET = "test-jwt-secret-0123456789abcdef"
ENCRYPTION_KEY = "0dmv2Bhpj4d6C9W-YKaRH4A2e-_SMOiP5d7oBkBHkxM="
# Loopback receivers stand in for customers' servers, so loopback is opened in tests;
# the SSRF tests switch the allow list off explicitly.
TEST_ENV = {
    "DATABASE_URL": TEST_DATABASE_URL,
    "REDIS_URL": TEST_REDIS_URL,
    "WEBHOOKS_ADMIN_TOKEN": ADMIN_TOKEN,
    "WEBHOOKS_JWT_SECRET": JWT_SECRET,
    "WEBHOOKS_ENCRYPTION_KEY": ENCRYPTION_KEY,
    "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "127.0.0.0/8,::1/128",
    # A shortened schedule so that retries are seen within a test.
    "WEBHOOKS_RETRY_SCHEDULE": "1,2,2,2,2,2,2,2,2,2",
    "WEBHOOKS_DATA_DIR": tempfile.mkdtemp(prefix="webhooks-test-"),
    "WEBHOOKS_WORKER_CONCURRENCY": "16",
}
for _key in ("CELERY_BROKER_URL", "WEBHOOKS_PRECONFIGURED_BASE_URL"):
    os.environ.pop(_key, None)
os.environ.update(TEST_ENV)

import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from shared import courier, notify  # noqa: E402
from shared import db as shared_db  # noqa: E402
from shared.config import get_settings  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TABLES = (
    "manual_requests, attempts, deliveries, messages, endpoints, api_keys, users, applications, "
    "organization_initializations, organizations"
)


def _ensure_database(url: str) -> None:
    base, _, name = url.rpartition("/")
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh schema built by running the Alembic migrations."""
    from shared.migrate import upgrade

    url = get_settings().database_url
    _ensure_database(url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(url)
    yield url
    shared_db.reset()
    # A database this run named (its own, or an xdist worker's beside CI's) goes with it.
    if AUTO_DATABASE or _WORKER_INDEX:
        base, _, name = url.rpartition("/")
        admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(TEST_REDIS_URL)


@pytest.fixture(autouse=True)
def clean(database: str, redis_client: redis.Redis) -> Iterator[None]:
    """Every test starts with empty tables and an empty broker."""
    yield
    engine = shared_db.get_engine()
    # The worker may still be busy with a test's background work (every new organization
    # is initialized by a task); a deadlock between it and the TRUNCATE is retried.
    for attempt in range(10):
        try:
            with engine.begin() as conn:
                # Give way quickly instead of waiting for the deadlock detector (1 s).
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                conn.execute(text(f"TRUNCATE {TABLES} CASCADE"))
            break
        except OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.2)
    # Counters and live events this process gathered go out before the broker is emptied,
    # not into the next test's (shared.courier sends them every 50 ms).
    notify.flush()
    courier.flush_all()
    redis_client.flushdb()


@pytest.fixture(scope="session")
def app():
    from webhooks_api.app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


PLATFORM = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class OrgHandle:
    """An organization made through the internal API, with its root user's key."""

    id: str
    user_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture
def make_org(client) -> Callable[..., OrgHandle]:
    def _make(name: str = "Acme") -> OrgHandle:
        resp = client.post("/api/internal/organizations", json={"name": name}, headers=PLATFORM)
        assert resp.status_code == 201, resp.json
        body = resp.json
        return OrgHandle(body["organization"]["id"], body["user"]["id"], body["apiKey"])

    return _make


@pytest.fixture
def org(make_org) -> OrgHandle:
    return make_org()


@pytest.fixture
def add_user(client) -> Callable[[OrgHandle, str], OrgHandle]:
    def _add(org: OrgHandle, role: str) -> OrgHandle:
        resp = client.post(
            f"/api/internal/organizations/{org.id}/users", json={"role": role}, headers=PLATFORM
        )
        assert resp.status_code == 201, resp.json
        return OrgHandle(org.id, resp.json["user"]["id"], resp.json["apiKey"])

    return _add


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    servers: list[Receiver] = []

    def _make() -> Receiver:
        server = Receiver()
        servers.append(server)
        return server

    yield _make
    for server in servers:
        server.close()


def _start_worker(log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_worker.celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "16",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b"ready." in log_path.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("worker did not start:\n" + log_path.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="session")
def worker(database: str, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A real Celery worker process on the test Redis and PostgreSQL."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = _start_worker(log_path)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
