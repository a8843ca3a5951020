"""The SSRF guard through the real processes (docs/api.md §5 and 10), with the allow list off.

Refused on save: every blocked address form is a 400 on each face of an api started with
``WEBHOOKS_ALLOW_PRIVATE_TARGETS`` empty. Refused at connect time: endpoints saved while
loopback was open (as a DNS name that later resolves privately would be) are delivered
by a worker started with the allow list off; each attempt is recorded as a blocked
target and the loopback receiver behind every spelling gets nothing.

Only spellings that reach this machine are used for connect-time checks, so that a
broken guard could not send traffic beyond loopback.
"""

from __future__ import annotations

import pytest

from tests.conftest import PLATFORM
from tests.shared.test_targets import loopback_hostname
from tests.support.scenario import create_org, rows, stopped_event
from tests.support.waiting import wait_until

# Every spelling of an address in a blocked range (docs/api.md §5, issue 5).
BLOCKED_ON_SAVE = [
    # loopback, and its decimal, hex, octal and short spellings
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.0.0.1",
    "127.0.0.1.", "[::1]", "localhost", "LOCALHOST.", "api.localhost",
    # unspecified
    "0.0.0.0", "0", "[::]",
    # private, CGNAT, link-local and metadata
    "10.0.0.1", "10.1", "012.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "100.100.100.200", "169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
    "[fd00:ec2::254]", "[fc00::1]", "[fe80::1]",
    # multicast and broadcast
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "[ff02::1]",
    # IPv4-mapped, NAT64 and 6to4 forms of blocked IPv4
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:169.254.169.254]",
    "[64:ff9b::7f00:1]", "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::a00:1]", "[2002:a9fe:a9fe::]",
]  # fmt: skip

# Spellings that land on this machine, for the connect-time check.
LOOPBACK_FORMS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1",
    "[::ffff:127.0.0.1]", "[::1]", "0.0.0.0", "localhost",
]  # fmt: skip


@pytest.fixture
def hosts_name() -> str:
    name = loopback_hostname()
    if name is None:
        pytest.skip("no host name resolving to 127.0.0.1 on this machine")
    return name


def test_every_blocked_form_is_refused_on_save_on_every_face(stack, hosts_name):
    closed = stack.start_api(env={"WEBHOOKS_ALLOW_PRIVATE_TARGETS": ""})
    org = create_org(closed)
    refused = []
    for host in [*BLOCKED_ON_SAVE, hosts_name]:
        url = f"http://{host}:8080/hook"
        resp = closed.post(
            "/v1/webhooks",
            json={"url": url, "event_types": ["sandbox.started"]},
            headers=org.headers,
        )
        body = resp.json()
        if not (
            resp.status_code == 400
            and body["success"] is False
            and "private or reserved address" in body["error"]
            and body["timestamp"].endswith("Z")
        ):
            refused.append((host, resp.status_code, body))
    assert refused == []
    # The other faces share the guard.
    for host in ("169.254.169.254", "[::ffff:127.0.0.1]", hosts_name):
        url = f"http://{host}/hook"
        resp = closed.post(
            f"/api/webhooks/organizations/{org.id}/endpoints",
            json={"url": url, "eventTypes": ["sandbox.created"]},
            headers=org.headers,
        )
        assert resp.status_code == 400, resp.text
        assert "private or reserved address" in resp.json()["message"]
        resp = closed.post(
            "/events/webhooks/sandboxes",
            json={"url": url, "events": ["create"]},
            headers=org.headers,
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == 400
        assert "private or reserved address" in resp.json()["message"]
    assert rows(stack.engine, "SELECT id FROM endpoints") == []


def test_every_loopback_form_is_refused_at_connect_time(stack, make_receiver, hosts_name):
    # Saved while loopback (and 0.0.0.0) was allowed: as a public name might have resolved.
    opened = stack.start_api(
        env={"WEBHOOKS_ALLOW_PRIVATE_TARGETS": "127.0.0.0/8,::1/128,0.0.0.0/8"}
    )
    stack.start_worker(env={"WEBHOOKS_ALLOW_PRIVATE_TARGETS": ""})
    org = create_org(opened)
    receiver = make_receiver()
    hosts = {}
    for host in [*LOOPBACK_FORMS, hosts_name]:
        resp = opened.post(
            "/v1/webhooks",
            json={
                "url": f"http://{host}:{receiver.port}/hook",
                "event_types": ["sandbox.stopped"],
                "max_retries": 0,
                "timeout_seconds": 5,
            },
            headers=org.headers,
        )
        assert resp.status_code == 201, (host, resp.text)
        hosts[resp.json()["data"]["endpoint_id"]] = host
    resp = opened.post("/api/internal/events", json=stopped_event(org, 1), headers=PLATFORM)
    assert resp.status_code == 202

    engine = stack.engine
    wait_until(
        lambda: (
            len(rows(engine, "SELECT id FROM deliveries WHERE status = 'failed'")) == len(hosts)
        ),
        timeout=30,
    )
    attempts = {
        hosts[a.endpoint_id]: a
        for a in rows(engine, "SELECT endpoint_id, status, status_code, error FROM attempts")
    }
    assert sorted(attempts) == sorted(hosts.values())
    wrong = {
        host: a.error
        for host, a in attempts.items()
        if not (
            a.status == "failed"
            and a.status_code is None
            and a.error.startswith("blocked target: ")
            and "is a private or reserved address" in a.error
        )
    }
    assert wrong == {}
    assert attempts[hosts_name].error == (
        f"blocked target: 127.0.0.1 is a private or reserved address (host {hosts_name})"
    )
    assert receiver.requests == []
    errors = {r.error_message for r in rows(engine, "SELECT error_message FROM deliveries")}
    assert all(e.startswith("blocked target: ") for e in errors)
