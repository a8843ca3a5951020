"""The ``webhooks`` command: run the service and do everyday chores.

Every chore calls a service (``shared.services``); this module parses options, prints
results (``--json`` for scripts, tables for people, progress on stderr) and turns
domain errors into ``click.ClickException`` messages with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click

from shared.config import (
    MAX_WORKER_PROCESSES,
    ConfigError,
    Settings,
    get_settings,
    load_settings,
)


def _settings() -> Settings:
    """The validated settings (a bad one is a one-line error), with logging set up."""
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    _configure_logging(settings.log_format)
    return settings


def _configure_logging(log_format: str) -> None:
    from shared.logs import configure_logging

    # Warnings only: the commands print their own results on stdout.
    configure_logging(log_format, process="cli", level="WARNING")


def _broker() -> None:
    """Install the Celery app's sender, so that the command's work is enqueued after commits."""
    from webhooks_worker.celery_app import install_sender

    install_sender()


@contextlib.contextmanager
def _service_errors() -> Iterator[None]:
    """Domain errors and an unreachable database become one-line CLI errors."""
    from sqlalchemy.exc import OperationalError

    from shared.errors import DomainError

    try:
        yield
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    except OperationalError as exc:
        from shared.services.operations import error_reason

        raise click.ClickException(
            f"database unavailable ({error_reason(exc)}); run `webhooks check`"
        ) from None


def _stamp(value: datetime | None) -> str | None:
    from shared.payloads import format_timestamp

    return format_timestamp(value) if value else None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def _moment(value: str | None, name: str) -> datetime | None:
    from shared.errors import Invalid
    from shared.services.operations import parse_moment

    if value is None:
        return None
    try:
        return parse_moment(value)
    except Invalid:
        raise click.BadParameter(
            "give an ISO 8601 time or a duration ago such as 30m, 6h, 7d", param_hint=name
        ) from None


# The distribution this command belongs to (pyproject.toml), for --version.
DISTRIBUTION = "sandbox-webhooks"


@click.group()
@click.version_option(package_name=DISTRIBUTION, prog_name="webhooks")
def cli() -> None:
    """Sandbox webhooks: signed, retried, recorded webhook delivery."""


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (safe to run from several processes at once)."""
    from shared.migrate import upgrade
    from shared.services.operations import migration_lock

    settings = _settings()
    with _service_errors(), migration_lock(settings.database_url):
        upgrade(settings.database_url)
    click.echo("database schema is up to date")


# How much lower the delivery worker's CPU priority is than the api's (Procfile: nice -n 10).
WORKER_NICENESS = 10


@cli.command()
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
def worker(
    processes: int | None, concurrency: int | None, loglevel: str, beat_schedule: str | None
) -> None:
    """Run the delivery workers in the foreground: one process per core, restarted if they die."""
    from shared.logs import configure_logging
    from webhooks_worker.supervisor import run_workers

    settings = _settings()
    configure_logging(settings.log_format, process="worker", level="INFO")
    raise SystemExit(
        run_workers(
            processes=processes or settings.worker_processes,
            concurrency=concurrency or settings.worker_concurrency,
            loglevel=loglevel,
            beat_schedule=beat_schedule,
        )
    )


@cli.command()
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

    from .serving import busy_port_message, port_in_use

    # Before anything starts: gunicorn alone would retry for 5 s and never name the port.
    if port_in_use(host, port):
        raise click.ClickException(
            busy_port_message(
                host, port, f"stop it, or choose another with --port {port + 1} or PORT={port + 1}"
            )
        )
    settings = _settings()
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


# ---- check ---------------------------------------------------------------------------------


@cli.command()
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for each part.")
@click.option("--skip-workers", is_flag=True, help="Do not ping the workers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def check(timeout: float, skip_workers: bool, as_json: bool) -> None:
    """Check the configuration, the database, the broker and the workers.

    Exits 1 naming the broken parts.
    """
    from shared.logs import redact
    from shared.services.operations import Check

    checks: list[Check] = []
    try:
        settings = load_settings()
    except ConfigError as exc:
        _configure_logging("text")
        checks.append(Check("config", False, str(exc)))
        settings = None
    else:
        _configure_logging(settings.log_format)
        checks.append(
            Check(
                "config",
                True,
                f"database {redact(settings.database_url)}, broker {redact(settings.broker_url)}",
            )
        )
    if settings is not None:
        checks.extend(_check_services(settings, timeout=timeout, skip_workers=skip_workers))
    broken = [c.part for c in checks if not c.ok]
    if as_json:
        parts = [{"part": c.part, "ok": c.ok, "detail": c.detail} for c in checks]
        _echo_json({"ok": not broken, "checks": parts})
    else:
        for c in checks:
            click.echo(f"{c.part:<9} {'ok' if c.ok else 'FAILED':<7} {c.detail}")
    if broken:
        details = "; ".join(f"{c.part}: {c.detail}" for c in checks if not c.ok)
        raise click.ClickException(f"check failed: {details}")


def _check_services(settings: Settings, *, timeout: float, skip_workers: bool) -> list[Any]:
    from shared.db import get_sessionmaker
    from shared.logs import redact
    from shared.services.operations import Check, check_database

    checks = [check_database(get_sessionmaker(), database_url=settings.database_url)]
    _broker()
    from webhooks_worker import presence
    from webhooks_worker.health import broker_ok, worker_count

    broker = broker_ok(timeout=timeout)
    where = redact(settings.broker_url)
    checks.append(Check("broker", broker, where if broker else f"{where} unreachable"))
    if skip_workers:
        checks.append(Check("workers", True, "not checked (--skip-workers)"))
    elif not presence.broadcasts(settings.broker_url):
        # kombu's SQLAlchemy transport has no broadcast to ping through: the workers on it
        # keep heartbeat files in the data folder instead (webhooks_worker.presence).
        folder = presence.presence_dir(settings.data_dir)
        count = worker_count(timeout=timeout)
        checks.append(
            Check(
                "workers",
                count > 0,
                f"{count} with a fresh heartbeat in {folder}"
                if count
                else f"no worker has touched its heartbeat file in {folder} "
                f"within {presence.FRESH_SECONDS:g} s",
            )
        )
    elif not broker:
        checks.append(Check("workers", False, "not reachable: the broker is down"))
    else:
        count = worker_count(timeout=timeout)
        checks.append(
            Check(
                "workers",
                count > 0,
                f"{count} answering" if count else f"no worker answered a ping in {timeout:g} s",
            )
        )
    return checks


# ---- organizations and keys ----------------------------------------------------------------


@cli.group()
def org() -> None:
    """Organizations."""


@org.command("create")
@click.argument("name")
@click.option("--id", "organization_id", default=None, help="Use this org- id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def org_create(name: str, organization_id: str | None, as_json: bool) -> None:
    """Create an organization; prints its id and root API key (shown only once)."""
    from shared.db import session_scope
    from shared.services import organizations

    _settings()
    _broker()  # initialization is enqueued after the commit
    with _service_errors(), session_scope() as session:
        new_org, root = organizations.create_organization(
            session, name=name, organization_id=organization_id
        )
        organizations.start_initialization(session, organization_id=new_org.id)
    if as_json:
        _echo_json({"organizationId": new_org.id, "userId": root.user.id, "apiKey": root.api_key})
    else:
        click.echo(f"organization: {new_org.id}")
        click.echo(f"root user:    {root.user.id}")
        click.echo(f"api key:      {root.api_key}   (shown only now)")


@org.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def org_list(as_json: bool) -> None:
    """List every organization with its users, endpoints and initialization status."""
    from shared.db import session_scope
    from shared.services.operations import list_organization_summaries

    _settings()
    with _service_errors(), session_scope() as session:
        rows = [
            {
                "id": s.organization.id,
                "name": s.organization.name,
                "createdAt": _stamp(s.organization.created_at),
                "initialization": s.initialization_status,
                "users": s.users,
                "endpoints": s.endpoints,
            }
            for s in list_organization_summaries(session)
        ]
    if as_json:
        _echo_json({"items": rows, "total": len(rows)})
        return
    click.echo(f"{'ID':<20} {'INIT':<12} {'USERS':>5} {'ENDPOINTS':>9}  {'CREATED':<24} NAME")
    for r in rows:
        click.echo(
            f"{r['id']:<20} {r['initialization'] or '-':<12} {r['users']:>5} "
            f"{r['endpoints']:>9}  {r['createdAt']:<24} {r['name']}"
        )
    click.echo(f"{len(rows)} organization(s)", err=True)


@cli.group()
def key() -> None:
    """API keys."""


@key.command("create")
@click.option("--org", "organization_id", default=None, help="For this organization's root user.")
@click.option("--user", "user_id", default=None, help="For this user.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def key_create(organization_id: str | None, user_id: str | None, as_json: bool) -> None:
    """Issue a new API key for a user or an organization's root (shown only once)."""
    from shared.db import session_scope
    from shared.services.operations import issue_api_key

    if (organization_id is None) == (user_id is None):
        raise click.UsageError("give exactly one of --org or --user")
    _settings()
    with _service_errors(), session_scope() as session:
        user, api_key = issue_api_key(session, user_id=user_id, organization_id=organization_id)
        result = {
            "organizationId": user.organization_id,
            "userId": user.id,
            "role": user.role,
            "apiKey": api_key,
        }
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"user:    {result['userId']} ({result['role']} of {result['organizationId']})")
        click.echo(f"api key: {api_key}   (shown only now)")


# ---- endpoints -----------------------------------------------------------------------------


@cli.group()
def endpoint() -> None:
    """Endpoints of every organization."""


@endpoint.command("list")
@click.option("--org", "organization_id", default=None, help="Only this organization's.")
@click.option("--status", type=click.Choice(["active", "disabled"]), default=None)
@click.option("--url-contains", default=None, help="Only endpoints whose URL contains this.")
@click.option("--category", default=None, help="Preconfigured category, or team-hook.")
@click.option("--failing", is_flag=True, help="Only endpoints failing right now.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_list(
    organization_id: str | None,
    status: str | None,
    url_contains: str | None,
    category: str | None,
    failing: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List endpoints with their delivery figures, oldest first."""
    from shared.db import session_scope
    from shared.schemas import OperatorEndpointWithStatsSchema
    from shared.services.operations import list_all_endpoints

    _settings()
    with _service_errors(), session_scope() as session:
        found, total = list_all_endpoints(
            session,
            organization_id=organization_id,
            status=status,
            url_contains=url_contains,
            category=category,
            failing=failing,
            limit=limit,
            offset=offset,
        )
        rows = OperatorEndpointWithStatsSchema(many=True).dump(found)
    if as_json:
        _echo_json({"items": rows, "total": total})
        return
    click.echo(f"{'ID':<20} {'ORGANIZATION':<20} {'STATUS':<9} {'OK':>6} {'FAILED':>6} URL")
    for r in rows:
        click.echo(
            f"{r['id']:<20} {r['organizationId']:<20} {r['status']:<9} "
            f"{r['stats']['successful']:>6} {r['stats']['failed']:>6} {r['url']}"
        )
    click.echo(f"{len(rows)} of {total} endpoint(s)", err=True)


def _set_active(endpoint_id: str, active: bool, reason: str | None, as_json: bool) -> None:
    from shared.db import session_scope
    from shared.schemas import OperatorEndpointSchema
    from shared.services.operations import set_endpoint_active

    _settings()
    with _service_errors(), session_scope() as session:
        found, changed = set_endpoint_active(
            session, endpoint_id=endpoint_id, active=active, reason=reason
        )
        row = OperatorEndpointSchema().dump(found)
    if as_json:
        _echo_json({**row, "changed": changed})
    elif changed:
        click.echo(f"{endpoint_id} is now {row['status']}")
    else:
        click.echo(f"{endpoint_id} was already {row['status']}")


@endpoint.command("disable")
@click.argument("endpoint_id")
@click.option("--reason", default=None, help="Shown as the endpoint's disabledReason.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_disable(endpoint_id: str, reason: str | None, as_json: bool) -> None:
    """Disable an endpoint; its pending deliveries are cancelled."""
    _set_active(endpoint_id, False, reason, as_json)


@endpoint.command("enable")
@click.argument("endpoint_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def endpoint_enable(endpoint_id: str, as_json: bool) -> None:
    """Enable a disabled endpoint again (new messages are delivered to it)."""
    _set_active(endpoint_id, True, None, as_json)


# ---- messages ------------------------------------------------------------------------------


@cli.group()
def messages() -> None:
    """Messages and their delivery attempts."""


def _activity_text(item: Any) -> str:
    stamp = _stamp(item.created_at)
    if item.kind == "message":
        return f"{stamp}  message  {item.id}  {item.event_type}  {item.organization_id}"
    answer = item.status_code if item.status_code is not None else (item.error or "no answer")
    return (
        f"{stamp}  attempt  {item.status:<7} {answer}  {item.duration_ms}ms  {item.trigger}  "
        f"{item.delivery_id} -> {item.endpoint_id}  {item.message_id}  {item.url}"
    )


@messages.command("tail")
@click.option("--org", "organization_id", default=None, help="Only this organization's.")
@click.option("--endpoint", "endpoint_id", default=None, help="Only this endpoint's.")
@click.option("--since", default=None, help="Start from this time (ISO 8601, or 10m, 2h ago).")
@click.option(
    "--interval",
    default=0.25,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between polls.",
)
@click.option("--limit", default=None, type=click.IntRange(1), help="Stop after this many lines.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def messages_tail(
    organization_id: str | None,
    endpoint_id: str | None,
    since: str | None,
    interval: float,
    limit: int | None,
    as_json: bool,
) -> None:
    """Follow new messages and delivery attempts as they are recorded (Ctrl-C to stop)."""
    from shared.db import get_sessionmaker
    from shared.schemas import OperatorAttemptSchema, OperatorMessageSchema
    from shared.services.activity import ActivityTail

    _settings()
    tail = ActivityTail(
        get_sessionmaker(),
        since=_moment(since, "--since"),
        organization_id=organization_id,
        endpoint_id=endpoint_id,
    )
    click.echo(
        f"following messages and attempts since {_stamp(tail.cursor)} (Ctrl-C to stop)", err=True
    )
    schemas = {"message": OperatorMessageSchema(), "attempt": OperatorAttemptSchema()}
    shown = 0
    with _service_errors(), contextlib.suppress(KeyboardInterrupt):
        for item in tail.follow(interval, time.sleep):
            line = json.dumps(schemas[item.kind].dump(item)) if as_json else _activity_text(item)
            click.echo(line)
            shown += 1
            if limit is not None and shown >= limit:
                return


# ---- recovery and retention ----------------------------------------------------------------


@cli.command()
@click.argument("endpoint_id")
@click.option("--since", required=True, help="Window start: ISO 8601, or 30m, 6h, 7d ago.")
@click.option("--until", default=None, help="Window end (default now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def recover(endpoint_id: str, since: str, until: str | None, as_json: bool) -> None:
    """Attempt again, once, every failed delivery of an endpoint created in the window."""
    from shared.db import session_scope
    from shared.services.operations import recover_endpoint

    _settings()
    _broker()  # the manual attempts are enqueued after the commit
    start, end = _moment(since, "--since"), _moment(until, "--until")
    with _service_errors(), session_scope() as session:
        count = recover_endpoint(session, endpoint_id=endpoint_id, since=start, until=end)
    if as_json:
        _echo_json({"endpointId": endpoint_id, "recovered": count})
    else:
        click.echo(f"{count} failed deliveries of {endpoint_id} queued for another attempt")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def purge(dry_run: bool, as_json: bool) -> None:
    """Delete messages and attempts older than WEBHOOKS_RETENTION_DAYS, in small batches."""
    from shared.db import get_sessionmaker, session_scope
    from shared.services.operations import count_expired, purge_in_batches

    settings = _settings()
    with _service_errors(), session_scope() as session:
        expired = count_expired(session, retention_days=settings.retention_days)
    total = expired["messages"] + expired["attempts"]
    if dry_run:
        if as_json:
            _echo_json({"dryRun": True, "retentionDays": settings.retention_days, **expired})
        else:
            click.echo(
                f"would delete {expired['messages']} messages and {expired['attempts']} attempts "
                f"older than {settings.retention_days} days"
            )
        return
    deleted = {"messages": 0, "attempts": 0}
    show_bar = not as_json and total > 0
    with _service_errors(), _progress(show_bar, total, "purging") as advance:
        for counts in purge_in_batches(get_sessionmaker()):
            for name in deleted:
                deleted[name] += counts[name]
            advance(counts["messages"] + counts["attempts"])
    if as_json:
        _echo_json({"dryRun": False, "retentionDays": settings.retention_days, **deleted})
    else:
        click.echo(
            f"deleted {deleted['messages']} messages and {deleted['attempts']} attempts "
            f"older than {settings.retention_days} days"
        )


@cli.command("rotate-encryption-key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def rotate_encryption_key(as_json: bool) -> None:
    """Re-encrypt every stored secret with the first key of WEBHOOKS_ENCRYPTION_KEY.

    Put the new key first and the old ones after it on every process, run this, then
    drop the old keys. It commits batch by batch: interrupted, run it again.
    """
    from shared.db import get_sessionmaker, session_scope
    from shared.services.encryption import count_endpoints, reencrypt_in_batches

    settings = _settings()
    with _service_errors(), session_scope() as session:
        total = count_endpoints(session)
    endpoints = reencrypted = 0
    with _service_errors(), _progress(not as_json and total > 0, total, "re-encrypting") as advance:
        for batch in reencrypt_in_batches(get_sessionmaker()):
            endpoints += batch.endpoints
            reencrypted += batch.reencrypted
            advance(batch.endpoints)
    older = len(settings.encryption_keys) - 1
    if as_json:
        _echo_json({"endpoints": endpoints, "reencrypted": reencrypted, "olderKeys": older})
        return
    click.echo(
        f"{reencrypted} of {endpoints} endpoints re-encrypted; every stored secret is now "
        "under the first key of WEBHOOKS_ENCRYPTION_KEY"
    )
    if older:
        click.echo(
            f"the {older} older key(s) after it can now be removed from WEBHOOKS_ENCRYPTION_KEY"
        )


@contextlib.contextmanager
def _progress(show: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout stays clean for scripts), or nothing."""
    if not show:
        yield lambda _n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


# ---- trying it out -------------------------------------------------------------------------


@cli.command()
@click.option("--port", default=9000, show_default=True, help="Port to listen on (loopback).")
@click.option("--secret", default=None, help="An endpoint's whsec_ secret, to verify signatures.")
@click.option("--status", default=200, show_default=True, help="Status code to answer with.")
def listen(port: int, secret: str | None, status: int) -> None:
    """Run a receiver on 127.0.0.1 that prints every webhook it gets (for trying things out)."""
    from datetime import UTC
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.payloads import format_timestamp
    from shared.signing import verify

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received = datetime.now(UTC)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            # The event's name in whichever of the three payload formats the endpoint has.
            event = next(
                (
                    payload[field]
                    for field in ("event", "type", "eventLabel")
                    if isinstance(payload, dict) and isinstance(payload.get(field), str)
                ),
                "-",
            )
            # One line per request first: when it came, what it was, what it was answered.
            stamp = format_timestamp(received)
            click.echo(f"{stamp}  POST {self.path}  {event}  answered {status}")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"):
                click.echo(f"  {name}: {headers.get(name, '')}")
            if secret:
                ok = verify(secret, headers, body)
                click.echo(f"  signature: {'valid' if ok else 'INVALID'}")
            if payload is not None:
                click.echo("  " + json.dumps(payload, indent=2).replace("\n", "\n  "))
            else:
                click.echo(f"  {body[:500]!r}")
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    click.echo(
        f"listening on http://127.0.0.1:{port}, answering {status} to every request "
        "(Ctrl-C to stop)"
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def main() -> None:  # pragma: no cover
    """Console entry point."""
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
