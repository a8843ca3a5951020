"""Running the service: migrations, the delivery workers, and everything at once (``up``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from shared.config import (
    MAX_WORKER_PROCESSES,
)

from .base import load_cli_settings, service_errors


@click.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run from several processes at once)."""
    from shared.migrate import upgrade
    from shared.services.operations import migration_lock

    settings = load_cli_settings()
    with service_errors(), migration_lock(settings.database_url):
        upgrade(settings.database_url)
    click.echo("database schema is up to date")


# How much lower the delivery worker's CPU priority is than the api's (Procfile: nice -n 10).
WORKER_NICENESS = 10


@click.command()
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_WORKER_PROCESSES),
    default=None,
    help="Delivery processes [default: WEBHOOKS_WORKER_PROCESSES, one per core].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=None,
    help="Most threads per process [default: WEBHOOKS_WORKER_CONCURRENCY, 256].",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Celery's log level.")
@click.option(
    "--beat-schedule",
    default=None,
    help="Also run beat in the first process, keeping its schedule in this file.",
)
@click.option(
    "--queues",
    type=click.Choice(["all", "first", "retry"]),
    default="all",
    show_default=True,
    help="Which tries to take: all, first tries only, or retries only (every lane of each).",
)
def worker(
    processes: int | None,
    concurrency: int | None,
    loglevel: str,
    beat_schedule: str | None,
    queues: str = "all",
) -> None:
    """Run the delivery workers in the foreground: one process per core, restarted if they die."""
    from shared import lanes
    from shared.logs import configure_logging
    from webhooks_worker.supervisor import run_workers

    settings = load_cli_settings()
    configure_logging(settings.log_format, process="worker", level="INFO")
    raise SystemExit(
        run_workers(
            processes=processes or settings.worker_processes,
            concurrency=concurrency or settings.worker_concurrency,
            loglevel=loglevel,
            beat_schedule=beat_schedule,
            # A pool for first tries or for retries consumes every lane of that family
            # (shared.lanes): the lanes are what keep organizations from waiting on each other.
            queues=None if queues == "all" else lanes.FAMILIES[lanes.FAMILY_OF[queues]],
        )
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the api binds.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    envvar="PORT",
    help="Port the api listens on (or the PORT variable).",
)
@click.option("--concurrency", default=None, type=int, help="Delivery worker threads.")
@click.option(
    "--processes",
    type=click.IntRange(1, MAX_WORKER_PROCESSES),
    default=None,
    help="Delivery processes [default: one per core; one on the embedded SQLite database].",
)
def up(host: str, port: int, concurrency: int | None, processes: int | None) -> None:
    """Run api, worker and beat together (SQLite and an embedded broker when unconfigured)."""
    from shared.migrate import upgrade

    from ..serving import busy_port_message, port_in_use

    # Before anything starts: gunicorn alone would retry for 5 s and never name the port.
    if port_in_use(host, port):
        raise click.ClickException(
            busy_port_message(
                host, port, f"stop it, or choose another with --port {port + 1} or PORT={port + 1}"
            )
        )
    settings = load_cli_settings()
    upgrade(settings.database_url)
    env = dict(os.environ)
    env.setdefault("WEBHOOKS_DATA_DIR", str(settings.data_dir))
    threads = concurrency or (16 if settings.embedded else settings.worker_concurrency)
    # A SQLite file takes one writer at a time: more processes would only queue for it.
    processes = processes or (1 if settings.embedded else settings.worker_processes)
    worker_cmd = [
        sys.executable, "-m", "webhooks_api.cli", "worker",
        "--processes", str(processes), "--concurrency", str(threads), "--loglevel", "INFO",
        # Beat runs inside the first worker process: one process fewer on a single machine.
        "--beat-schedule", str(settings.data_dir / "celerybeat-schedule"),
    ]  # fmt: skip
    api_cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "webhooks_api.wsgi:app",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "gthread",
        # Each open live socket (a dashboard tab) holds one thread; one process, because
        # the embedded broker relays live events to a single api process.
        "--threads",
        "32",
        "--access-logfile",
        "-",
        # The same check of the port as above, for the moment gunicorn binds it.
        "--config",
        "python:webhooks_api.serving",
    ]
    where = (
        "embedded SQLite database and broker in " + str(settings.data_dir)
        if settings.embedded
        else "configured database and broker"
    )
    click.echo(f"starting api on http://{host}:{port} with the {where}")
    if settings.embedded:
        click.echo(f"platform token: {settings.admin_token}")
    # The worker at nice 10, as in the Procfile: the api answers first on a shared machine.
    worker = subprocess.Popen(worker_cmd, env=env, preexec_fn=lambda: os.nice(WORKER_NICENESS))
    procs = [worker, subprocess.Popen(api_cmd, env=env)]

    def _stop(*_args) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, _stop)
    try:
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        _stop()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    if failed:
        raise SystemExit(1)
