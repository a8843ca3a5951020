"""``webhooks check``: whether the database, the broker and the workers answer."""

from __future__ import annotations

from typing import Any

import click

from shared.config import (
    ConfigError,
    Settings,
    load_settings,
)

from .base import configure_cli_logging, echo_json, use_broker


@click.command()
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
        configure_cli_logging("text")
        checks.append(Check("config", False, str(exc)))
        settings = None
    else:
        configure_cli_logging(settings.log_format)
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
        echo_json({"ok": not broken, "checks": parts})
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
    use_broker()
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
