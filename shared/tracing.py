"""OpenTelemetry tracing: one trace per message, from its ingest to every attempt.

Off unless OpenTelemetry's own variables choose an exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``). Off, nothing of the
SDK is imported and each helper below returns after one look at a module variable.

On, each process calls ``configure`` once at start (the api's app factory, the worker's
and beat's start signals): the SDK's tracer provider with a batch processor and the
chosen exporters, the Celery instrumentation (its publish hook writes the W3C
``traceparent`` into every task's headers, its run hook continues the trace in the
worker) and, in the api, the Flask instrumentation. Our own spans name what the
instrumentations cannot see: the fan-out of a message and each delivery attempt, with
the ids as attributes.

Spans carry ids, event types, status codes and outcomes, never a payload, a secret, a
header value or an API key: the exporter sees only attributes on an allow-list, so that
nothing an instrumentation records from a request (its user agent, host, query string,
captured headers) or from an exception (whose text may quote SQL parameters, hence a
payload) leaves the process. The logs keep those details, with the trace id to join them.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import trace_export
from .trace_export import SAFE_PREFIX, STATUS_CODE

# Attribute names of our own spans.
ORGANIZATION_ID = "webhooks.organization_id"
ENDPOINT_ID = "webhooks.endpoint_id"
MESSAGE_ID = "webhooks.message_id"
DELIVERY_ID = "webhooks.delivery_id"
ATTEMPT_ID = "webhooks.attempt_id"
EVENT_TYPE = "webhooks.event_type"
TRIGGER = "webhooks.trigger"
TRY_NUMBER = "webhooks.try_number"
OUTCOME = "webhooks.outcome"
DELIVERY_STATUS = "webhooks.delivery_status"
DELIVERIES = "webhooks.deliveries"


# Default service names, one per kind of process; OTEL_SERVICE_NAME overrides them.
SERVICE_NAME = "webhooks-{process}"
# Probes and scrapes answer every few seconds and are not part of any message's story.
DEFAULT_EXCLUDED_URLS = "/healthz,/readyz,/metrics,/api/internal/readyz,/api/internal/metrics"

_lock = threading.Lock()
_provider: Any = None  # the SDK's TracerProvider once configured; None: tracing is off
_tracer: Any = None


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether OpenTelemetry's variables ask for traces (an exporter or an OTLP endpoint)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if chosen:
        return any(name.strip() not in ("", "none") for name in chosen.split(","))
    return any(
        env.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    """Whether this process exports traces."""
    return _provider is not None


def configure(process: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install the tracer provider and the Celery instrumentation when the variables ask.

    Once per process (a second call does nothing); False when tracing stays off. A bad
    exporter choice raises ``ConfigError`` naming the variable.
    """
    global _provider, _tracer
    env = os.environ if environ is None else environ
    with _lock:
        if _provider is not None:
            return True
        if not wanted(env):
            return False
        from opentelemetry import trace
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporters = trace_export.exporters(env)
        resource = Resource.create({"webhooks.process": process})
        if resource.attributes.get(SERVICE_NAME_KEY, "").startswith("unknown_service"):
            resource = resource.merge(
                Resource({SERVICE_NAME_KEY: SERVICE_NAME.format(process=process)})
            )
        provider = TracerProvider(resource=resource)
        for exporter in exporters:
            # The batch processor's thread exports; it honours the OTEL_BSP_* variables and
            # restarts itself in a forked child (prefork pools, gunicorn --preload).
            provider.add_span_processor(
                BatchSpanProcessor(trace_export.AllowedAttributesOnly(exporter))
            )
        trace.set_tracer_provider(provider)
        CeleryInstrumentor().instrument(tracer_provider=provider)
        _provider = provider
        _tracer = provider.get_tracer("webhooks")
        return True


def instrument_flask(app: Any) -> None:
    """Trace the app's requests (call before the app's own request hooks are added)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    excluded = os.environ.get("OTEL_PYTHON_FLASK_EXCLUDED_URLS") or DEFAULT_EXCLUDED_URLS
    FlaskInstrumentor.instrument_app(
        app, tracer_provider=_provider, excluded_urls=excluded, enable_commenter=False
    )


def _present(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


def traced(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the decorated function inside span ``name`` (``annotate`` gives it its ids)."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return function(*args, **kwargs)
            with _tracer.start_as_current_span(name):
                return function(*args, **kwargs)

        return run

    return decorate


def attempt(run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``run(*args, **kwargs)``, a delivery attempt, inside a ``webhooks.attempt`` span.

    The span gets the attempt's ids, status code and outcome from the ``Outcome`` that
    ``run`` returns; a retry it schedules is published inside it, so the next try's span
    descends from this one.
    """
    if _tracer is None:
        return run(*args, **kwargs)
    attributes = _present(
        {
            DELIVERY_ID: kwargs.get("delivery_id"),
            TRY_NUMBER: kwargs.get("try_number"),
            ATTEMPT_ID: kwargs.get("attempt_id"),
            TRIGGER: kwargs.get("trigger", "scheduled"),
        }
    )
    with _tracer.start_as_current_span("webhooks.attempt", attributes=attributes):
        outcome = run(*args, **kwargs)
        record_outcome(outcome)
        return outcome


def annotate(**attributes: Any) -> None:
    """Add ids to the running span (``webhooks.`` + name); nothing when tracing is off."""
    if _provider is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(
            _present({SAFE_PREFIX + key: value for key, value in attributes.items()})
        )


def annotate_fan_out(messages: Sequence[Any], *, deliveries: int) -> None:
    """Put the messages being fanned out, and how many deliveries they make, on the span."""
    if _provider is None or not messages:
        return
    ids = [m.id for m in messages]
    organizations = sorted({m.organization_id for m in messages})
    event_types = sorted({m.event_type for m in messages})
    annotate(
        message_id=ids[0] if len(ids) == 1 else ids,
        organization_id=organizations[0] if len(organizations) == 1 else organizations,
        event_type=event_types[0] if len(event_types) == 1 else event_types,
        deliveries=deliveries,
    )


def record_outcome(outcome: Any) -> None:
    """Put what a delivery task did on the running span: ids, status code and outcome."""
    if _provider is None:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if not current.is_recording():
        return
    fields: dict[str, Any] = {
        DELIVERY_ID: outcome.delivery_id,
        ORGANIZATION_ID: outcome.organization_id,
        EVENT_TYPE: outcome.event_type,
        DELIVERY_STATUS: outcome.delivery_status,
    }
    attempt = outcome.attempt
    if outcome.skipped:
        fields[OUTCOME] = "skipped"
        fields["webhooks.skipped"] = outcome.skipped
    elif attempt is not None:
        fields.update(
            {
                ATTEMPT_ID: attempt.id,
                ENDPOINT_ID: attempt.endpoint_id,
                MESSAGE_ID: attempt.message_id,
                ORGANIZATION_ID: attempt.organization_id,
                TRIGGER: attempt.trigger,
                TRY_NUMBER: attempt.try_number,
                STATUS_CODE: attempt.status_code,
                OUTCOME: _outcome(outcome),
            }
        )
    current.set_attributes(_present(fields))


def _outcome(outcome: Any) -> str:
    """``delivered``, ``retry`` (a next try is scheduled) or ``failed``, for one attempt."""
    if outcome.attempt.status == "success":
        return "delivered"
    return "retry" if outcome.next_try else "failed"


def _run_now(callback: Callable[[], Any]) -> Any:
    return callback()


def within_current() -> Callable[[Callable[[], Any]], Any]:
    """A runner of callables, later and on any thread, inside the span running now."""
    if _provider is None:
        return _run_now
    from opentelemetry import context

    captured = context.get_current()

    def run_in_context(callback: Callable[[], Any]) -> Any:
        token = context.attach(captured)
        try:
            return callback()
        finally:
            context.detach(token)

    return run_in_context


def carry(callback: Callable[[], Any]) -> Callable[[], Any]:
    """``callback`` run later (after a commit) inside the span that is running now."""
    if _provider is None:
        return callback
    run = within_current()
    return lambda: run(callback)


def current_parent() -> str | None:
    """The W3C ``traceparent`` of the running span, to store with a message; None when off."""
    if _provider is None:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def continuing(parent: str | None) -> Iterator[None]:
    """Run the block as part of the trace ``parent`` names (a stored ``traceparent``).

    For work that picks a message up again outside its request: a try the sweep hands to
    the broker joins the message's trace. Nothing when tracing is off or ``parent`` is None.
    """
    if _provider is None or not parent:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract({"traceparent": parent}))
    try:
        yield
    finally:
        context.detach(token)


def log_ids() -> dict[str, str]:
    """The trace and span ids of the running span, for a log line; empty when off."""
    if _provider is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
