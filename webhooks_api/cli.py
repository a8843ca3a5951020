"""The ``webhooks`` command: run the service and do everyday chores."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import click

from shared.config import ConfigError, Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@click.group()
def cli() -> None:
    """Sandbox webhooks: signed, retried, recorded webhook delivery."""


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from shared.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database schema is up to date")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the api binds.")
@click.option("--port", default=8000, show_default=True, help="Port the api listens on.")
@click.option("--concurrency", default=None, type=int, help="Delivery worker threads.")
def up(host: str, port: int, concurrency: int | None) -> None:
    """Run api, worker and beat together (SQLite and an embedded broker when unconfigured)."""
    from shared.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    env = dict(os.environ)
    env.setdefault("WEBHOOKS_DATA_DIR", str(settings.data_dir))
    threads = concurrency or (16 if settings.embedded else settings.worker_concurrency)
    worker_cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "webhooks_worker.celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--loglevel",
        "INFO",
        # Beat runs inside this worker: one process fewer on a single machine.
        "--beat",
        "--schedule",
        str(settings.data_dir / "celerybeat-schedule"),
    ]
    api_cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "webhooks_api.wsgi:app",
        "--bind",
        f"{host}:{port}",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--access-logfile",
        "-",
    ]
    where = (
        "embedded SQLite database and broker in " + str(settings.data_dir)
        if settings.embedded
        else "configured database and broker"
    )
    click.echo(f"starting api on http://{host}:{port} with the {where}")
    if settings.embedded:
        click.echo(f"platform token: {settings.admin_token}")
    procs = [subprocess.Popen(worker_cmd, env=env), subprocess.Popen(api_cmd, env=env)]

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
    from shared.errors import DomainError
    from shared.services import organizations

    _settings()
    import webhooks_worker.celery_app  # noqa: F401  (the broker, for initialization)

    try:
        with session_scope() as session:
            new_org, root = organizations.create_organization(
                session, name=name, organization_id=organization_id
            )
            organizations.start_initialization(session, organization_id=new_org.id)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(
            json.dumps(
                {"organizationId": new_org.id, "userId": root.user.id, "apiKey": root.api_key}
            )
        )
    else:
        click.echo(f"organization: {new_org.id}")
        click.echo(f"root user:    {root.user.id}")
        click.echo(f"api key:      {root.api_key}   (shown only now)")


@cli.command()
@click.option("--port", default=9000, show_default=True, help="Port to listen on (loopback).")
@click.option("--secret", default=None, help="An endpoint's whsec_ secret, to verify signatures.")
@click.option("--status", default=200, show_default=True, help="Status code to answer with.")
def listen(port: int, secret: str | None, status: int) -> None:
    """Run a receiver on 127.0.0.1 that prints every webhook it gets (for trying things out)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.signing import verify

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            click.echo(f"POST {self.path}")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"):
                click.echo(f"  {name}: {headers.get(name, '')}")
            if secret:
                ok = verify(secret, headers, body)
                click.echo(f"  signature: {'valid' if ok else 'INVALID'}")
            try:
                click.echo("  " + json.dumps(json.loads(body), indent=2).replace("\n", "\n  "))
            except ValueError:
                click.echo(f"  {body[:500]!r}")
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    click.echo(f"listening on http://127.0.0.1:{port} (Ctrl-C to stop)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def main() -> None:  # pragma: no cover
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
