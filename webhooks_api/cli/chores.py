"""Recovery, retention and the encryption key: chores an operator runs now and then."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from .base import echo_json, load_cli_settings, moment, service_errors, use_broker


@click.command()
@click.argument("endpoint_id")
@click.option("--since", required=True, help="Window start: ISO 8601, or 30m, 6h, 7d ago.")
@click.option("--until", default=None, help="Window end (default now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def recover(endpoint_id: str, since: str, until: str | None, as_json: bool) -> None:
    """Attempt again, once, every failed delivery of an endpoint created in the window."""
    from shared.db import session_scope
    from shared.services.operations import recover_endpoint

    load_cli_settings()
    use_broker()  # the manual attempts are enqueued after the commit
    start, end = moment(since, "--since"), moment(until, "--until")
    with service_errors(), session_scope() as session:
        count = recover_endpoint(session, endpoint_id=endpoint_id, since=start, until=end)
    if as_json:
        echo_json({"endpointId": endpoint_id, "recovered": count})
    else:
        click.echo(f"{count} failed deliveries of {endpoint_id} queued for another attempt")


@click.command()
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def purge(dry_run: bool, as_json: bool) -> None:
    """Delete messages and attempts older than WEBHOOKS_RETENTION_DAYS, in small batches."""
    from shared.db import get_sessionmaker, session_scope
    from shared.services.operations import count_expired, purge_in_batches

    settings = load_cli_settings()
    with service_errors(), session_scope() as session:
        expired = count_expired(session, retention_days=settings.retention_days)
    total = expired["messages"] + expired["attempts"]
    if dry_run:
        if as_json:
            echo_json({"dryRun": True, "retentionDays": settings.retention_days, **expired})
        else:
            click.echo(
                f"would delete {expired['messages']} messages and {expired['attempts']} attempts "
                f"older than {settings.retention_days} days"
            )
        return
    deleted = {"messages": 0, "attempts": 0}
    show_bar = not as_json and total > 0
    with service_errors(), _progress(show_bar, total, "purging") as advance:
        for counts in purge_in_batches(get_sessionmaker()):
            for name in deleted:
                deleted[name] += counts[name]
            advance(counts["messages"] + counts["attempts"])
    if as_json:
        echo_json({"dryRun": False, "retentionDays": settings.retention_days, **deleted})
    else:
        click.echo(
            f"deleted {deleted['messages']} messages and {deleted['attempts']} attempts "
            f"older than {settings.retention_days} days"
        )


@click.command("rotate-encryption-key")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def rotate_encryption_key(as_json: bool) -> None:
    """Re-encrypt every stored secret with the first key of WEBHOOKS_ENCRYPTION_KEY.

    Put the new key first and the old ones after it on every process, run this, then
    drop the old keys. It commits batch by batch: interrupted, run it again.
    """
    from shared.db import get_sessionmaker, session_scope
    from shared.services.encryption import count_endpoints, reencrypt_in_batches

    settings = load_cli_settings()
    with service_errors(), session_scope() as session:
        total = count_endpoints(session)
    endpoints = reencrypted = 0
    with service_errors(), _progress(not as_json and total > 0, total, "re-encrypting") as advance:
        for batch in reencrypt_in_batches(get_sessionmaker()):
            endpoints += batch.endpoints
            reencrypted += batch.reencrypted
            advance(batch.endpoints)
    older = len(settings.encryption_keys) - 1
    if as_json:
        echo_json({"endpoints": endpoints, "reencrypted": reencrypted, "olderKeys": older})
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
