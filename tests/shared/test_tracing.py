"""OpenTelemetry traces across real api, worker and beat processes, read by a real OTLP receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from tests.conftest import ADMIN_TOKEN, PLATFORM, ROOT, TEST_ENV
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.receiver import Receiver, Reply
from tests.support.scenario import Org, create_endpoint, create_org
from tests.support.stack import Api, Stack, running_stack
from tests.support.waiting import wait_until

MARKER = "payload-marker-7f3a91"
USER_AGENT = "platform-agent-marker/9.9"


class Traced:
    """The stack with tracing on, the OTLP receiver and what the module's tests share."""

    def __init__(self, stack: Stack, otlp: OtlpReceiver, api: Api, org: Org) -> None:
        self.stack = stack
        self.otlp = otlp
        self.api = api
        self.org = org
        self.secrets: list[str] = []


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[Traced]:
    otlp = OtlpReceiver()
    env = {
        **TEST_ENV,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        # Export every 100 ms instead of every 5 s, so that a test sees its spans at once.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "WEBHOOKS_LOG_FORMAT": "json",
    }
    with running_stack(tmp_path_factory.mktemp("tracing"), env) as stack:
        api = stack.start_api()
        stack.start_worker()
        stack.start_beat()
        org = create_org(api)
        yield Traced(stack, otlp, api, org)
    otlp.close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    yield made
    for receiver in made:
        receiver.close()


def _by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def _descends(span: ReceivedSpan, ancestor: ReceivedSpan, index: dict[str, ReceivedSpan]) -> bool:
    seen = span
    while seen.parent_id and seen.parent_id in index:
        seen = index[seen.parent_id]
        if seen.span_id == ancestor.span_id:
            return True
    return False


def _attempts(spans: list[ReceivedSpan], message_id: str) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.name == "webhooks.attempt" and s.attributes.get("webhooks.message_id") == message_id
    ]


def _traced(message_id: str, attempts: int) -> Callable[[list[ReceivedSpan]], bool]:
    """Whether the message's attempts and every span above them, up to the root, are in."""

    def complete(got: list[ReceivedSpan]) -> bool:
        found = _attempts(got, message_id)
        if len(found) < attempts:
            return False
        index = _by_id(got)
        for span in found:
            while span.parent_id:
                if span.parent_id not in index:
                    return False
                span = index[span.parent_id]
        return True

    return complete


def _report(traced: Traced, receivers: list[Receiver], n: int) -> tuple[Org, str, list[dict]]:
    """A new organization with an endpoint on each receiver, and one event reported to it."""
    org = create_org(traced.api, f"Traced {n}")
    endpoints = [create_endpoint(traced.api, org, r.url) for r in receivers]
    event = {
        "event": "sandbox.state.updated",
        "organizationId": org.id,
        "id": f"sbx-{MARKER}-{n}",
        "oldState": "started",
        "newState": "stopped",
        "updatedAt": "2026-01-01T00:00:00.000Z",
        "note": MARKER,
    }
    resp = traced.api.post(
        "/api/internal/events",
        json=event,
        headers={**PLATFORM, "User-Agent": USER_AGENT, "X-Marker": MARKER},
    )
    assert resp.status_code == 202, resp.text
    traced.secrets += [org.key, *(e["secret"] for e in endpoints)]
    return org, resp.json()["messages"][0]["id"], endpoints


def test_one_event_to_two_endpoints_is_one_trace_from_ingest_to_each_attempt(
    traced: Traced, receivers: list[Receiver]
):
    org, message_id, endpoints = _report(traced, receivers, 1)
    for receiver in receivers:
        receiver.wait_for(1)

    spans = traced.otlp.wait_for(_traced(message_id, 2))
    attempts = _attempts(spans, message_id)
    trace_id = attempts[0].trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    index = _by_id(in_trace)
    assert {a.trace_id for a in attempts} == {trace_id}

    [ingest] = [s for s in in_trace if s.kind == "SPAN_KIND_SERVER"]
    assert ingest.service == "webhooks-api"
    assert ingest.parent_id == ""  # the trace starts at the platform's report
    assert ingest.attributes["http.route"] == "/api/internal/events"
    assert ingest.attributes.get("http.status_code", 202) == 202

    [fan_out] = [s for s in in_trace if s.name == "webhooks.fan_out"]
    assert fan_out.parent_id == ingest.span_id
    assert fan_out.service == "webhooks-api"
    assert fan_out.attributes["webhooks.message_id"] == message_id
    assert fan_out.attributes["webhooks.organization_id"] == org.id
    assert fan_out.attributes["webhooks.event_type"] == "sandbox.state.updated"
    assert fan_out.attributes["webhooks.deliveries"] == 2

    assert {a.attributes["webhooks.endpoint_id"] for a in attempts} == {
        e["endpoint_id"] for e in endpoints
    }
    for attempt in attempts:
        assert attempt.service == "webhooks-worker"
        assert _descends(attempt, fan_out, index), "an attempt outside the fan-out"
        # The worker continued the trace from the task's headers: a consumer span between.
        assert index[attempt.parent_id].kind == "SPAN_KIND_CONSUMER"
        assert attempt.attributes["webhooks.organization_id"] == org.id
        assert attempt.attributes["webhooks.event_type"] == "sandbox.stopped"
        assert attempt.attributes["webhooks.delivery_id"].startswith("whd")
        assert attempt.attributes["webhooks.trigger"] == "scheduled"
        assert attempt.attributes["webhooks.try_number"] == 1
        assert attempt.attributes["http.response.status_code"] == 200
        assert attempt.attributes["webhooks.outcome"] == "delivered"


def test_a_failed_attempt_and_its_retry_are_in_the_same_trace(
    traced: Traced, receivers: list[Receiver]
):
    answers = iter([Reply(status=500, body=b"down"), Reply()])
    receivers[1].responder = lambda _r: next(answers, Reply())
    _, message_id, endpoints = _report(traced, receivers, 2)
    receivers[1].wait_for(2)

    spans = traced.otlp.wait_for(_traced(message_id, 3))
    attempts = _attempts(spans, message_id)
    assert len({a.trace_id for a in attempts}) == 1
    index = _by_id([s for s in spans if s.trace_id == attempts[0].trace_id])
    retried = sorted(
        (
            a
            for a in attempts
            if a.attributes["webhooks.endpoint_id"] == endpoints[1]["endpoint_id"]
        ),
        key=lambda a: a.attributes["webhooks.try_number"],
    )
    failed, retry = retried
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.attributes["webhooks.outcome"] == "retry"
    assert retry.attributes["webhooks.try_number"] == 2
    assert retry.attributes["http.response.status_code"] == 200
    assert retry.attributes["webhooks.outcome"] == "delivered"
    # The retry was published by the failed attempt: it descends from it.
    assert _descends(retry, failed, index)


def test_a_retry_the_sweep_hands_over_continues_the_messages_trace(
    traced: Traced, receivers: list[Receiver]
):
    # Asked to wait more than a minute: the retry stays in the database, and beat's
    # sweep hands it to the broker shortly before it is due, in another process.
    answers = iter([Reply(status=503, body=b"later", headers={"Retry-After": "90"}), Reply()])
    receivers[1].responder = lambda _r: next(answers, Reply())
    _, message_id, endpoints = _report(traced, receivers, 3)
    receivers[1].wait_for(1)
    hook = endpoints[1]["endpoint_id"]

    def left_to_the_sweep() -> bool:
        with traced.stack.engine.begin() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT 1 FROM deliveries WHERE message_id = :m AND endpoint_id = :e"
                        " AND attempt_count = 1 AND enqueued_at IS NULL"
                    ),
                    {"m": message_id, "e": hook},
                ).first()
            )

    wait_until(left_to_the_sweep)
    with traced.stack.engine.begin() as conn:
        # As if the 90 s had passed: due in two seconds.
        conn.execute(
            text(
                "UPDATE deliveries SET next_attempt_at = now() + interval '2 seconds'"
                " WHERE message_id = :m AND endpoint_id = :e"
            ),
            {"m": message_id, "e": hook},
        )
        # The Retry-After also holds the endpoint's other tries (docs/api.md §11.6).
        conn.execute(text("UPDATE endpoints SET paused_until = NULL WHERE id = :e"), {"e": hook})
    receivers[1].wait_for(2, timeout=30)

    spans = traced.otlp.wait_for(_traced(message_id, 3))
    attempts = _attempts(spans, message_id)
    assert len({a.trace_id for a in attempts}) == 1
    index = _by_id([s for s in spans if s.trace_id == attempts[0].trace_id])
    retry = next(
        a
        for a in attempts
        if a.attributes["webhooks.endpoint_id"] == hook and a.attributes["webhooks.try_number"] == 2
    )
    assert retry.attributes["webhooks.outcome"] == "delivered"
    [ingest] = [s for s in index.values() if s.kind == "SPAN_KIND_SERVER"]
    assert ingest.parent_id == ""
    assert _descends(retry, ingest, index)
    # Handed over by the sweep, not published by the failed attempt.
    [first] = [
        a for a in attempts if a.attributes["webhooks.endpoint_id"] == hook and a is not retry
    ]
    assert not _descends(retry, first, index)


def test_a_test_send_and_a_manual_resend_are_traced_from_their_requests(
    traced: Traced, receivers: list[Receiver]
):
    org = create_org(traced.api, "Traced test send")
    endpoint = create_endpoint(traced.api, org, receivers[0].url)
    base = f"/api/webhooks/organizations/{org.id}"
    resp = traced.api.post(
        f"{base}/endpoints/{endpoint['endpoint_id']}/test",
        json={"eventType": "sandbox.created"},
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    message_id = resp.json()["id"]
    receivers[0].wait_for(1)
    resp = traced.api.post(
        f"{base}/messages/{message_id}/endpoints/{endpoint['endpoint_id']}/resend",
        headers=org.headers,
    )
    assert resp.status_code == 202, resp.text
    receivers[0].wait_for(2)

    spans = traced.otlp.wait_for(_traced(message_id, 2))
    by_trigger = {a.attributes["webhooks.trigger"]: a for a in _attempts(spans, message_id)}
    assert set(by_trigger) == {"test", "manual"}
    for trigger, route in (
        ("test", "/api/webhooks/organizations/<organizationId>/endpoints/<endpointId>/test"),
        (
            "manual",
            "/api/webhooks/organizations/<organizationId>/messages/<messageId>/endpoints/"
            "<endpointId>/resend",
        ),
    ):
        attempt = by_trigger[trigger]
        index = _by_id([s for s in spans if s.trace_id == attempt.trace_id])
        [request] = [s for s in index.values() if s.kind == "SPAN_KIND_SERVER"]
        assert request.attributes["http.route"] == route
        assert _descends(attempt, request, index)
        assert attempt.attributes["webhooks.outcome"] == "delivered"


def test_beat_publishes_its_jobs_into_traces_the_worker_continues(traced: Traced):
    def sweep_traced(got: list[ReceivedSpan]) -> bool:
        published = {s.span_id for s in got if s.name == "apply_async/webhooks.sweep"}
        return any(s.name == "run/webhooks.sweep" and s.parent_id in published for s in got)

    spans = traced.otlp.wait_for(sweep_traced)
    index = _by_id(spans)
    run = next(s for s in spans if s.name == "run/webhooks.sweep" and s.parent_id in index)
    assert index[run.parent_id].service == "webhooks-beat"
    assert run.service == "webhooks-worker"


def test_no_span_carries_a_payload_a_secret_a_header_or_an_api_key(
    traced: Traced, receivers: list[Receiver]
):
    _, message_id, _ = _report(traced, receivers, 3)
    for receiver in receivers:
        receiver.wait_for(1)
    spans = traced.otlp.wait_for(_traced(message_id, 2))

    forbidden = [MARKER, USER_AGENT, traced.org.key, ADMIN_TOKEN, *traced.secrets]
    assert len(traced.secrets) >= 3

    def strings(value: object) -> list[str]:
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        if isinstance(value, dict):
            return [s for item in value.values() for s in strings(item)]
        return [str(value)]

    for span in spans:
        values = strings(span.attributes) + strings(span.events) + [span.status_message]
        for value in values:
            for secret in forbidden:
                assert secret not in value, f"{span.name} carries {secret!r} in {value!r}"
            assert "whsec_" not in value and "whk_" not in value, (span.name, value)


def test_a_log_line_inside_a_traced_span_carries_its_trace_id(
    traced: Traced, receivers: list[Receiver]
):
    _, message_id, _ = _report(traced, receivers, 4)
    for receiver in receivers:
        receiver.wait_for(1)
    spans = traced.otlp.wait_for(_traced(message_id, 2))
    attempt = _attempts(spans, message_id)[0]
    delivery_id = attempt.attributes["webhooks.delivery_id"]

    def attempt_lines() -> list[dict]:
        lines = []
        for raw in traced.stack.logs().splitlines():
            if raw.startswith("{") and delivery_id in raw:
                line = json.loads(raw)
                if line.get("delivery_id") == delivery_id and "attempt" in line["message"]:
                    lines.append(line)
        return lines

    deadline = time.monotonic() + 10
    while not attempt_lines() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {line.get("trace_id") for line in attempt_lines()} == {attempt.trace_id}


_PROBE = """
import json, sys, threading
from webhooks_api.app import create_app
from celery import signals
import webhooks_worker.celery_app
create_app()
signals.worker_init.send(sender=None)
from opentelemetry import trace
print(json.dumps({
    "exporter": any(name.startswith("opentelemetry.exporter") for name in sys.modules),
    "provider": type(trace.get_tracer_provider()).__name__,
    "threads": sorted(t.name for t in threading.enumerate()),
}))
"""


def _probe(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without_otel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_without_otel_variables_no_provider_and_no_exporter_thread_is_installed():
    off = _probe(_without_otel())
    assert off == {**off, "exporter": False, "provider": "ProxyTracerProvider"}
    assert not [t for t in off["threads"] if "Otel" in t or "Span" in t], off["threads"]

    # The same process with an endpoint set does install them: the probe can tell.
    on = _probe({**_without_otel(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert on["exporter"] is True and on["provider"] == "TracerProvider"
    assert [t for t in on["threads"] if "Otel" in t], on["threads"]


def test_an_exporter_that_is_not_installed_stops_the_worker_naming_the_variable():
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "webhooks_worker.celery_app", "worker",
         "--pool", "threads", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT,
        env={**_without_otel(), "OTEL_TRACES_EXPORTER": "no-such-exporter"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "OTEL_TRACES_EXPORTER" in done.stderr and "no-such-exporter" in done.stderr
