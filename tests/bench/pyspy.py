"""Optional py-spy sampling of the api and the workers during each scenario (--py-spy).

py-spy samples from outside (``--nonblocking``: the target is never paused) and leaves
out idle threads, so what it shows is where the processes spend CPU. The raw collapsed
stacks are kept next to the results; ``summarize`` groups them by library and lists the
project's own functions by inclusive share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

# Leaf-first: a sample is charged to the deepest frame that matches one of these.
# Generic stdlib modules (socket, threading, selectors, queue...) are transparent.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("/logging/",)),
    ("json", ("/json/", "simplejson")),
    ("signing (hmac/base64)", ("shared/signing.py", "/hmac.py", "/base64.py")),
    ("secret decryption (Fernet)", ("cryptography/", "shared/crypto.py")),
    ("http client (pycurl)", ("shared/http.py", "urllib3/", "/http/client.py")),
    ("postgres driver (psycopg2)", ("psycopg2",)),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("redis-py", ("redis/",)),
    ("kombu", ("kombu/",)),
    ("celery", ("celery/", "billiard/")),
    ("flask/werkzeug/smorest", ("flask/", "werkzeug/", "flask_smorest/", "marshmallow/")),
    ("gunicorn", ("gunicorn/",)),
    ("socketio/engineio", ("socketio/", "engineio/")),
    ("service code (shared/, webhooks_*)", ("shared/", "webhooks_api/", "webhooks_worker/")),
]
PROJECT_MARKERS = ("shared/", "webhooks_api/", "webhooks_worker/")


def available() -> bool:
    return shutil.which("py-spy") is not None


class Recorder:
    """py-spy record processes for the duration of one scenario."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.running: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, label: str, targets: dict[str, int]) -> None:
        for name, pid in targets.items():
            out = self.out_dir / f"pyspy-{label}-{name}.txt"
            argv = [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                # Only the thread holding the GIL: with 64 threads, the others would be
                # charged for the time they wait for it.
                "--gil",
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(out),
            ]
            log = open(self.out_dir / f"pyspy-{label}-{name}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            log.close()
            self.running.append((name, proc, out))

    def stop(self) -> dict[str, dict]:
        """Stop every recorder (SIGINT makes py-spy write its file); summaries by target."""
        summaries = {}
        for _, proc, _ in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        for name, proc, out in self.running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            for _ in range(20):
                if out.exists():
                    break
                time.sleep(0.1)
            if out.exists():
                summaries[name] = summarize(out)
                summaries[name]["file"] = str(out)
        self.running = []
        return summaries


def _bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in BUCKETS:
            if any(marker in frame for marker in markers):
                return name
    return "other (stdlib, interpreter)"


def _project_function(frame: str) -> str | None:
    if not any(marker in frame for marker in PROJECT_MARKERS):
        return None
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in PROJECT_MARKERS:
        if marker in path:
            path = marker + path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarize(path: Path, top: int = 30) -> dict:
    """Share of samples by library bucket and by project function (inclusive)."""
    buckets: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        buckets[_bucket(frames)] += count
        seen = set()
        for frame in frames:
            function = _project_function(frame)
            if function and function not in seen:
                seen.add(function)
                functions[function] += count
    if not total:
        return {"samples": 0, "buckets": {}, "project_functions": {}}
    return {
        "samples": total,
        "buckets": {k: round(v / total, 3) for k, v in buckets.most_common()},
        "project_functions": {k: round(v / total, 3) for k, v in functions.most_common(top)},
    }
