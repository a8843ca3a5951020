"""The service on several machines: nothing lost when a worker host drops off the network.

Seven hosts, each a network namespace on one bridge (tests.support.netns): PostgreSQL,
Redis, the api (gunicorn, migrating first as the Procfile's web line does), two worker
hosts, beat and a receiver. Every process reaches the others only over that network,
through DATABASE_URL and REDIS_URL as an operator would configure machines. 2,000
messages go through while one worker host's link is cut, with posts in flight, and later
restored.

The test process drives the api and reads the database through Unix sockets (files, not
network addresses), so it never needs an address on the hosts' network.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import ADMIN_TOKEN, TEST_ENV
from tests.support.file_receiver import count_by_id, read_receipts
from tests.support.netns import Host, Network, namespaces_unavailable
from tests.support.scenario import duplicate_tries, rows, scalar
from tests.support.waiting import wait_until

MESSAGES = 2000
BATCH = 100
# Delivery threads per worker host: enough to have posts in flight at the cut.
CONCURRENCY = 32
# The receiver answers after this long, so that the cut worker is holding posts.
RECEIVER_DELAY = 0.05
# How long the worker host stays off the network: longer than a delivery's lease, so
# that what it held is taken over by the other host (shared.services.deliveries).
CUT_SECONDS = 25.0
PLATFORM = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

_UNAVAILABLE = namespaces_unavailable()
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found[-1]


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to a server's Unix socket (the api binds one beside its network address)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        """Connect to the socket file instead of a host and port."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


@dataclass
class Deployment:
    network: Network
    api_socket: str
    engine: Engine
    receipts: Path
    hosts: dict[str, Host]

    def call(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        connection = UnixHTTPConnection(self.api_socket)
        try:
            payload = None if body is None else json.dumps(body)
            sent = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else {})
        finally:
            connection.close()


def _host_env(base: dict[str, str], data_dir: Path, database: str, redis_url: str) -> dict:
    env = {**os.environ, **base}
    env.pop("CELERY_BROKER_URL", None)
    (data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        WEBHOOKS_DATA_DIR=str(data_dir),
        # Whatever a process writes to a temporary file stays in the test's directory.
        TMPDIR=str(data_dir / "tmp"),
        # The receiver's host is on the benchmark range, which targets may not use by default.
        WEBHOOKS_ALLOW_PRIVATE_TARGETS="198.18.0.0/15",
    )
    return env


@pytest.fixture
def deployment(tmp_path) -> Iterator[Deployment]:
    """PostgreSQL, Redis, api, two workers, beat and a receiver, each on its own host."""
    network = Network(tmp_path)
    # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 directory.
    pg_dir = Path(tempfile.mkdtemp(prefix="webhooks-hosts-pg-"))
    engine: Engine | None = None
    try:
        pg = network.add_host("postgres", 20)
        redis_host = network.add_host("redis", 21)
        api = network.add_host("api", 10)
        worker_hosts = [network.add_host("worker-a", 11), network.add_host("worker-b", 12)]
        beat = network.add_host("beat", 13)
        receiver = network.add_host("receiver", 30)

        # PostgreSQL: a private cluster listening on its host's address only, and on a
        # Unix socket in its directory, through which the test reads what was recorded.
        shutil.chown(pg_dir, "postgres")
        subprocess.run(
            ["runuser", "-u", "postgres", "--", _postgres_bin("initdb"), "-D",
             str(pg_dir / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        with open(pg_dir / "data" / "pg_hba.conf", "a") as hba:
            hba.write("host all all 198.18.0.0/24 trust\n")
        pg.start(
            "postgres",
            ["runuser", "-u", "postgres", "--", _postgres_bin("postgres"), "-D",
             str(pg_dir / "data"), "-p", "5432", "-k", str(pg_dir),
             "-c", f"listen_addresses={pg.address}", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            env=dict(os.environ),
        )  # fmt: skip
        admin = create_engine(
            f"postgresql+psycopg2://postgres@/postgres?host={pg_dir}&port=5432",
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
        )

        def pg_up() -> bool:
            try:
                with admin.connect() as conn:
                    conn.execute(text("CREATE DATABASE webhooks"))
                return True
            except Exception:  # noqa: BLE001 - not accepting connections yet
                return False

        wait_until(pg_up, timeout=30, interval=0.2)
        admin.dispose()
        engine = create_engine(
            f"postgresql+psycopg2://postgres@/webhooks?host={pg_dir}&port=5432",
            poolclass=NullPool,
        )

        redis_host.start(
            "redis",
            [
                "redis-server",
                "--bind",
                redis_host.address,
                "--port",
                "6379",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            env=dict(os.environ),
        ).wait_for_log("Ready to accept connections", timeout=30)

        database_url = f"postgresql://postgres@{pg.address}:5432/webhooks"
        redis_url = f"redis://{redis_host.address}:6379/0"

        def env_of(host: Host) -> dict:
            return _host_env(TEST_ENV, tmp_path / f"data-{host.name}", database_url, redis_url)

        receipts = tmp_path / "receipts.txt"
        receiver.start(
            "receiver",
            [
                sys.executable,
                "-m",
                "tests.support.file_receiver",
                receiver.address,
                "9000",
                str(receipts),
                str(RECEIVER_DELAY),
            ],
            env=env_of(receiver),
        ).wait_for_log("ready", timeout=30)

        # The api host migrates over the network, then serves (the Procfile's web line).
        migrated = api.run([sys.executable, "-m", "webhooks_api.cli", "migrate"], env=env_of(api))
        assert migrated.returncode == 0, migrated.stderr
        api_socket = str(tmp_path / "api.sock")
        api.start(
            "gunicorn",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webhooks_api.wsgi:app",
                "--bind",
                f"{api.address}:8000",
                "--bind",
                f"unix:{api_socket}",
                "--worker-class",
                "gthread",
                "--workers",
                "1",
                "--threads",
                "16",
                "--no-control-socket",
            ],
            env=env_of(api),
        ).wait_for_log("Booting worker", timeout=60)
        for host in worker_hosts:
            host.start(
                "worker",
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
                    str(CONCURRENCY),
                    "--loglevel",
                    "INFO",
                    "--hostname",
                    f"{host.name}@%h",
                ],
                env=env_of(host),
            ).wait_for_log("ready.", timeout=60)
        beat.start(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "webhooks_worker.celery_app",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(tmp_path / "beat-schedule"),
            ],
            env=env_of(beat),
        ).wait_for_log("beat: Starting", timeout=60)

        found = Deployment(network, api_socket, engine, receipts, network.hosts)
        wait_until(lambda: _answers(found), timeout=30, interval=0.2)
        yield found
    finally:
        network.destroy()
        if engine is not None:
            engine.dispose()
        shutil.rmtree(pg_dir, ignore_errors=True)


def _answers(deployment: Deployment) -> bool:
    try:
        return deployment.call("GET", "/healthz")[0] == 200
    except OSError:
        return False


def _event(organization_id: str, n: int) -> dict:
    return {
        "event": "sandbox.state.updated",
        "organizationId": organization_id,
        "id": f"sbx-{n}",
        "oldState": "started",
        "newState": "stopped",
    }


def _senders(deployment: Deployment, since: float = 0.0) -> set[str]:
    return {sender for at, sender, _id in read_receipts(deployment.receipts) if at >= since}


def test_no_message_lost_when_a_worker_host_drops_off_the_network_and_comes_back(deployment):
    hosts = deployment.hosts
    cut_host = hosts["worker-a"]
    status, org = deployment.call("POST", "/api/internal/organizations", {"name": "Acme"}, PLATFORM)
    assert status == 201, org
    receiver_url = f"http://{hosts['receiver'].address}:9000/hook"
    status, endpoint = deployment.call(
        "POST",
        "/v1/webhooks",
        {"url": receiver_url, "event_types": ["sandbox.stopped"], "timeout_seconds": 5},
        {"X-API-Key": org["apiKey"]},
    )
    assert status == 201, endpoint

    accepted: list[str] = []

    def post_batch(batch: int) -> None:
        events = [_event(org["organization"]["id"], batch * BATCH + i) for i in range(BATCH)]
        status, body = deployment.call("POST", "/api/internal/events", events, PLATFORM)
        assert status == 202, body
        accepted.extend(item["id"] for item in body["messages"])

    batches = iter(range(MESSAGES // BATCH))
    started = time.monotonic()
    try:
        # A quarter of the messages while both worker hosts deliver.
        for batch in (next(batches) for _ in range(5)):
            post_batch(batch)
            time.sleep(0.3)
        wait_until(lambda: cut_host.address in _senders(deployment), timeout=60)
        # The link goes while worker-a has posts in flight (the receiver answers slowly).
        cut_host.cut()
        cut_at = time.time()
        for batch in (next(batches) for _ in range(10)):
            post_batch(batch)
            time.sleep(0.5)
        time.sleep(max(0.0, CUT_SECONDS - (time.time() - cut_at)))
        cut_host.restore()
        restored_at = time.time()
        # The rest once it is back: both hosts share them again.
        for batch in batches:
            post_batch(batch)
            time.sleep(1.0)
    except BaseException:
        print(deployment.network.logs())
        raise
    assert len(set(accepted)) == MESSAGES

    def all_received() -> bool:
        return set(accepted) <= set(count_by_id(deployment.receipts))

    try:
        wait_until(all_received, timeout=240, interval=1)
        engine = deployment.engine
        wait_until(
            lambda: (
                scalar(engine, "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
                == MESSAGES
            ),
            timeout=60,
        )
    except AssertionError:
        missing = set(accepted) - set(count_by_id(deployment.receipts))
        print(f"{len(missing)} messages never received\n{deployment.network.logs()}")
        raise
    finished = time.monotonic() - started

    # No scheduled try is recorded twice, and each delivery has exactly one success.
    assert duplicate_tries(engine) == []
    assert scalar(engine, "SELECT count(*) FROM deliveries") == MESSAGES
    assert (
        rows(
            engine,
            "SELECT d.id FROM deliveries d LEFT JOIN attempts a ON a.delivery_id = d.id "
            "AND a.status = 'success' GROUP BY d.id HAVING count(a.id) <> 1",
        )
        == []
    )
    received = count_by_id(deployment.receipts)
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    attempts = scalar(engine, "SELECT count(*) FROM attempts")
    failed_attempts = scalar(engine, "SELECT count(*) FROM attempts WHERE status = 'failed'")
    senders = _senders(deployment)
    after_restore = _senders(deployment, since=restored_at)
    print(
        f"\n{MESSAGES} messages through 7 hosts in {finished:.1f}s; worker-a cut for "
        f"{restored_at - cut_at:.1f}s; receipts {sum(received.values())}, duplicate "
        f"receipts {duplicates}, attempt rows {attempts} ({failed_attempts} failed); "
        f"senders {sorted(senders)}, after the restore {sorted(after_restore)}"
    )
    # Both worker hosts delivered, and the one that was cut off delivered again once back.
    assert {hosts["worker-a"].address, hosts["worker-b"].address} <= senders
    assert cut_host.address in after_restore
