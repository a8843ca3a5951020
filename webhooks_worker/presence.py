"""Workers' presence on a broker that cannot broadcast: a heartbeat file per worker.

The status route counts workers with a Celery control ping, a broadcast that kombu's
SQLAlchemy transport (the embedded default) does not carry: there every working worker
looked absent and `/api/webhooks/status` answered 503. On that transport each worker
instead touches a file of its own in ``<WEBHOOKS_DATA_DIR>/workers`` every few seconds,
and a worker counts as present while its file is fresh. The embedded default runs on
one machine, which is what makes a directory a fair meeting place.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

# How often a worker touches its file, and how long a file counts after its last touch:
# a worker that died (SIGKILL, no shutdown signal) drops out within FRESH_SECONDS.
HEARTBEAT_SECONDS = 5.0
FRESH_SECONDS = 3 * HEARTBEAT_SECONDS


def broadcasts(broker_url: str) -> bool:
    """Whether the broker carries Celery's control broadcasts (all but kombu's SQLAlchemy)."""
    return not broker_url.startswith("sqla+")


def presence_dir(data_dir: Path) -> Path:
    """Where the heartbeat files live."""
    return data_dir / "workers"


class Heartbeat:
    """Keeps one worker's file fresh from a daemon thread until stopped."""

    def __init__(self, directory: Path, worker_name: str) -> None:
        self.path = directory / (re.sub(r"[^A-Za-z0-9_.@-]", "_", worker_name) + ".alive")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)

    def start(self) -> None:
        """Write the file now and keep it fresh."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._thread.start()

    def stop(self) -> None:
        """Stop touching the file and remove it: the worker is gone."""
        self._stop.set()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.path.touch()
            except OSError:  # the directory was removed: make it again next beat
                self.path.parent.mkdir(parents=True, exist_ok=True)


def count_present(directory: Path, *, now: float | None = None) -> int:
    """How many workers touched their file within FRESH_SECONDS."""
    now = time.time() if now is None else now
    try:
        files = list(directory.glob("*.alive"))
    except OSError:
        return 0
    present = 0
    for path in files:
        try:
            if now - path.stat().st_mtime <= FRESH_SECONDS:
                present += 1
        except FileNotFoundError:  # its worker stopped between the listing and the stat
            continue
    return present
