"""Re-encrypting every stored secret with a new key, resumably, and dropping the old key.

The service runs against the test database; the end-to-end test starts real api and worker
processes with the old key, with both keys, and with the new key alone, and runs the real
``webhooks rotate-encryption-key`` in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from shared.config import get_settings
from shared.crypto import reencrypt
from shared.db import get_sessionmaker, session_scope
from shared.errors import Invalid
from shared.models import Endpoint
from shared.services import encryption
from shared.services.endpoint_headers import stored_headers
from shared.signing import verify
from tests.conftest import ENCRYPTION_KEY, PLATFORM, TEST_ENV
from tests.support.scenario import create_endpoint, create_org, stopped_event
from tests.support.stack import running_stack

ROOT = Path(__file__).resolve().parents[3]
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def keys(monkeypatch):
    """Set WEBHOOKS_ENCRYPTION_KEY for the rest of a test (the settings are read again)."""

    def _use(*values: str) -> None:
        monkeypatch.setenv("WEBHOOKS_ENCRYPTION_KEY", ",".join(values))
        get_settings.cache_clear()

    yield _use
    monkeypatch.undo()
    get_settings.cache_clear()


def _make_endpoints(client, org, count: int) -> dict[str, list[str]]:
    """Endpoints under the test key, every other one rotated once; their signing secrets."""
    made = {}
    for n in range(count):
        resp = client.post(
            "/v1/webhooks",
            json={"url": f"https://example.com/{n}", "event_types": ["sandbox.stopped"]},
            headers=org.headers,
        )
        assert resp.status_code == 201, resp.json
        endpoint_id, secret = resp.json["data"]["endpoint_id"], resp.json["data"]["secret"]
        secrets = [secret]
        if n % 2:
            resp = client.post(f"/v1/webhooks/{endpoint_id}/rotate-secret", headers=org.headers)
            assert resp.status_code == 200, resp.json
            secrets.insert(0, resp.json["data"]["secret"])
        made[endpoint_id] = secrets
    return made


def _stored_tokens() -> dict[str, list[str]]:
    """Every stored Fernet token by endpoint: the current secret, then the previous ones."""
    with session_scope() as session:
        found = {}
        for endpoint in session.scalars(select(Endpoint)):
            previous = json.loads(endpoint.previous_secret_encrypted or "[]")
            found[endpoint.id] = [endpoint.secret_encrypted, *(p["secret"] for p in previous)]
        return found


def _readable_with(key: str, tokens: list[str]) -> bool:
    fernet = Fernet(key.encode())
    try:
        for token in tokens:
            fernet.decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def _signing_secrets() -> dict[str, list[str]]:
    from shared.services.endpoint_secrets import signing_secrets

    with session_scope() as session:
        return {e.id: signing_secrets(e) for e in session.scalars(select(Endpoint))}


def test_rotation_moves_current_and_previous_secrets_to_the_new_key(client, org, keys):
    made = _make_endpoints(client, org, 3)
    keys(NEW_KEY, ENCRYPTION_KEY)
    batches = list(encryption.reencrypt_in_batches(get_sessionmaker()))
    assert sum(b.endpoints for b in batches) == 3
    assert sum(b.reencrypted for b in batches) == 3
    for tokens in _stored_tokens().values():
        assert _readable_with(NEW_KEY, tokens)
    # The old key dropped: every secret still signs, the current and the rotated-out one.
    keys(NEW_KEY)
    assert {k: sorted(v) for k, v in _signing_secrets().items()} == {
        k: sorted(v) for k, v in made.items()
    }


def test_rotation_moves_custom_headers_to_the_new_key(client, org, keys):
    headers = {"Authorization": "Bearer rotate-me", "X-Tenant": "acme"}
    resp = client.post(
        "/v1/webhooks",
        json={
            "url": "https://example.com/h",
            "event_types": ["sandbox.stopped"],
            "headers": headers,
        },
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    endpoint_id = resp.json["data"]["endpoint_id"]
    keys(NEW_KEY, ENCRYPTION_KEY)
    # Only the headers left under the old key: the run still finds them.
    with session_scope() as session:
        endpoint = session.get(Endpoint, endpoint_id)
        endpoint.secret_encrypted = reencrypt(endpoint.secret_encrypted)
    batches = list(encryption.reencrypt_in_batches(get_sessionmaker()))
    assert sum(b.reencrypted for b in batches) == 1
    with session_scope() as session:
        token = session.get(Endpoint, endpoint_id).headers_encrypted
    assert _readable_with(NEW_KEY, [token])
    keys(NEW_KEY)
    assert stored_headers(token) == headers


def test_an_interrupted_rotation_run_again_finishes_only_what_is_left(client, org, keys):
    made = _make_endpoints(client, org, 5)
    keys(NEW_KEY, ENCRYPTION_KEY)
    run = encryption.reencrypt_in_batches(get_sessionmaker(), batch_size=2)
    first = next(run)
    run.close()  # stopped between batches, as Ctrl-C would
    assert (first.endpoints, first.reencrypted) == (2, 2)
    under_new = {i for i, t in _stored_tokens().items() if _readable_with(NEW_KEY, t)}
    assert under_new == set(sorted(made)[:2])  # the first batch was committed

    again = list(encryption.reencrypt_in_batches(get_sessionmaker(), batch_size=2))
    assert sum(b.endpoints for b in again) == 5
    assert sum(b.reencrypted for b in again) == 3  # the first two were left as they were
    # A third run finds nothing to do.
    assert sum(b.reencrypted for b in encryption.reencrypt_in_batches(get_sessionmaker())) == 0
    keys(NEW_KEY)
    assert {k: sorted(v) for k, v in _signing_secrets().items()} == {
        k: sorted(v) for k, v in made.items()
    }


def test_a_secret_no_key_reads_stops_the_run_naming_the_endpoint_and_keeps_earlier_batches(
    client, org, keys
):
    lost_key = Fernet.generate_key().decode()
    made = _make_endpoints(client, org, 4)
    last = sorted(made)[-1]
    keys(lost_key)
    with session_scope() as session:
        session.get(Endpoint, last).secret_encrypted = (
            Fernet(lost_key.encode()).encrypt(b"whsec_lost").decode()
        )
    keys(NEW_KEY, ENCRYPTION_KEY)
    run = encryption.reencrypt_in_batches(get_sessionmaker(), batch_size=2)
    assert next(run).reencrypted == 2
    with pytest.raises(Invalid) as info:
        next(run)
    assert last in info.value.message and "WEBHOOKS_ENCRYPTION_KEY" in info.value.message
    stored = _stored_tokens()
    third = sorted(made)[2]
    assert _readable_with(ENCRYPTION_KEY, stored[third])  # its batch was rolled back
    # With the missing key added after the new one, the run finishes.
    keys(NEW_KEY, ENCRYPTION_KEY, lost_key)
    again = list(encryption.reencrypt_in_batches(get_sessionmaker(), batch_size=2))
    assert sum(b.reencrypted for b in again) == 2
    assert all(_readable_with(NEW_KEY, t) for t in _stored_tokens().values())


# ---- end to end, with real processes ---------------------------------------------------------


def _deliver_and_verify(api, org, receiver, secrets: list[str], n: int) -> None:
    """Ingest one event; the receiver gets it signed by every secret still signing."""
    before = len(receiver.requests)
    resp = api.post("/api/internal/events", json=stopped_event(org, n), headers=PLATFORM)
    assert resp.status_code == 202, resp.text
    got = receiver.wait_for(before + 1)[-1]
    for secret in secrets:
        assert verify(secret, got.headers, got.body), secret


def test_rotate_then_drop_the_old_key_and_every_process_still_reads_and_signs(tmp_path, receiver):
    with running_stack(tmp_path, TEST_ENV) as stack:
        both = {"WEBHOOKS_ENCRYPTION_KEY": f"{NEW_KEY},{ENCRYPTION_KEY}"}
        api = stack.start_api()
        org = create_org(api)
        endpoint = create_endpoint(api, org, receiver.url + "/hook")
        resp = api.post(
            f"/v1/webhooks/{endpoint['endpoint_id']}/rotate-secret", headers=org.headers
        )
        assert resp.status_code == 200, resp.text
        secrets = [endpoint["secret"], resp.json()["data"]["secret"]]
        reveal = f"/api/webhooks/organizations/{org.id}/endpoints/{endpoint['endpoint_id']}/secret"
        api.service.stop()

        # Every process on both keys: what the old key wrote still reads and signs.
        api = stack.start_api(env=both)
        worker = stack.start_worker(env=both)
        _deliver_and_verify(api, org, receiver, secrets, 1)
        assert api.get(reveal, headers=org.headers).json()["secret"] == secrets[1]

        rotation = subprocess.run(
            [sys.executable, "-m", "webhooks_api.cli", "rotate-encryption-key"],
            cwd=ROOT,
            env={**os.environ, **stack.env, **both},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rotation.returncode == 0, rotation.stderr
        assert "re-encrypted" in rotation.stdout and "can now be removed" in rotation.stdout
        with stack.engine.connect() as conn:
            for current, previous in conn.execute(
                select(Endpoint.secret_encrypted, Endpoint.previous_secret_encrypted)
            ):
                tokens = [current, *(p["secret"] for p in json.loads(previous or "[]"))]
                assert _readable_with(NEW_KEY, tokens)
        api.service.stop()
        worker.stop()

        # The old key dropped everywhere.
        alone = {"WEBHOOKS_ENCRYPTION_KEY": NEW_KEY}
        api = stack.start_api(env=alone)
        stack.start_worker(env=alone)
        _deliver_and_verify(api, org, receiver, secrets, 2)
        assert api.get(reveal, headers=org.headers).json()["secret"] == secrets[1]
        assert "InvalidToken" not in stack.logs()


def test_the_command_prints_json_for_scripts(client, org):
    _make_endpoints(client, org, 2)
    env = {**os.environ, "WEBHOOKS_ENCRYPTION_KEY": f"{NEW_KEY},{ENCRYPTION_KEY}"}
    result = subprocess.run(
        [sys.executable, "-m", "webhooks_api.cli", "rotate-encryption-key", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"endpoints": 2, "reencrypted": 2, "olderKeys": 1}
