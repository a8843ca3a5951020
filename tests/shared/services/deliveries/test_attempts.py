"""One table of attempt scenarios, run through both storage backends with the same rows.

Each scenario makes one real attempt (a loopback receiver, the real HTTP client) through
``run_scheduled_try`` or ``run_manual_attempt`` on PostgreSQL (the one-statement path) and
on SQLite (the embedded default's ORM path), then reads back the delivery, its attempts,
the endpoint and a sibling delivery of the same endpoint. Both backends must leave the
rows the table says.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from shared.config import get_settings
from shared.crypto import encrypt, new_signing_secret
from shared.http import DeliveryClient
from shared.models import Attempt, Delivery, Endpoint, Message, Organization, new_id, utcnow
from shared.payloads import format_timestamp
from shared.retry_policy import MAX_RETRY_AFTER_SECONDS
from shared.services import deliveries
from shared.targets import AllowList
from tests.support.receiver import Received, Reply

# The test schedule (tests/conftest.py) waits 1 s after a first failed try, plus jitter.
FIRST_WAIT = (1.0, 1.2 + 0.05)


@dataclass(frozen=True)
class Scenario:
    """An attempt and the rows it must leave."""

    name: str
    reply: Reply | None = None
    # Where the endpoint points: the receiver, a closed port, or the receiver with no
    # private targets allowed (the SSRF guard refuses loopback).
    target: str = "receiver"
    # Columns of the delivery before the attempt, and of its message.
    before: dict[str, Any] = field(default_factory=dict)
    test_message: bool = False
    timeout_seconds: int = 30
    # A scheduled try (its number), or None for a manual attempt.
    try_number: int | None = 1
    # Run by the receiver while the post is in flight.
    meanwhile: str | None = None
    # What it leaves.
    skipped: str | None = None
    delivery: dict[str, Any] = field(default_factory=dict)
    attempts: list[tuple] = field(default_factory=list)  # (status, code, trigger, try, error)
    wait: tuple[float, float] | None = None
    handed_to_broker: bool | None = None
    endpoint_active: bool = True
    failing: bool = False
    sibling: str = "pending"


SCENARIOS = [
    Scenario(
        "2xx delivers",
        Reply(204, b""),
        delivery={"status": "delivered", "attempt_count": 1, "http_status_code": 204,
                  "error_message": None},
        attempts=[("success", 204, "scheduled", 1, None)],
    ),
    Scenario(
        "3xx is a failure, not followed",
        Reply(302, b"", headers={"Location": "https://example.com/"}),
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": 302,
                  "error_message": "HTTP 302"},
        attempts=[("failed", 302, "scheduled", 1, "HTTP 302")],
        wait=FIRST_WAIT, handed_to_broker=True, failing=True,
    ),
    Scenario(
        "410 fails, disables the endpoint and cancels the rest",
        Reply(410, b"gone"),
        delivery={"status": "failed", "attempt_count": 1, "http_status_code": 410,
                  "error_message": "HTTP 410"},
        attempts=[("failed", 410, "scheduled", 1, "HTTP 410")],
        endpoint_active=False, failing=True, sibling="cancelled",
    ),
    Scenario(
        "429 with Retry-After waits as asked, in the database past a minute",
        Reply(429, b"slow down", headers={"Retry-After": "120"}),
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": 429,
                  "error_message": "HTTP 429"},
        attempts=[("failed", 429, "scheduled", 1, "HTTP 429")],
        wait=(120.0, 120.5), handed_to_broker=False, failing=True,
    ),
    Scenario(
        "503 with Retry-After waits as asked, in the broker within a minute",
        Reply(503, b"busy", headers={"Retry-After": "30"}),
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": 503,
                  "error_message": "HTTP 503"},
        attempts=[("failed", 503, "scheduled", 1, "HTTP 503")],
        wait=(30.0, 30.5), handed_to_broker=True, failing=True,
    ),
    Scenario(
        "500 with Retry-After follows the schedule, not the header",
        Reply(500, b"oops", headers={"Retry-After": "120"}),
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": 500,
                  "error_message": "HTTP 500"},
        attempts=[("failed", 500, "scheduled", 1, "HTTP 500")],
        wait=FIRST_WAIT, handed_to_broker=True, failing=True,
    ),
    Scenario(
        "a Retry-After of years is capped at a day",
        Reply(503, b"maintenance", headers={"Retry-After": str(40 * 365 * 86400)}),
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": 503,
                  "error_message": "HTTP 503"},
        attempts=[("failed", 503, "scheduled", 1, "HTTP 503")],
        wait=(MAX_RETRY_AFTER_SECONDS, MAX_RETRY_AFTER_SECONDS + 0.5), handed_to_broker=False,
        failing=True,
    ),
    Scenario(
        "a timeout is a failed attempt with its error",
        Reply(200, b"late", delay=3.0),
        timeout_seconds=1,
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": None,
                  "error_message": "timeout after 1.0s (waiting for the response)"},
        attempts=[
            ("failed", None, "scheduled", 1, "timeout after 1.0s (waiting for the response)")
        ],
        wait=FIRST_WAIT, handed_to_broker=True, failing=True,
    ),
    Scenario(
        "a refused connection is a failed attempt with its error",
        target="refused",
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": None,
                  "error_message": "connection refused"},
        attempts=[("failed", None, "scheduled", 1, "connection refused")],
        wait=FIRST_WAIT, handed_to_broker=True, failing=True,
    ),
    Scenario(
        "a blocked target is refused before connecting, and says why",
        Reply(200),
        target="blocked",
        delivery={"status": "pending", "attempt_count": 1, "http_status_code": None,
                  "error_message": "blocked target: 127.0.0.1 is a private or reserved address"},
        attempts=[("failed", None, "scheduled", 1,
                   "blocked target: 127.0.0.1 is a private or reserved address")],
        wait=FIRST_WAIT, handed_to_broker=True, failing=True,
    ),
    Scenario(
        "the last try failing fails the delivery",
        Reply(500, b"oops"),
        before={"attempt_count": 3},
        try_number=4,
        delivery={"status": "failed", "attempt_count": 4, "http_status_code": 500,
                  "error_message": "HTTP 500"},
        attempts=[("failed", 500, "scheduled", 4, "HTTP 500")],
        failing=True,
    ),
    Scenario(
        "a manual attempt after the delivery failed delivers it, outside max_attempts",
        Reply(200, b"ok"),
        before={"attempt_count": 4, "status": "failed", "next_attempt_at": None,
                "http_status_code": 500, "error_message": "HTTP 500"},
        try_number=None,
        delivery={"status": "delivered", "attempt_count": 4, "extra_attempt_count": 1,
                  "http_status_code": 200, "error_message": None},
        attempts=[("success", 200, "manual", None, None)],
    ),
    Scenario(
        "a test message gets one attempt",
        Reply(500, b"oops"),
        test_message=True,
        delivery={"status": "failed", "attempt_count": 1, "http_status_code": 500,
                  "error_message": "HTTP 500"},
        attempts=[("failed", 500, "test", 1, "HTTP 500")],
        failing=True,
    ),
    Scenario(
        "a post that outlived its lease records nothing over the run that took the try",
        Reply(500, b"oops"),
        meanwhile="recorded elsewhere",
        skipped="recorded",
        delivery={"status": "delivered", "attempt_count": 1, "http_status_code": None,
                  "error_message": None},
        attempts=[("success", 200, "scheduled", 1, None)],
    ),
]  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_rows(factory, scenario: Scenario, url: str) -> tuple[str, str, str]:
    """An organization, its endpoint and two pending deliveries: (delivery, sibling, endpoint)."""
    now = utcnow()
    org_id = new_id("org")
    endpoint_id = new_id("whk")
    made = []
    with factory() as session:
        session.add(Organization(id=org_id, name="Acme", created_at=now))
        session.flush()
        session.add(
            Endpoint(
                id=endpoint_id, organization_id=org_id, scope="account", url=url,
                event_types=["sandbox.created"], payload_format="envelope",
                timeout_seconds=scenario.timeout_seconds, max_retries=3,
                secret_encrypted=encrypt(new_signing_secret()), created_at=now, updated_at=now,
            )
        )  # fmt: skip
        session.flush()
        for n, test in ((1, scenario.test_message), (2, False)):
            message = Message(
                id=new_id("evt"), organization_id=org_id, event_type="sandbox.created",
                payload={"id": f"sbx-{n}", "organizationId": org_id, "state": "started"},
                timestamp=format_timestamp(now), custom=False, test=test, fanned_out_at=now,
                created_at=now,
            )  # fmt: skip
            session.add(message)
            session.flush()
            delivery = Delivery(
                id=new_id("whd"), message_id=message.id, endpoint_id=endpoint_id,
                organization_id=org_id, event_type="sandbox.created", status="pending",
                attempt_count=0, extra_attempt_count=0, max_attempts=4, next_attempt_at=now,
                enqueued_at=now, created_at=now, updated_at=now,
            )  # fmt: skip
            if n == 1:
                for column, value in scenario.before.items():
                    setattr(delivery, column, value)
            session.add(delivery)
            made.append(delivery.id)
        session.commit()
    return made[0], made[1], endpoint_id


def _record_elsewhere(factory, delivery_id: str) -> None:
    """Another worker claimed try 1 after this post's lease lapsed, made it and recorded it."""
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        session.add(
            Attempt(
                id=new_id("atm"), delivery_id=delivery_id, endpoint_id=delivery.endpoint_id,
                message_id=delivery.message_id, organization_id=delivery.organization_id,
                url="http://elsewhere/", status="success", status_code=200, duration_ms=1,
                trigger="scheduled", try_number=1, created_at=utcnow(),
            )
        )  # fmt: skip
        delivery.attempt_count = 1
        delivery.status = "delivered"
        delivery.delivered_at = utcnow()
        delivery.next_attempt_at = None
        delivery.lease_until = None
        session.commit()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_an_attempt_leaves_the_same_rows_on_every_backend(
    factory, scenario: Scenario, receiver, no_broker
):
    settings = get_settings()
    allow = settings.allow_private_targets
    url = receiver.url
    if scenario.target == "refused":
        url = f"http://127.0.0.1:{_closed_port()}/hook"
    elif scenario.target == "blocked":
        allow = AllowList()  # nothing private opened: loopback is refused
    client = DeliveryClient(allow=allow, user_agent=deliveries.user_agent())
    delivery_id, sibling_id, endpoint_id = _make_rows(factory, scenario, url)
    if scenario.reply is not None:
        reply = scenario.reply

        def respond(_request: Received) -> Reply:
            if scenario.meanwhile == "recorded elsewhere":
                _record_elsewhere(factory, delivery_id)
            return reply

        receiver.responder = respond

    started = utcnow()
    if scenario.try_number is None:
        outcome = deliveries.run_manual_attempt(
            factory, client, delivery_id=delivery_id, attempt_id=new_id("atm")
        )
    else:
        outcome = deliveries.run_scheduled_try(
            factory, client, delivery_id=delivery_id, try_number=scenario.try_number
        )

    assert outcome.skipped == scenario.skipped
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        attempts = list(
            session.scalars(
                select(Attempt)
                .where(Attempt.delivery_id == delivery_id)
                .order_by(Attempt.created_at)
            )
        )
        endpoint = session.get(Endpoint, endpoint_id)
        sibling = session.get(Delivery, sibling_id)
        seen = {column: getattr(delivery, column) for column in scenario.delivery}
        expected = {"extra_attempt_count": 0, **scenario.delivery}
        seen["extra_attempt_count"] = delivery.extra_attempt_count
        assert seen == expected
        assert [
            (a.status, a.status_code, a.trigger, a.try_number, a.error) for a in attempts
        ] == scenario.attempts
        assert delivery.lease_until is None
        assert (delivery.delivered_at is not None) == (delivery.status == "delivered")
        assert (delivery.failed_at is not None) == (delivery.status == "failed")
        if scenario.wait is None:
            assert delivery.next_attempt_at is None
            assert outcome.skipped or outcome.final
        else:
            lo, hi = scenario.wait
            waited = (delivery.next_attempt_at - delivery.last_attempt_at).total_seconds()
            assert lo <= waited <= hi, waited
            assert outcome.next_try == scenario.try_number + 1
            handed_over = delivery.enqueued_at is not None and delivery.enqueued_at >= started
            assert handed_over == scenario.handed_to_broker
        assert endpoint.is_active == scenario.endpoint_active
        assert (endpoint.failing_since is not None) == scenario.failing
        if not scenario.endpoint_active:
            assert endpoint.disabled_reason == "The endpoint answered 410 Gone"
        assert sibling.status == scenario.sibling


def test_a_delivery_moved_on_during_the_post_is_decided_again_on_every_backend(
    factory, receiver, no_broker
):
    scenario = Scenario("cancelled in flight", Reply(500, b"down"))
    delivery_id, _sibling, endpoint_id = _make_rows(factory, scenario, receiver.url)

    def cancel_then_fail(_request: Received) -> Reply:
        with factory() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.endpoint_id == endpoint_id)
                .values(status="cancelled", next_attempt_at=None, error_message="Endpoint disabled")
            )
            session.commit()
        return Reply(500, b"down")

    receiver.responder = cancel_then_fail
    outcome = deliveries.run_scheduled_try(
        factory,
        DeliveryClient(allow=get_settings().allow_private_targets, user_agent="t"),
        delivery_id=delivery_id,
        try_number=1,
    )
    assert (outcome.delivery_status, outcome.final, outcome.next_try) == ("cancelled", True, None)
    with factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert (delivery.status, delivery.error_message) == ("cancelled", "Endpoint disabled")
        assert (delivery.attempt_count, delivery.next_attempt_at) == (1, None)
        (attempt,) = session.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id))
        assert (attempt.try_number, attempt.status_code, attempt.error) == (1, 500, "HTTP 500")
    assert timedelta(0) <= utcnow() - attempt.created_at < timedelta(seconds=30)
