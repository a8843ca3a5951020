"""/readyz: ready when the database and the broker answer, 503 naming the part that is down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The app, built in a process of its own whose settings point a part at a closed port.
PROBE = (
    "from webhooks_api.app import create_app\n"
    "resp = create_app().test_client().get('/readyz')\n"
    "print(resp.status_code, resp.headers.get('Retry-After'))\n"
    "print(resp.get_data(as_text=True))\n"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probe(**env: str) -> tuple[str, dict]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status, body = result.stdout.strip().splitlines()[-2:]
    return status, json.loads(body)


def test_readyz_answers_without_credentials_when_everything_is_up(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json == {"status": "ready", "database": {"ok": True}, "broker": {"ok": True}}
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_is_503_naming_the_broker_when_redis_is_unreachable():
    status, body = probe(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    assert status == "503 5"
    assert body["down"] == ["broker"]
    assert body["database"] == {"ok": True}


def test_readyz_is_503_naming_the_database_when_it_is_unreachable():
    status, body = probe(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/x")
    assert status == "503 5"
    assert body["down"] == ["database"]
    assert body["broker"] == {"ok": True}
