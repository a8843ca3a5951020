"""The ``webhooks`` command: run the service and do everyday chores.

Every chore calls a service (``shared.services``); this module parses options, prints
results (``--json`` for scripts, tables for people, progress on stderr) and turns
domain errors into ``click.ClickException`` messages with a non-zero exit.
"""

from __future__ import annotations

from . import activity, admin, checks, chores, listen, processes
from .base import cli

for command in (
    processes.migrate,
    processes.worker,
    processes.up,
    checks.check,
    admin.org,
    admin.key,
    admin.endpoint,
    activity.messages,
    chores.recover,
    chores.purge,
    chores.rotate_encryption_key,
    listen.listen,
):
    cli.add_command(command)

__all__ = ["cli", "main"]


def main() -> None:  # pragma: no cover
    """Console entry point."""
    cli()
