"""Requests to an app whose database is down: built in a process of its own whose
DATABASE_URL points at a closed port, so that this process's engine is left alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Reads the requests as JSON on stdin, answers one JSON line per request on stdout.
_SCRIPT = (
    "import json, sys\n"
    "from webhooks_api.app import create_app\n"
    "client = create_app().test_client()\n"
    "for method, path, headers, kwargs in json.load(sys.stdin):\n"
    "    resp = client.open(path, method=method, headers=headers, **kwargs)\n"
    "    print(json.dumps([resp.status_code, resp.headers.get('Retry-After'),\n"
    "                      resp.get_json(silent=True)]))\n"
)


@dataclass
class Answer:
    """What the app answered, as the client sees it."""

    status: int
    retry_after: str | None
    body: object


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def without_database(*requests: tuple[str, str, dict, dict]) -> list[Answer]:
    """Send ``(method, path, headers, client kwargs)`` requests while the database is down."""
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port()}/x"},
        input=json.dumps(list(requests)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()[-len(requests) :]
    return [Answer(*json.loads(line)) for line in lines]
