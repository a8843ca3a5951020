"""Private servers and service processes for tests that break things on purpose.

Fault-injection tests stop, kill and restart PostgreSQL, Redis, the api, the worker and
beat. Other test runs share the machine's PostgreSQL (5432) and Redis (6379), so these
tests never touch them: each gets its own ``redis-server`` and its own PostgreSQL
cluster (``initdb`` into a temporary directory) on free loopback ports, and starts the
service processes pointed at them through ``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import requests
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} did not happen within {timeout}s")


class RedisServer:
    """A private redis-server on a free port, keeping nothing on disk (restart = empty)."""

    def __init__(self, workdir: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def answers() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        _wait(answers, 10, "redis start")

    def kill(self) -> None:
        """Stop the server at once; what it held is gone (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart_empty(self) -> None:
        self.kill()
        self.start()


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed")
    return path


class PostgresCluster:
    """A private PostgreSQL cluster (initdb in a temporary directory) on a free port.

    Run as the ``postgres`` OS user when the tests run as root (initdb refuses root).
    """

    def __init__(self, template: Path | None = None) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 directory.
        self.dir = Path(tempfile.mkdtemp(prefix="webhooks-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
        if template is not None:
            # A copy of a stopped cluster's files (as their owner): a new cluster with what
            # the template held, in a fraction of initdb's time.
            self._run("cp", "-a", str(template), str(self.data))
            self.start()
            return
        self._run(
            _postgres_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.decode(errors='replace')}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` disconnects every client, ``immediate`` is a crash."""
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# The database every Stack starts with, migrated to head.
TEMPLATE_DATABASE = "webhooks"
_template: PostgresCluster | None = None


def migrated_template() -> Path:
    """The data directory of a stopped cluster whose database is migrated to head.

    Made once per test process (initdb and the migrations take seconds, and some thirty
    tests start a Stack); each Stack runs a copy of it, so no test sees another's rows.
    """
    global _template
    if _template is None:
        cluster = PostgresCluster()
        try:
            from shared.migrate import upgrade

            upgrade(cluster.create_database(TEMPLATE_DATABASE))
            cluster.stop()
        except BaseException:
            cluster.destroy()
            raise
        atexit.register(cluster.destroy)
        _template = cluster
    return _template.data


class Service:
    """A project process (api, worker, beat) with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_path = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for_log(self, needle: str, timeout: float = 30.0, *, after: int = 0) -> None:
        def seen() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            return needle in self.log_text()[after:]

        _wait(seen, timeout, f"{self.name} logging {needle!r}", interval=0.1)

    def kill(self) -> None:
        """SIGKILL the process and its children (gunicorn's workers): no cleanup at all."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            self.kill()  # children left behind, if any
            return
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self.kill()


class Stack:
    """Private PostgreSQL and Redis plus the service processes started on them."""

    def __init__(self, workdir: Path, base_env: dict[str, str]) -> None:
        self.workdir = workdir
        self.pg = PostgresCluster(template=migrated_template())
        self.redis = RedisServer(workdir)
        self.database_url = self.pg.url(TEMPLATE_DATABASE)
        self.env = {
            **base_env,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis.url,
            "WEBHOOKS_DATA_DIR": str(workdir / "data"),
        }
        self.services: list[Service] = []
        self._engine: Engine | None = None
        self._count = 0

    @property
    def engine(self) -> Engine:
        """An engine on the private database, for assertions (no pool: survives restarts)."""
        if self._engine is None:
            from sqlalchemy.pool import NullPool

            self._engine = create_engine(self.database_url, poolclass=NullPool)
        return self._engine

    def _log(self, name: str) -> Path:
        self._count += 1
        return self.workdir / f"{self._count:02d}-{name}.log"

    def _merged_env(self, env: dict[str, str] | None) -> dict[str, str]:
        merged = {**os.environ, **self.env, **(env or {})}
        merged.pop("CELERY_BROKER_URL", None)
        return merged

    def start_worker(
        self, *, concurrency: int = 16, env: dict[str, str] | None = None, name: str = "worker"
    ) -> Service:
        service = Service(
            name,
            [
                sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "worker",
                "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--hostname", f"{name}-{self._count}@%h",
            ],
            self._merged_env(env),
            self._log(name),
        )  # fmt: skip
        self.services.append(service)
        service.wait_for_log("ready.")
        return service

    def start_beat(self, *, name: str = "beat") -> Service:
        log = self._log(name)
        service = Service(
            name,
            [
                sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "beat",
                "--loglevel", "INFO", "--schedule", str(log.with_suffix(".schedule")),
            ],
            self._merged_env(None),
            log,
        )  # fmt: skip
        self.services.append(service)
        service.wait_for_log("beat: Starting")
        return service

    def start_api(self, *, env: dict[str, str] | None = None, name: str = "api") -> Api:
        port = free_port()
        service = Service(
            name,
            [
                sys.executable, "-m", "gunicorn", "webhooks_api.wsgi:app",
                "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
                "--workers", "1", "--threads", "16", "--timeout", "60",
                "--access-logfile", "-",
                # The control socket's default path is shared by every gunicorn of the user.
                "--no-control-socket",
            ],
            self._merged_env(env),
            self._log(name),
        )  # fmt: skip
        self.services.append(service)
        api = Api(service, f"http://127.0.0.1:{port}")

        def up() -> bool:
            if not service.alive():
                raise RuntimeError(f"api exited:\n{service.log_text()[-3000:]}")
            try:
                return requests.get(api.url + "/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait(up, 30, "api start", interval=0.1)
        return api

    def logs(self) -> str:
        return "\n".join(s.log_text() for s in self.services)

    def close(self) -> None:
        for service in self.services:
            service.stop(5)
        if self._engine is not None:
            self._engine.dispose()
        self.redis.kill()
        self.pg.destroy()


class Api:
    """A running api process and a requests session to it."""

    def __init__(self, service: Service, url: str) -> None:
        self.service = service
        self.url = url
        self.http = requests.Session()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        return self.request("PUT", path, **kwargs)


@contextlib.contextmanager
def running_stack(workdir: Path, base_env: dict[str, str]) -> Iterator[Stack]:
    """A Stack, torn down (every process stopped, the cluster removed) on exit."""
    stack = Stack(workdir, base_env)
    try:
        yield stack
    finally:
        stack.close()
