"""``webhooks messages tail``: new messages and attempts as they are written."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click

from .base import format_stamp, load_cli_settings, moment, service_errors


@click.group()
def messages() -> None:
    """Messages and their delivery attempts."""


def _activity_text(item: Any) -> str:
    stamp = format_stamp(item.created_at)
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

    load_cli_settings()
    tail = ActivityTail(
        get_sessionmaker(),
        since=moment(since, "--since"),
        organization_id=organization_id,
        endpoint_id=endpoint_id,
    )
    click.echo(
        f"following messages and attempts since {format_stamp(tail.cursor)} (Ctrl-C to stop)",
        err=True,
    )
    schemas = {"message": OperatorMessageSchema(), "attempt": OperatorAttemptSchema()}
    shown = 0
    with service_errors(), contextlib.suppress(KeyboardInterrupt):
        for item in tail.follow(interval, time.sleep):
            line = json.dumps(schemas[item.kind].dump(item)) if as_json else _activity_text(item)
            click.echo(line)
            shown += 1
            if limit is not None and shown >= limit:
                return
