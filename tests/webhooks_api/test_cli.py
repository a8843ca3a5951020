"""The ``webhooks`` CLI against the real database, broker and worker process."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Attempt, Delivery, Message, new_id, utcnow
from tests.conftest import PLATFORM
from tests.support.waiting import wait_until
from webhooks_api.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """Run ``webhooks ...`` as its own process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "webhooks_api.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(*args: str):
    """Run a CLI command in this process (same settings as the test environment)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_v1(client, org, url, **extra) -> dict:
    resp = client.post(
        "/v1/webhooks",
        json={"url": url, "event_types": ["sandbox.stopped"], **extra},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    return resp.json["data"]


def _ingest(client, org, sandbox: str = "sbx-1") -> str:
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": sandbox,
            "oldState": "started",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202, resp.json
    return resp.json["messages"][0]["id"]


# ---- check ---------------------------------------------------------------------------------


def test_check_passes_against_the_running_services(worker):
    result = run_cli("check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert lines == {"config": "ok", "database": "ok", "broker": "ok", "workers": "ok"}

    as_json = run_cli("check", "--json")
    assert as_json.returncode == 0
    body = json.loads(as_json.stdout)
    assert body["ok"] is True
    assert [c["part"] for c in body["checks"]] == ["config", "database", "broker", "workers"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_check_names_the_broker_when_redis_is_stopped(tmp_path):
    # A private Redis that this test may stop (the machine's shared one stays up).
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    try:
        wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=10)
        # Redis up, but no worker listens on it: the workers are what is broken.
        no_workers = run_cli("check", "--timeout", "1", env=env)
        assert no_workers.returncode == 1
        assert "broker    ok" in no_workers.stdout
        assert "check failed: workers: no worker answered" in no_workers.stderr
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)

    stopped = run_cli("check", "--timeout", "1", env=env)
    assert stopped.returncode == 1
    assert "database  ok" in stopped.stdout
    assert "broker    FAILED" in stopped.stdout
    assert f"check failed: broker: redis://127.0.0.1:{port}/0 unreachable" in stopped.stderr


def test_check_names_the_database_when_it_is_unreachable():
    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"}
    result = run_cli("check", "--skip-workers", env=env)
    assert result.returncode == 1
    assert "database  FAILED" in result.stdout
    assert "check failed: database: unreachable" in result.stderr


def test_check_names_a_bad_setting():
    result = run_cli("check", "--json", env={"WEBHOOKS_LOG_FORMAT": "xml"})
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False
    assert body["checks"][0]["part"] == "config"
    assert "WEBHOOKS_LOG_FORMAT" in body["checks"][0]["detail"]
    assert "check failed: config: WEBHOOKS_LOG_FORMAT" in result.stderr


def _embedded_env(data_dir: Path) -> dict[str, str]:
    """The newcomer's environment: no database, no Redis, only a data folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")
    }
    env["WEBHOOKS_DATA_DIR"] = str(data_dir)
    return env


def test_check_sees_workers_on_the_embedded_default_by_their_heartbeat_files(tmp_path):
    env = _embedded_env(tmp_path / "data")

    def webhooks(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "webhooks_api.cli", command],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert webhooks("migrate").returncode == 0
    before = webhooks("check")
    assert before.returncode == 1, before.stdout + before.stderr
    assert "workers   FAILED" in before.stdout
    assert "no worker has touched its heartbeat file" in before.stderr

    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "worker",
             "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: b"ready." in log_path.read_bytes(), timeout=60)
        after = webhooks("check")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert after.returncode == 0, after.stdout + after.stderr
    lines = {line.split()[0]: line for line in after.stdout.splitlines()}
    assert lines["workers"].split()[1:3] == ["ok", "1"]
    assert "with a fresh heartbeat in" in lines["workers"]
    assert "not checked" not in after.stdout


# ---- up and listen -------------------------------------------------------------------------


def test_up_names_a_taken_port_at_once_and_how_to_choose_another(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        by_option = run_cli("up", "--port", str(port), env=_embedded_env(tmp_path / "data"))
        elapsed = time.monotonic() - started
        by_variable = run_cli("up", env={**_embedded_env(tmp_path / "data"), "PORT": str(port)})
    assert by_option.returncode == 1
    # One line, before gunicorn's five seconds of retries, naming the port and the way out.
    assert elapsed < 5
    assert by_option.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is already in use by another program; "
        f"stop it, or choose another with --port {port + 1} or PORT={port + 1}"
    )
    assert "starting api" not in by_option.stdout  # nothing was started
    assert by_variable.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in by_variable.stderr


def test_listen_prints_when_each_request_came_its_event_and_what_it_answered():
    import requests

    port = free_port()
    listener = subprocess.Popen(
        [sys.executable, "-u", "-m", "webhooks_api.cli", "listen", "--port", str(port),
         "--status", "500"],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        first = listener.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}, answering 500" in first
        daytona = {"event": "sandbox.state.updated", "id": "sbx-1", "newState": "stopped"}
        envelope = {"id": "evt-1", "type": "sandbox.stopped", "data": {}}
        answers = [
            requests.post(f"http://127.0.0.1:{port}/hooks", json=body, timeout=10).status_code
            for body in (daytona, envelope)
        ]
        ordered = requests.post(
            f"http://127.0.0.1:{port}/hooks",
            json=envelope,
            headers={"webhook-sequence": "7"},
            timeout=10,
        )
    finally:
        listener.terminate()
        output, _ = listener.communicate(timeout=10)
    assert answers == [500, 500] and ordered.status_code == 500
    summary = [line for line in output.splitlines() if "answered" in line]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert len(summary) == 3, output
    # The sequence is shown for the one request that carried it (an ordered endpoint's).
    assert [line.strip() for line in output.splitlines() if "webhook-sequence" in line] == [
        "webhook-sequence: 7"
    ]
    first_line = stamp + r"  POST /hooks  sandbox\.state\.updated  answered 500"
    second_line = stamp + r"  POST /hooks  sandbox\.stopped  answered 500"
    assert re.fullmatch(first_line, summary[0]), summary[0]
    assert re.fullmatch(second_line, summary[1]), summary[1]


# ---- messages tail -------------------------------------------------------------------------


def test_messages_tail_prints_a_delivery_made_by_the_worker_within_a_second(
    client, org, receiver, worker
):
    endpoint = _create_v1(client, org, receiver.url + "/hook")
    tail = subprocess.Popen(
        [sys.executable, "-m", "webhooks_api.cli", "messages", "tail", "--json", "--org", org.id],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, dict]] = []

    def read() -> None:
        for line in tail.stdout:
            lines.append((time.time(), json.loads(line)))

    try:
        assert "following messages and attempts" in tail.stderr.readline()
        threading.Thread(target=read, daemon=True).start()
        message_id = _ingest(client, org)
        got = receiver.wait_for(1)[0]

        def attempt_line():
            return next(((at, item) for at, item in lines if item["kind"] == "attempt"), None)

        printed_at, attempt = wait_until(attempt_line, timeout=10)
    finally:
        tail.terminate()
        tail.wait(timeout=10)
    # The receiver got the request, the worker recorded the attempt, the tail printed it.
    assert printed_at - got.at < 1.0
    assert attempt["messageId"] == message_id
    assert attempt["endpointId"] == endpoint["endpoint_id"]
    assert attempt["status"] == "success"
    assert attempt["statusCode"] == 200
    assert attempt["trigger"] == "scheduled"
    with session_scope() as session:
        row = session.scalars(select(Attempt).where(Attempt.message_id == message_id)).one()
    assert attempt["id"] == row.id
    assert attempt["deliveryId"] == row.delivery_id
    messages = [item for _at, item in lines if item["kind"] == "message"]
    assert [m["id"] for m in messages] == [message_id]
    assert messages[0]["eventType"] == "sandbox.state.updated"


def test_messages_tail_from_a_past_moment_shows_each_row_once(client, org):
    first, second = _ingest(client, org, "sbx-1"), _ingest(client, org, "sbx-2")
    result = invoke("messages", "tail", "--since", "5m", "--org", org.id, "--limit", "2")
    assert result.exit_code == 0, result.output
    printed = [line.split()[2] for line in result.stdout.splitlines()]
    assert printed == [first, second]


# ---- organizations and keys ----------------------------------------------------------------


def test_org_create_and_list(make_org):
    existing = make_org("Existing")
    created = invoke("org", "create", "Fresh", "--json")
    assert created.exit_code == 0, created.output
    fresh = json.loads(created.stdout)
    listed = invoke("org", "list", "--json")
    assert listed.exit_code == 0
    items = {o["id"]: o for o in json.loads(listed.stdout)["items"]}
    assert set(items) == {existing.id, fresh["organizationId"]}
    assert items[fresh["organizationId"]]["name"] == "Fresh"
    assert items[existing.id]["users"] == 1
    assert items[existing.id]["initialization"] in ("pending", "initialized")
    table = invoke("org", "list")
    assert existing.id in table.stdout and "Existing" in table.stdout


def test_key_create_for_an_org_root_authenticates(client, org):
    result = invoke("key", "create", "--org", org.id, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["userId"] == org.user_id and body["role"] == "root"
    resp = client.get("/v1/webhooks", headers={"X-API-Key": body["apiKey"]})
    assert resp.status_code == 200
    # The old key keeps working: a new key is an addition, not a rotation.
    assert client.get("/v1/webhooks", headers=org.headers).status_code == 200


def test_key_create_for_a_user(client, org, add_user):
    member = add_user(org, "member")
    result = invoke("key", "create", "--user", member.user_id, "--json")
    body = json.loads(result.stdout)
    assert body["role"] == "member"
    resp = client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/h", "event_types": ["sandbox.created"],
              "scope": "account"},
        headers={"X-API-Key": body["apiKey"]},
    )  # fmt: skip
    assert resp.status_code == 403  # authenticated as the member, who may not do this


def test_key_create_errors_are_one_line_messages(org):
    unknown = invoke("key", "create", "--org", "org-000000000000000")
    assert unknown.exit_code == 1
    assert "Organization org-000000000000000 not found" in unknown.output
    both = invoke("key", "create", "--org", org.id, "--user", org.user_id)
    assert both.exit_code == 2
    assert "exactly one of --org or --user" in both.output


# ---- endpoints -----------------------------------------------------------------------------


def test_endpoint_list_filters_and_json(client, make_org):
    acme, other = make_org("Acme"), make_org("Other")
    a = _create_v1(client, acme, "https://hooks.acme.test/a")
    _create_v1(client, other, "https://hooks.other.test/b")
    everything = json.loads(invoke("endpoint", "list", "--json").stdout)
    assert everything["total"] == 2
    only_acme = json.loads(invoke("endpoint", "list", "--org", acme.id, "--json").stdout)
    assert [e["id"] for e in only_acme["items"]] == [a["endpoint_id"]]
    assert only_acme["items"][0]["stats"] == {
        "total": 0, "successful": 0, "failed": 0, "pending": 0, "lastDeliveryAt": None,
    }  # fmt: skip
    by_url = json.loads(invoke("endpoint", "list", "--url-contains", "other.test", "--json").stdout)
    assert [e["organizationId"] for e in by_url["items"]] == [other.id]
    assert json.loads(invoke("endpoint", "list", "--status", "disabled", "--json").stdout) == {
        "items": [],
        "total": 0,
    }


def test_endpoint_disable_and_enable(client, org):
    endpoint = _create_v1(client, org, "https://hooks.acme.test/a")
    eid = endpoint["endpoint_id"]
    disabled = invoke("endpoint", "disable", eid, "--reason", "receiver moved", "--json")
    assert disabled.exit_code == 0, disabled.output
    assert json.loads(disabled.stdout)["changed"] is True
    view = client.get(f"/v1/webhooks/{eid}", headers=org.headers).json["data"]
    assert view["is_active"] is False
    listed = json.loads(invoke("endpoint", "list", "--status", "disabled", "--json").stdout)
    assert listed["items"][0]["disabledReason"] == "receiver moved"

    again = invoke("endpoint", "disable", eid)
    assert "was already disabled" in again.stdout
    enabled = invoke("endpoint", "enable", eid)
    assert enabled.exit_code == 0
    assert f"{eid} is now active" in enabled.stdout
    assert client.get(f"/v1/webhooks/{eid}", headers=org.headers).json["data"]["is_active"]

    missing = invoke("endpoint", "disable", "whk-000000000000000")
    assert missing.exit_code == 1
    assert "Webhook endpoint whk-000000000000000 not found" in missing.output


# ---- recover and purge ---------------------------------------------------------------------


def test_recover_attempts_failed_deliveries_again(client, org, receiver, worker):
    receiver.reply(500, b"down")
    endpoint = _create_v1(client, org, receiver.url, max_retries=0)
    eid = endpoint["endpoint_id"]
    _ingest(client, org)
    receiver.wait_for(1)

    def failed():
        with session_scope() as session:
            return session.scalars(
                select(Delivery).where(Delivery.endpoint_id == eid, Delivery.status == "failed")
            ).first()

    delivery = wait_until(failed)
    receiver.reply(200)
    result = invoke("recover", eid, "--since", "10m", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"endpointId": eid, "recovered": 1}
    receiver.wait_for(2)

    def delivered():
        with session_scope() as session:
            row = session.get(Delivery, delivery.id)
            return row if row.status == "delivered" else None

    wait_until(delivered)
    with session_scope() as session:
        triggers = sorted(
            session.scalars(select(Attempt.trigger).where(Attempt.delivery_id == delivery.id))
        )
    assert triggers == ["manual", "scheduled"]

    outside = invoke("recover", eid, "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02")
    assert outside.exit_code == 0
    assert outside.stdout.startswith("0 failed deliveries")


def _old_message(org_id: str, days: int) -> str:
    with session_scope() as session:
        message = Message(
            id=new_id("evt"),
            organization_id=org_id,
            event_type="sandbox.created",
            payload={"id": "sbx-old", "organizationId": org_id},
            timestamp="2020-01-01T00:00:00.000Z",
            fanned_out_at=utcnow() - timedelta(days=days),
            created_at=utcnow() - timedelta(days=days),
        )
        session.add(message)
        return message.id


def test_purge_deletes_only_what_retention_expired(client, org):
    old = [_old_message(org.id, 40), _old_message(org.id, 31)]
    recent = _old_message(org.id, 29)
    dry = invoke("purge", "--dry-run", "--json")
    assert json.loads(dry.stdout) == {
        "dryRun": True, "retentionDays": 30, "messages": 2, "attempts": 0,
    }  # fmt: skip
    result = invoke("purge")
    assert result.exit_code == 0, result.output
    assert "deleted 2 messages and 0 attempts older than 30 days" in result.stdout
    with session_scope() as session:
        left = set(session.scalars(select(Message.id)))
    assert recent in left and not set(old) & left
    assert json.loads(invoke("purge", "--json").stdout)["messages"] == 0


def test_migrate_is_idempotent():
    result = run_cli("migrate")
    assert result.returncode == 0, result.stderr
    assert "database schema is up to date" in result.stdout


def test_messages_tail_works_through_a_large_batch_sharing_one_timestamp(client, org):
    # One array of events is stored with one created_at: the tail pages by (time, id).
    sizes = (1000, 300)
    for start, size in zip((0, sizes[0]), sizes, strict=True):
        events = [
            {"event": "sandbox.created", "organizationId": org.id, "id": f"sbx-{start + i}"}
            for i in range(size)
        ]
        resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
        assert resp.status_code == 202
    result = invoke(
        "messages", "tail", "--since", "5m", "--org", org.id, "--limit", "1300", "--json",
        "--interval", "0.05",
    )  # fmt: skip
    ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
    assert len(ids) == 1300
    with session_scope() as session:
        assert set(ids) == set(session.scalars(select(Message.id)))


def test_version_is_the_installed_package_version():
    from importlib.metadata import version

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"webhooks, version {version('sandbox-webhooks')}"
