"""Shared by every ``webhooks`` command: settings, logging, errors and output."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import click

from shared.config import (
    ConfigError,
    Settings,
    get_settings,
)


def load_cli_settings() -> Settings:
    """The validated settings (a bad one is a one-line error), with logging set up."""
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None
    configure_cli_logging(settings.log_format)
    return settings


def configure_cli_logging(log_format: str) -> None:
    from shared.logs import configure_logging

    # Warnings only: the commands print their own results on stdout.
    configure_logging(log_format, process="cli", level="WARNING")


def use_broker() -> None:
    """Install the Celery app's sender, so that the command's work is enqueued after commits."""
    from webhooks_worker.celery_app import install_sender

    install_sender()


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
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


def format_stamp(value: datetime | None) -> str | None:
    from shared.payloads import format_timestamp

    return format_timestamp(value) if value else None


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=str))


def moment(value: str | None, name: str) -> datetime | None:
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
