"""`webhooks worker`: several delivery processes, seen by their manager as one.

A delivery process holds one interpreter lock, so one process delivers with one core at
most; the machine's other cores need processes of their own. honcho, docker compose and
systemd each expect one foreground process per service, so the supervisor is that
process: it starts one Celery worker (the thread pool of ``webhooks_worker.thread_pool``)
per core, passes a stop on to every one of them, replaces one that dies, and exits when
they have stopped.

- SIGTERM or SIGINT: every child gets SIGTERM, Celery's warm shutdown (running attempts
  finish and are recorded; what a child held but had not started is enqueued again by
  beat's sweep of the delivery rows). Once all have exited, the supervisor exits 0.
  Children share the supervisor's process group, so a Ctrl-C in a terminal reaches them
  directly too; SIGTERM after it changes nothing (a second Ctrl-C still means a cold
  shutdown, as Celery has it).
- A child that exits on its own is started again after a backoff that doubles with each
  exit in a row (1 s up to 30 s), so a crash loop does not spin.
- A child that keeps exiting within seconds of its start (a broken installation, a
  database that refuses the worker's settings) will not get better by restarting: after
  five such exits in a row the supervisor stops the others and exits 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("webhooks.supervisor")

WORKER_APP = "webhooks_worker.celery_app"
# Restart delays after a child exited on its own: doubled per exit in a row, capped.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# A child that ran this long was healthy: its next exit starts the backoff afresh.
STABLE_AFTER = 60.0
# A child that exits sooner than this after its start failed at start (a worker is ready
# within a few seconds; connecting to a broker that is away is retried, not an exit).
STARTUP_SECONDS = 10.0
# Failures at start in a row after which restarting is pointless.
GIVE_UP_AFTER = 5
# How often the supervisor looks at its children and at the signals it got.
POLL_EVERY = 0.2


def worker_command(
    index: int, *, concurrency: int, loglevel: str = "INFO", extra: Sequence[str] = ()
) -> list[str]:
    """The Celery worker command line of delivery process ``index`` (node ``worker<index>``)."""
    return [
        sys.executable, "-m", "celery", "-A", WORKER_APP, "worker",
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", loglevel,
        "--hostname", f"worker{index}@%h",
        *extra,
    ]  # fmt: skip


@dataclass
class _Child:
    """One slot of the supervisor: its command and the process now filling it."""

    index: int
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    exits_in_a_row: int = 0
    start_failures_in_a_row: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs ``commands`` as child processes in the foreground until told to stop."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        *,
        env: dict[str, str] | None = None,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        startup_seconds: float = STARTUP_SECONDS,
        give_up_after: int = GIVE_UP_AFTER,
    ) -> None:
        self.children = [_Child(i, list(argv)) for i, argv in enumerate(commands)]
        self.env = env
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.startup_seconds = startup_seconds
        self.give_up_after = give_up_after
        self._stop_signal: int | None = None

    def request_stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        """Stop every child and return from ``run`` (a signal handler)."""
        self._stop_signal = signum

    def run(self) -> int:
        """Start the children and supervise them; 0 after a requested stop, 1 on giving up."""
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                self._start(child)
            gave_up = False
            while self._stop_signal is None and not gave_up:
                time.sleep(POLL_EVERY)
                gave_up = self._tend()
            if self._stop_signal is not None:
                log.info(
                    "%s: stopping %d worker processes (warm shutdown)",
                    signal.Signals(self._stop_signal).name,
                    len(self.children),
                )
            clean = self._stop_all()
            return 1 if gave_up or not clean else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env)
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("worker process %d started (pid %d)", child.index, child.proc.pid)

    def _tend(self) -> bool:
        """Restart children that exited, after their backoff; True to give up."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                continue
            code = child.proc.poll()
            if code is None:
                continue
            lived = now - child.started_at
            child.proc = None
            if lived >= STABLE_AFTER:
                child.exits_in_a_row = 0
            child.exits_in_a_row += 1
            if lived < self.startup_seconds:
                child.start_failures_in_a_row += 1
            else:
                child.start_failures_in_a_row = 0
            if child.start_failures_in_a_row >= self.give_up_after:
                log.error(
                    "worker process %d exited with code %s within %.0f s of its start, "
                    "%d times in a row; giving up",
                    child.index,
                    code,
                    self.startup_seconds,
                    child.start_failures_in_a_row,
                )
                return True
            delay = min(self.max_backoff, self.first_backoff * 2 ** (child.exits_in_a_row - 1))
            child.restart_at = now + delay
            log.warning(
                "worker process %d exited with code %s after %.1f s; restarting in %.0f s",
                child.index,
                code,
                lived,
                delay,
            )
        return False

    def _stop_all(self) -> bool:
        """SIGTERM every child and wait for all; True when each stopped cleanly."""
        running = [c.proc for c in self.children if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        clean = True
        # No deadline of its own: the manager that stops us decides how long a warm
        # shutdown may take (compose's stop_grace_period, systemd's TimeoutStopSec).
        for proc in running:
            clean = proc.wait() in (0, -signal.SIGTERM, -signal.SIGINT) and clean
        return clean


def run_workers(
    *,
    processes: int,
    concurrency: int,
    loglevel: str = "INFO",
    beat_schedule: str | None = None,
    queues: Sequence[str] | None = None,
) -> int:
    """Run ``processes`` delivery workers until SIGTERM or SIGINT; the exit status.

    ``queues``: the broker queues each process consumes (Celery's ``-Q``); None for all.
    """
    commands = []
    for index in range(processes):
        # Beat inside the first worker: the all-in-one `webhooks up`, one machine only.
        extra = ["--beat", "--schedule", beat_schedule] if beat_schedule and index == 0 else []
        if queues:
            extra = [*extra, "-Q", ",".join(queues)]
        commands.append(
            worker_command(index, concurrency=concurrency, loglevel=loglevel, extra=extra)
        )
    # The children size their HTTP pools by the concurrency they run with.
    env = {**os.environ, "WEBHOOKS_WORKER_CONCURRENCY": str(concurrency)}
    log.info("starting %d worker processes of up to %d threads each", processes, concurrency)
    return Supervisor(commands, env=env).run()
