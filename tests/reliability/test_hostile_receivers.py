"""Hostile receivers end to end, through the real worker process (docs/api.md §5 and 10).

Every kind of hostile receiver gets the same message at once; each attempt must end
within its endpoint's deadline with the right outcome recorded, the redirect targets
must receive nothing, and a healthy receiver must not wait behind the hostile ones.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Attempt, Delivery
from tests.conftest import PLATFORM
from tests.support import hostile
from tests.support.stack import free_port
from tests.support.waiting import wait_until

TIMEOUT = 5


@pytest.fixture
def hostiles():
    started: list[hostile.HostileReceiver] = []

    def start(script) -> hostile.HostileReceiver:
        server = hostile.HostileReceiver(script)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_each_hostile_receiver_ends_within_its_deadline_with_its_outcome(
    client, org, make_receiver, hostiles, worker
):
    healthy, target_301, target_307 = make_receiver(), make_receiver(), make_receiver()
    hostile.gzip_bomb_body()  # built before the clock starts
    servers = {
        "trickle-body": hostiles(hostile.trickle_body),
        "trickle-headers": hostiles(hostile.trickle_headers),
        "hang": hostiles(hostile.hang),
        "10MB": hostiles(hostile.huge_body),
        "gzip-bomb": hostiles(hostile.gzip_bomb),
        "301": hostiles(hostile.redirect("301 Moved Permanently", target_301.url + "/x")),
        "307": hostiles(hostile.redirect("307 Temporary Redirect", target_307.url + "/x")),
    }
    urls = {name: server.url for name, server in {**servers, "healthy": healthy}.items()}
    # Nothing listens on a closed port; a plain HTTP server cannot complete TLS.
    urls["refused"] = f"http://127.0.0.1:{free_port()}/hook"
    urls["tls"] = healthy.url.replace("http://", "https://") + "/tls"
    endpoint_ids = {}
    for name, url in urls.items():
        resp = client.post(
            "/v1/webhooks",
            json={
                "url": url,
                "event_types": ["sandbox.stopped"],
                "timeout_seconds": TIMEOUT,
                "max_retries": 0,
            },
            headers=org.headers,
        )
        assert resp.status_code == 201, resp.json
        endpoint_ids[resp.json["data"]["endpoint_id"]] = name

    sent = time.time()
    resp = client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": "sbx-1",
            "oldState": "started",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    assert resp.status_code == 202
    message_id = resp.json["messages"][0]["id"]
    # The healthy receiver is served at once, whatever the hostile ones do.
    assert healthy.wait_for(1, timeout=10)[0].at - sent < 3

    def settled():
        with session_scope() as session:
            rows = session.scalars(select(Delivery).where(Delivery.message_id == message_id)).all()
            return len(rows) == len(endpoint_ids) and all(r.status != "pending" for r in rows)

    wait_until(settled, timeout=TIMEOUT * 4)
    with session_scope() as session:
        attempts = {
            endpoint_ids[a.endpoint_id]: a
            for a in session.scalars(select(Attempt).where(Attempt.message_id == message_id))
        }
        deliveries = {
            endpoint_ids[d.endpoint_id]: d
            for d in session.scalars(select(Delivery).where(Delivery.message_id == message_id))
        }

    assert sorted(attempts) == sorted(endpoint_ids.values())
    for name, attempt in attempts.items():
        assert attempt.duration_ms <= TIMEOUT * 1000 + 1500, (name, attempt.duration_ms)
        assert attempt.response_body is None or len(attempt.response_body) <= 4096
        assert attempt.trigger == "scheduled" and attempt.try_number == 1

    def outcome(name: str) -> tuple:
        a = attempts[name]
        return a.status, a.status_code, a.error

    deadline = f"timeout after {float(TIMEOUT)}s"
    assert outcome("trickle-body") == ("failed", 200, f"{deadline} (reading the response body)")
    assert outcome("trickle-headers") == ("failed", None, f"{deadline} (waiting for the response)")
    assert outcome("hang") == ("failed", None, f"{deadline} (waiting for the response)")
    for name in ("trickle-body", "trickle-headers", "hang"):
        assert attempts[name].duration_ms >= TIMEOUT * 1000 - 100, name
        assert deliveries[name].status == "failed"
        assert deliveries[name].error_message.startswith(deadline)
    # 4 KiB kept, counted after decompression; neither body costs a deadline's worth.
    assert outcome("10MB") == ("success", 200, None)
    assert attempts["10MB"].response_body == "A" * 4096
    assert outcome("gzip-bomb") == ("success", 200, None)
    assert attempts["gzip-bomb"].response_body == "a" * 4096
    for name in ("10MB", "gzip-bomb"):
        assert attempts[name].duration_ms < TIMEOUT * 1000, (name, attempts[name].duration_ms)
        assert deliveries[name].status == "delivered"
    # Redirects are failures, recorded with their status, and never followed.
    for name in ("301", "307"):
        assert outcome(name) == ("failed", int(name), f"HTTP {name}")
        assert deliveries[name].status == "failed"
        assert deliveries[name].error_message == f"HTTP {name}"
        assert len(servers[name].requests) == 1
    assert target_301.requests == [] and target_307.requests == []
    assert outcome("healthy") == ("success", 200, None)
    assert outcome("refused") == ("failed", None, "connection refused")
    status, code, error = outcome("tls")
    assert (status, code) == ("failed", None) and error.startswith("TLS error: "), error
    assert [r.path for r in healthy.requests] == ["/"]  # the TLS attempt never made a request
