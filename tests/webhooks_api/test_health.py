"""GET /api/internal/readyz and /api/internal/metrics: operator routes behind the platform token.

Readiness is 200 when the database and the broker answer, else 503 naming the part that is
down. Neither route answers without credentials (SPEC 3), and the platform token opens
only /api/internal (SPEC 10), so both live there; the old root paths are gone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PLATFORM

ROOT = Path(__file__).resolve().parents[2]
READYZ = "/api/internal/readyz"
METRICS = "/api/internal/metrics"

# The app, built in a process of its own whose settings point a part at a closed port.
PROBE = (
    "import os\n"
    "from webhooks_api.app import create_app\n"
    "platform = {'Authorization': 'Bearer ' + os.environ['WEBHOOKS_ADMIN_TOKEN']}\n"
    "resp = create_app().test_client().get('/api/internal/readyz', headers=platform)\n"
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


def test_readyz_with_the_platform_token_is_ready_when_everything_is_up(client):
    resp = client.get(READYZ, headers=PLATFORM)
    assert resp.status_code == 200
    assert resp.json == {"status": "ready", "database": {"ok": True}, "broker": {"ok": True}}
    assert client.get("/healthz").json == {"status": "ok"}


@pytest.mark.parametrize("path", [READYZ, METRICS])
def test_operator_routes_need_the_platform_token(client, org, path):
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        (org.headers, 403),
    ):
        resp = client.get(path, headers=headers)
        assert resp.status_code == status, (headers, resp.get_data(as_text=True))
        # The error shape of the rest of /api/internal (SPEC 6.4).
        assert set(resp.json) == {"statusCode", "error", "message"}
        assert resp.json["statusCode"] == status
    assert client.get(path, headers=PLATFORM).status_code == 200


@pytest.mark.parametrize("path", ["/readyz", "/metrics"])
def test_operator_routes_are_gone_from_the_root(client, path):
    # SPEC 3: only /healthz, /docs, /openapi.json and the dashboard shell answer
    # without credentials; SPEC 10: the platform token opens nothing outside /api/internal.
    assert client.get(path).status_code == 404
    assert client.get(path, headers=PLATFORM).status_code == 404


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
