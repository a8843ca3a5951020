"""Beat's scheduler: Celery's own, plus a heartbeat file a health check can read.

A beat that hangs (a broker it cannot reach, a stuck loop) keeps its process alive, so a
process check says nothing. The scheduler touches ``<schedule file>.heartbeat`` on every
tick instead; beat ticks at least as often as its most frequent job (the sweep of due
deliveries, every few seconds), so a heartbeat older than a minute means beat is stuck.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from celery.beat import PersistentScheduler

log = logging.getLogger("webhooks.beat")

# What the compose file's health check allows: many ticks' worth, so a slow tick is no alarm.
STALE_AFTER_SECONDS = 60.0


def heartbeat_path(schedule_filename: str | Path) -> Path:
    """The heartbeat file of the beat that keeps its schedule in ``schedule_filename``."""
    return Path(f"{schedule_filename}.heartbeat")


def heartbeat_age(schedule_filename: str | Path, *, now: float | None = None) -> float | None:
    """Seconds since beat last ticked, or None when it never did."""
    try:
        touched = heartbeat_path(schedule_filename).stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - touched


class Scheduler(PersistentScheduler):
    """Celery's persistent scheduler, touching its heartbeat file on every tick."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Send what is due (Celery's tick), then touch the heartbeat file."""
        interval = super().tick(*args, **kwargs)
        try:
            heartbeat_path(self.schedule_filename).touch()
        except OSError as exc:  # a full or read-only disk must not stop the schedule
            log.warning("could not touch beat's heartbeat file: %s", exc)
        return interval


def main(argv: list[str] | None = None) -> int:
    """``python -m webhooks_worker.beat <schedule file>``: 0 when beat ticked recently."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m webhooks_worker.beat <beat's schedule file>\n")
        return 2
    age = heartbeat_age(args[0])
    if age is None:
        sys.stderr.write(f"beat has not ticked yet ({heartbeat_path(args[0])} is missing)\n")
        return 1
    if age > STALE_AFTER_SECONDS:
        sys.stderr.write(f"beat last ticked {age:.0f} s ago\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
