"""What leaves the process when tracing is on (shared.tracing): the exporters that
OpenTelemetry's variables choose, each behind the attribute allow-list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import ConfigError

STATUS_CODE = "http.response.status_code"

# What may leave the process: our attributes and what the instrumentations record that
# names a route, a method, a status or a task, never a value a client or receiver chose.
SAFE_ATTRIBUTES = frozenset(
    {
        "http.method",
        "http.request.method",
        "http.route",
        "http.scheme",
        "http.flavor",
        "http.status_code",
        STATUS_CODE,
        "network.protocol.version",
        "net.host.port",
        "server.port",
        "error.type",
        "exception.type",
        "celery.action",
        "celery.task_name",
        "celery.state",
        "celery.hostname",
        "celery.queue",
        "celery.countdown",
        "celery.eta",
        "celery.retries",
        "messaging.message.id",
        "messaging.message_id",
        "messaging.destination",
        "messaging.destination_kind",
    }
)
SAFE_PREFIX = "webhooks."


def exporters(env: Mapping[str, str]) -> list[Any]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (default: OTLP over HTTP)."""
    from importlib.metadata import entry_points

    exporters = []
    for raw in env.get("OTEL_TRACES_EXPORTER", "otlp").split(","):
        name = raw.strip()
        if name in ("", "none"):
            continue
        variable = "OTEL_TRACES_EXPORTER"
        if name == "otlp":
            variable = (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                if env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                else "OTEL_EXPORTER_OTLP_PROTOCOL"
            )
            protocol = env.get(variable, "").strip() or "http/protobuf"
            name = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}.get(
                protocol, protocol
            )
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigError(
                f"{variable}: no installed trace exporter is called {name!r} "
                "(OTLP over HTTP is installed: otlp with http/protobuf, the default)"
            )
        exporters.append(next(iter(found)).load()())
    return exporters


class AllowedAttributesOnly:
    """A span exporter wrapper that lets through only the attributes on the allow-list.

    Exception events keep their type alone, and a span's status its code: their texts
    may quote what a receiver answered or what a statement was given.
    """

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[Any]) -> Any:
        """Export the spans with their unsafe attributes removed."""
        return self.exporter.export([_allowed_only(span) for span in spans])

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)


def _safe(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        key: value
        for key, value in (attributes or {}).items()
        if key in SAFE_ATTRIBUTES or key.startswith(SAFE_PREFIX)
    }


def _allowed_only(span: Any) -> Any:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status

    attributes = _safe(span.attributes)
    events = [Event(event.name, _safe(event.attributes), event.timestamp) for event in span.events]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
