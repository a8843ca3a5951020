"""The benchmark's stack: scratch database, Redis db, receiver, api, workers, beat.

Every process is started in its own session (process group) and stopped by that group
id, so nothing the benchmark started outlives it, whatever ended the run.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import DEFAULT_WORKER_CORE_THREADS, default_worker_processes

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "bench-platform-token-0123456789abcdef"
# A fixed Fernet key: the scratch database is dropped with the run.
ENCRYPTION_KEY = "0dmv2Bhpj4d6C9W-YKaRH4A2e-_SMOiP5d7oBkBHkxM="
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class BenchConfig:
    """What a run was asked for; printed and stored with the figures."""

    scenarios: list[int]
    scale: float = 1.0
    # Scenario 1 this many times in the run, each on emptied tables: its target is a
    # median over several runs with none far below, since one run moves with the machine.
    rounds: int = 1
    # The workers run the Procfile's `worker:` line as shipped; each of these, when set,
    # tunes it (and the run is labelled tuned): delivery processes, most threads and core
    # threads per process (WEBHOOKS_WORKER_PROCESSES, _CONCURRENCY, _CORE_THREADS), and
    # the niceness in place of the line's own.
    workers: int | None = None
    concurrency: int | None = None
    core_threads: int | None = None
    worker_nice: int | None = None
    api_workers: int = 1
    api_threads: int = 100
    loglevel: str = "INFO"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/webhooks_bench"
    redis_url: str = "redis://127.0.0.1:6379/0"
    retry_schedule: str = "5,10,20,40"
    rate: float | None = None
    py_spy: bool = False
    keep_db: bool = False
    baseline_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)


def procfile_worker_line() -> str:
    """The Procfile's `worker:` command, as honcho would run it."""
    from honcho.environ import parse_procfile

    return parse_procfile((ROOT / "Procfile").read_text()).processes["worker"]


def tuning(config: BenchConfig) -> dict[str, int]:
    """The worker settings a run changed from what ships (empty: the Procfile as is)."""
    asked = {
        "workers": config.workers,
        "concurrency": config.concurrency,
        "core_threads": config.core_threads,
        "worker_nice": config.worker_nice,
    }
    return {name: value for name, value in asked.items() if value is not None}


def worker_processes(config: BenchConfig) -> int:
    """How many delivery processes the worker line starts in this run."""
    return config.workers or default_worker_processes()


def sa_url(url: str) -> str:
    """The URL with the psycopg2 driver named (SQLAlchemy 2.1 would pick psycopg 3)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the machine --------------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            info[name] = int(rest.split()[0]) * 1024
    return info


def machine_info() -> dict:
    """Cores, memory, load and the CPU model of this machine."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = _meminfo()
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
        "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 1),
        "loadavg": os.getloadavg(),
        "kernel": platform.release(),
    }


def versions(database_url: str, redis_url: str) -> dict:
    """Versions of the runtime, the libraries and the servers."""
    from importlib.metadata import version

    import redis
    from sqlalchemy import create_engine, text

    found = {"python": platform.python_version()}
    for name in (
        "celery",
        "kombu",
        "redis",
        "sqlalchemy",
        "psycopg2-binary",
        "flask",
        "flask-smorest",
        "gunicorn",
        "urllib3",
        "requests",
    ):
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
            found[name] = None
    engine = create_engine(sa_url(database_url).rsplit("/", 1)[0] + "/postgres")
    with engine.connect() as conn:
        found["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    found["redis_server"] = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    return found


# ---- CPU and memory of processes -----------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """pid and all its descendants."""
    tree = tree if tree is not None else _children()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, ()))
    return out


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS over pids (those still alive)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int], *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of pids (those still alive), and with reaped_children the
    CPU of their children that have exited (PostgreSQL backends that closed meanwhile)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        if reaped_children:
            total += int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class RssSampler:
    """Samples the worker process trees' VmRSS in a thread; keeps the peak since reset."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peak = 0
        self.thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self._lock:
            self.peak = 0

    def sample(self) -> int:
        tree = _children()
        total = sum(rss_bytes(process_tree(pid, tree)) for pid in self._pids())
        with self._lock:
            self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(Exception):
                self.sample()

    def stop(self) -> None:
        self._stop.set()


# ---- HTTP clients --------------------------------------------------------------------------


class Http:
    """A lean keep-alive JSON client, one connection per thread (http.client)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.headers = dict(headers or {})
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self._local.conn = conn
        return conn

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, object, float]:
        """(status, decoded JSON or text, seconds); retried once on a closed keep-alive."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        all_headers = {**self.headers, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        for retry in (True, False):
            conn = self._conn()
            started = time.perf_counter()
            try:
                conn.request(method, path, body=data, headers=all_headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection; the request never ran
                # (and ingest is de-duplicated by eventId anyway).
                conn.close()
                self._local.conn = None
                if retry:
                    continue
                raise
            except BaseException:
                # A half-sent request leaves the connection unusable: start afresh.
                conn.close()
                self._local.conn = None
                raise
            elapsed = time.perf_counter() - started
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self._local.conn = None
            kind = response.getheader("Content-Type", "")
            value: object = json.loads(raw) if "json" in kind and raw else raw.decode()
            return response.status, value, elapsed
        raise AssertionError("unreachable")


class ReceiverClient:
    """The benchmark's view of the receiver process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._http = Http(self.base)

    def url(self, tag: str, mode: str, index: int) -> str:
        return f"{self.base}/{tag}/{mode}/{index}"

    def count(self, tag: str) -> dict:
        return self._http.request("GET", f"/_bench/count?tag={tag}")[1]  # type: ignore[return-value]

    def records(self, tag: str) -> list[list]:
        return self._http.request("GET", f"/_bench/records?tag={tag}")[1]  # type: ignore[return-value]

    def fail_until(self, tag: str, until: float) -> None:
        self._http.request("GET", f"/_bench/fail?tag={tag}&until={until}")

    def reset(self, tag: str) -> None:
        self._http.request("GET", f"/_bench/reset?tag={tag}")


# ---- processes -----------------------------------------------------------------------------


class Procs:
    """Processes started by the benchmark, each in its own process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        self._logs[name] = log_path
        return proc

    def log_text(self, name: str) -> str:
        return self._logs[name].read_text(errors="replace")

    def wait_for_log(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text(name):
                return
            if self.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start:\n{self.log_text(name)[-3000:]}")

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # Whatever is left of the group (pool children, a hung thread): kill it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


class Stack:
    """The service under test and its receiver, started on loopback."""

    def __init__(self, config: BenchConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.procs = Procs(run_dir)
        self.api_port = free_port()
        self.receiver: ReceiverClient | None = None
        self.env = self._service_env()
        self.api = Http(
            f"http://127.0.0.1:{self.api_port}", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        self._engine = None

    def _service_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("WEBHOOKS_", "CELERY_", "DATABASE_URL", "REDIS_URL"))
        }
        env.update(
            {
                "DATABASE_URL": self.config.database_url,
                "REDIS_URL": self.config.redis_url,
                "WEBHOOKS_ADMIN_TOKEN": ADMIN_TOKEN,
                "WEBHOOKS_ENCRYPTION_KEY": ENCRYPTION_KEY,
                "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "127.0.0.0/8",
                "WEBHOOKS_RETRY_SCHEDULE": self.config.retry_schedule,
                "WEBHOOKS_DATA_DIR": str(self.run_dir / "data"),
                "BENCH_BASELINE_BROKER_URL": self.config.redis_url,
                "PYTHONUNBUFFERED": "1",
                # The Procfile's programs (webhooks, celery) as installed with this Python.
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            }
        )
        tuned = {
            "WEBHOOKS_WORKER_PROCESSES": self.config.workers,
            "WEBHOOKS_WORKER_CONCURRENCY": self.config.concurrency,
            "WEBHOOKS_WORKER_CORE_THREADS": self.config.core_threads,
        }
        env.update({name: str(value) for name, value in tuned.items() if value is not None})
        return env

    # -- database and broker

    @property
    def engine(self):
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(sa_url(self.config.database_url), pool_size=2)
        return self._engine

    def reset_database(self) -> None:
        """Drop and recreate the scratch database, then run the migrations."""
        from sqlalchemy import create_engine, text

        from shared.migrate import upgrade

        base, _, name = sa_url(self.config.database_url).rpartition("/")
        admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        upgrade(sa_url(self.config.database_url))

    def drop_database(self) -> None:
        from sqlalchemy import create_engine, text

        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        base, _, name = sa_url(self.config.database_url).rpartition("/")
        admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    def truncate(self) -> None:
        """Empty the message tables so every scenario starts alike.

        Waits for the service's transactions to end first (a hung attempt of the previous
        scenario may still be recording), so TRUNCATE's exclusive lock deadlocks nobody.
        """
        from sqlalchemy import text

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            busy = self.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            )
            if not busy:
                break
            time.sleep(0.5)
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            conn.execute(text("TRUNCATE attempts, deliveries, messages CASCADE"))

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.config.redis_url).flushdb()

    def queue_length(self) -> int:
        import redis

        client = redis.Redis.from_url(self.config.redis_url)
        # The service's queues ("webhooks", and any sibling such as "webhooks.retry").
        names = list(client.scan_iter(match="webhooks*", _type="list"))
        return sum(int(client.llen(name)) for name in names)

    def scalar(self, sql: str, **params) -> object:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params) -> list:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    # -- processes

    def start_receiver(self) -> ReceiverClient:
        port = free_port()
        argv = [sys.executable, "-m", "tests.bench.receiver", "serve", "--port", str(port)]
        self.procs.start("receiver", argv, dict(os.environ))
        self.procs.wait_for_log("receiver", "ready", timeout=20)
        self.receiver = ReceiverClient(port)
        return self.receiver

    def start_api(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "webhooks_api.wsgi:app",
            "--bind",
            f"127.0.0.1:{self.api_port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.config.api_workers),
            "--threads",
            str(self.config.api_threads),
            "--access-logfile",
            "-",
            # gunicorn 27's control socket defaults to one path for every instance.
            "--no-control-socket",
        ]
        self.procs.start("api", argv, self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.api.request("GET", "/healthz")[0] == 200:
                    return
            if self.procs.procs["api"].poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError("api did not start:\n" + self.procs.log_text("api")[-3000:])

    def worker_names(self) -> list[str]:
        return ["worker"]

    def worker_command(self) -> str:
        """The Procfile's worker line, with the niceness replaced when that is tuned."""
        line = procfile_worker_line()
        if self.config.worker_nice is not None:
            nice = f"nice -n {self.config.worker_nice} " if self.config.worker_nice else ""
            line, found = re.subn(r"nice -n \d+ ", nice, line, count=1)
            if not found:
                raise RuntimeError(f"--worker-nice: no `nice -n N` in the worker line {line!r}")
        return line

    def start_workers(self) -> None:
        """Start the Procfile's worker line; return once each delivery process is ready."""
        (name,) = self.worker_names()
        self._start_ready(name, self.worker_command(), worker_processes(self.config), self.env)

    def _start_ready(self, name: str, command: str, wanted: int, env: dict[str, str]) -> None:
        """Run ``command`` under ``sh`` as ``name``; return once ``wanted`` Celery workers
        in it have said they are ready (each logs `` ready.``)."""
        log = self.run_dir / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        self.procs.start(name, ["sh", "-c", command], env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = log.read_bytes()[offset:].decode(errors="replace")
            if text.count(" ready.") >= wanted:
                return
            if self.procs.procs[name].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start:\n{self.procs.log_text(name)[-3000:]}")

    def restart_workers(self) -> None:
        """Fresh worker processes: RSS never shrinks, so a peak needs a clean start."""
        for name in self.worker_names():
            self.procs.stop(name, timeout=60)
        self.start_workers()

    def start_beat(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "webhooks_worker.celery_app",
            "beat",
            "--loglevel",
            self.config.loglevel,
            "--schedule",
            str(self.run_dir / "data" / "celerybeat-schedule"),
        ]
        self.procs.start("beat", argv, self.env)
        self.procs.wait_for_log("beat", "beat: Starting", timeout=30)

    def start_baseline_worker(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.bench.baseline",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.config.baseline_concurrency),
            "--loglevel",
            self.config.loglevel,
            "-n",
            "baseline@%h",
        ]
        self.procs.start("baseline", argv, self.env)
        self.procs.wait_for_log("baseline", "ready.", timeout=60)

    def start_ceiling_worker(self) -> str:
        """The bare app as the service's workers run: its processes, threads and broker.

        One thread pool process per delivery process of the worker line, each with the
        worker's core threads, reading and acknowledging as the service does
        (``tests.bench.baseline``). Started under the name ``baseline`` so that the
        baseline's measurement applies; returns what ran ("2 x 8 threads").
        """
        from .baseline import SERVICE_BROKER

        processes = worker_processes(self.config)
        threads = self.config.core_threads or DEFAULT_WORKER_CORE_THREADS
        argv = [sys.executable, "-m", "celery", "-A", "tests.bench.baseline", "worker"]
        argv += ["--pool", "threads", "--concurrency", str(threads)]
        argv += ["--loglevel", self.config.loglevel]
        # One shell runs them all, so that the baseline's CPU meter sees one process tree.
        command = " ".join(
            shlex.join([*argv, "-n", f"ceiling{index}@%h"]) + " &" for index in range(processes)
        )
        self._start_ready(
            "baseline", f"{command} wait", processes, {**self.env, SERVICE_BROKER: "1"}
        )
        return f"{processes} x {threads} threads"

    def start_bare_wsgi(self) -> Http:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "tests.bench.baseline:wsgi_app",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(self.config.api_workers),
            "--threads",
            str(self.config.api_threads),
            "--access-logfile",
            "-",
            # gunicorn 27's control socket defaults to one path for every instance.
            "--no-control-socket",
        ]
        self.procs.start("bare_wsgi", argv, self.env)
        client = Http(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                client.request("POST", "/", {})
                return client
            time.sleep(0.3)
        raise RuntimeError("bare wsgi did not start:\n" + self.procs.log_text("bare_wsgi"))

    def pids(self, *names: str) -> list[int]:
        return [self.procs.procs[n].pid for n in names if n in self.procs.procs]

    def worker_pids(self) -> list[int]:
        return self.pids(*self.worker_names())

    def start(self) -> None:
        (self.run_dir / "data").mkdir(parents=True, exist_ok=True)
        self.reset_database()
        self.flush_redis()
        self.start_receiver()
        self.start_api()
        self.start_workers()
        self.start_beat()

    def stop(self) -> None:
        self.procs.stop_all()
        with contextlib.suppress(Exception):
            self.flush_redis()
        if not self.config.keep_db:
            with contextlib.suppress(Exception):
                self.drop_database()


class CpuMeter:
    """CPU seconds used by the benchmark's processes and the machine over an interval."""

    GROUPS = ("api", "workers", "beat", "receiver", "postgres", "redis", "bench")

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.start = self._snapshot()
        self.started = time.monotonic()

    def _postgres_pids(self) -> list[int]:
        # Every process of the local server (backends of every connection, WAL writer,
        # checkpointer, autovacuum), found by the owner of its data directory's processes:
        # backends come and go with the pools, so asking pg_stat_activity at the start and
        # the end misses those that were not connected at both.
        import pwd

        try:
            uid = pwd.getpwnam("postgres").pw_uid
        except KeyError:  # a server run by another user: its current backends only
            rows = self.stack.rows("SELECT pid FROM pg_stat_activity")
            return [r[0] for r in rows]
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def _redis_pids(self) -> list[int]:
        import redis

        info = redis.Redis.from_url(self.stack.config.redis_url).info("server")
        return [int(info["process_id"])]

    def _snapshot(self) -> dict[str, dict[int, float]]:
        tree = _children()
        groups: dict[str, list[int]] = {
            "api": [p for pid in self.stack.pids("api") for p in process_tree(pid, tree)],
            "workers": [p for pid in self.stack.worker_pids() for p in process_tree(pid, tree)],
            "beat": self.stack.pids("beat"),
            "receiver": self.stack.pids("receiver"),
            "postgres": self._postgres_pids(),
            "redis": self._redis_pids(),
            "bench": [os.getpid()],
        }
        snap = {
            name: {pid: cpu_seconds([pid], reaped_children=name == "postgres") for pid in pids}
            for name, pids in groups.items()
        }
        snap["_machine"] = {0: machine_cpu()[0], 1: machine_cpu()[1]}
        return snap

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since the start, and the machine's busy share."""
        end = self._snapshot()
        out: dict[str, float] = {}
        for name in self.GROUPS:
            total = 0.0
            for pid, value in end[name].items():
                total += value - self.start[name].get(pid, 0.0)
            out[name] = round(total, 2)
        busy = end["_machine"][0] - self.start["_machine"][0]
        total = end["_machine"][1] - self.start["_machine"][1]
        out["machine_busy_share"] = round(busy / total, 3) if total else 0.0
        out["machine_busy_seconds"] = round(busy, 2)
        out["wall_seconds"] = round(time.monotonic() - self.started, 2)
        out["other_processes"] = round(
            busy - sum(out[g] for g in self.GROUPS if g != "postgres") - out["postgres"], 2
        )
        return out


def source_digest() -> str:
    """A digest of the product's source, so runs on different code can be told apart."""
    import hashlib

    digest = hashlib.sha256()
    for package in ("shared", "webhooks_api", "webhooks_worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def config_dict(config: BenchConfig) -> dict:
    return asdict(config)
