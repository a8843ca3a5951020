"""GET /readyz and /metrics at the root, where load balancers and Prometheus look for them.

Readiness answers without credentials and is 503 only when the database is down: a broker
outage is reported but keeps the api in rotation, since ingest keeps accepting. Metrics
are open unless WEBHOOKS_METRICS_TOKEN is set, and carry the standard process and Python
figures besides the deployment's own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import get_settings
from tests.conftest import PLATFORM

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "metrics-token-0123456789abcdef"

# The app, built in a process of its own whose settings point a part at a closed port.
PROBE = (
    "from webhooks_api.app import create_app\n"
    "client = create_app().test_client()\n"
    "resp = client.get('/readyz')\n"
    "print(resp.status_code, resp.headers.get('Retry-After'))\n"
    "print(resp.get_data(as_text=True).strip())\n"
    "print(json.dumps(client.get('/metrics').get_data(as_text=True)))\n"
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def probe(**env: str) -> tuple[str, dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + PROBE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status, body, metrics = result.stdout.strip().splitlines()[-3:]
    return status, json.loads(body), json.loads(metrics)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def metrics_token(monkeypatch):
    """WEBHOOKS_METRICS_TOKEN set for one test (the settings are read again)."""
    monkeypatch.setenv("WEBHOOKS_METRICS_TOKEN", METRICS_TOKEN)
    get_settings.cache_clear()
    yield METRICS_TOKEN
    monkeypatch.undo()
    get_settings.cache_clear()


def test_readyz_answers_without_credentials_when_everything_is_up(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json == {"status": "ready", "database": {"ok": True}, "broker": {"ok": True}}
    assert client.get("/healthz").json == {"status": "ok"}


def test_metrics_are_open_without_a_metrics_token_and_keep_the_process_and_python_figures(
    client,
):
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    names = {name for name, _labels in samples(resp.get_data(as_text=True))}
    assert "process_resident_memory_bytes" in names
    assert "process_cpu_seconds_total" in names
    assert "python_info" in names
    assert any(name.startswith("python_gc_") for name in names)
    assert "webhooks_deliveries_pending" in names
    text = resp.get_data(as_text=True)
    assert "# HELP webhooks_deliveries_pending Deliveries not yet final; deployment-wide" in text


def test_metrics_need_the_metrics_token_once_it_is_set(client, org, metrics_token):
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {metrics_token}"},
        org.headers,
        PLATFORM,  # the platform token is not the metrics token
    ):
        resp = client.get("/metrics", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json["statusCode"] == 401
        assert "WEBHOOKS_METRICS_TOKEN" in resp.json["message"]
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert resp.status_code == 200
    assert "webhooks_up" in resp.get_data(as_text=True)
    # Readiness stays open: a load balancer's probe has no credentials.
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("path", ["/api/internal/readyz", "/api/internal/metrics"])
def test_the_internal_paths_still_answer_with_the_platform_token_only(client, org, path):
    for headers, status in (({}, 401), (org.headers, 403)):
        resp = client.get(path, headers=headers)
        assert resp.status_code == status
        assert set(resp.json) == {"statusCode", "error", "message"}
    assert client.get(path, headers=PLATFORM).status_code == 200


def test_readyz_stays_ready_when_redis_is_unreachable_and_reports_the_broker():
    status, body, metrics = probe(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    assert status == "200 None"
    assert body == {
        "status": "ready",
        "database": {"ok": True},
        "broker": {"ok": False},
        "down": ["broker"],
    }
    found = samples(metrics)
    assert found[("webhooks_up", (("part", "broker"),))] == 0
    assert found[("webhooks_up", (("part", "database"),))] == 1


def test_readyz_is_503_naming_the_database_when_it_is_unreachable():
    status, body, metrics = probe(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port()}/x")
    assert status == "503 5"
    assert body["status"] == "unavailable"
    assert body["down"] == ["database"]
    assert body["broker"] == {"ok": True}
    assert samples(metrics)[("webhooks_up", (("part", "database"),))] == 0
