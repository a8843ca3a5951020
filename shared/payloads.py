"""The three payload formats a delivery can take (docs/api.md §4.2).

`daytona` is flat JSON exactly as in Daytona's docs, `envelope` is the
ScaleBox `{id, type, timestamp, data}` shape with snake_case data, and `e2b`
is E2B's lifecycle event. The bytes `serialize` returns are the ones signed
and posted. Pure: no database, Flask or Celery.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.events import CATALOG, EventType, example_event

PAYLOAD_FORMATS: tuple[str, ...] = ("daytona", "envelope", "e2b")

# ScaleBox's words for the platform's states (docs/api.md §4.2); any other state is
# passed on as reported.
_SCALEBOX_STATUS: dict[str, str] = {
    "started": "running",
    "stopped": "stopped",
    "paused": "paused",
    "destroyed": "terminated",
    "terminated": "terminated",
    "error": "failed",
    "build_failed": "failed",
    "failed": "failed",
}

# Two passes so that acronyms split sensibly: "sandboxURLPath" becomes
# "sandbox_url_path", "lastUsedAt" becomes "last_used_at".
_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")


def format_timestamp(dt: datetime) -> str:
    """ISO 8601 UTC with milliseconds and Z; a naive datetime is taken as UTC."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def snake_case(key: str) -> str:
    """A camelCase key in snake_case (`organizationId` -> `organization_id`)."""
    key = _ACRONYM_BOUNDARY.sub(r"\1_\2", key)
    return _WORD_BOUNDARY.sub(r"\1_\2", key).lower()


def scalebox_status(state: Any) -> Any:
    """A platform state in ScaleBox's words (`started` -> `running`), else as reported."""
    if not isinstance(state, str):
        return state
    return _SCALEBOX_STATUS.get(state.lower(), state)


def resource_id_key(event_type: str) -> str:
    """The envelope's key for the resource id: `audit-log.created` -> `audit_log_id`."""
    return event_type.split(".", 1)[0].replace("-", "_") + "_id"


def render_payload(
    *,
    payload_format: str,
    message_id: str,
    event_type: str,
    delivery_name: str,
    fields: dict[str, Any],
    timestamp: str,
    custom: bool,
) -> dict[str, Any]:
    """The JSON body one delivery carries, in the endpoint's payload format."""
    if payload_format == "daytona":
        if custom:
            return _daytona_custom(event_type, fields, timestamp)
        return _daytona(delivery_name, fields, timestamp)
    if payload_format == "envelope":
        data = dict(fields) if custom else _envelope_data(event_type, fields)
        return {"id": message_id, "type": delivery_name, "timestamp": timestamp, "data": data}
    if payload_format == "e2b":
        if custom:
            raise ValueError("custom events are never delivered in the e2b format")
        return _e2b(delivery_name, fields, timestamp)
    raise ValueError(f"unknown payload format: {payload_format}")


def _daytona(name: str, fields: dict[str, Any], timestamp: str) -> dict[str, Any]:
    # `event` and `timestamp` lead, then the fields in the order reported:
    # exactly the documented examples. The service's own values win over
    # any stray `event`/`timestamp` among the fields.
    payload: dict[str, Any] = {"event": name, "timestamp": timestamp}
    payload.update((key, value) for key, value in fields.items() if key not in payload)
    return payload


def _daytona_custom(event_type: str, payload: dict[str, Any], timestamp: str) -> dict[str, Any]:
    # docs/api.md §6.2: the caller's keys are kept, `event` is forced to the event
    # type, and `timestamp` is added only when the caller sent none.
    result: dict[str, Any] = {"event": event_type}
    if "timestamp" not in payload:
        result["timestamp"] = timestamp
    result.update((key, value) for key, value in payload.items() if key != "event")
    return result


def _envelope_data(event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if "id" in fields:
        data[resource_id_key(event_type)] = fields["id"]
    if "organizationId" in fields:
        data["organization_id"] = fields["organizationId"]
    # newState wins over state: after a change the new state is the status.
    if "newState" in fields:
        data["status"] = scalebox_status(fields["newState"])
    elif "state" in fields:
        data["status"] = scalebox_status(fields["state"])
    elif "status" in fields:
        data["status"] = fields["status"]
    for key, value in fields.items():
        if key in ("id", "organizationId"):
            continue
        # Only top-level keys are renamed; nested objects (metadata,
        # changes) are the reporter's own data and pass through unchanged.
        data.setdefault(snake_case(key), value)
    return data


def _id_text(value: Any) -> str:
    """An id field of the e2b format: always a string, since E2B's receivers parse it so."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _e2b(label: str, fields: dict[str, Any], timestamp: str) -> dict[str, Any]:
    # Key order follows E2B's documented payload; an id the platform did not report is "".
    return {
        "eventCategory": "lifecycle",
        "eventLabel": label,
        "eventData": {"sandbox_metadata": fields.get("metadata") or {}},
        "sandboxBuildId": _id_text(fields.get("buildId")),
        "sandboxExecutionId": _id_text(fields.get("executionId")),
        "sandboxId": _id_text(fields.get("id")),
        "sandboxTeamId": _id_text(fields.get("organizationId")),
        "sandboxTemplateId": _id_text(fields.get("templateId")),
        "timestamp": timestamp,
    }


def example_payload(event_type: str, *, organization_id: str, timestamp: str) -> dict[str, Any]:
    """The full daytona-format example of a catalog type, for one organization."""
    canonical, fields = example_event(event_type, organization_id=organization_id)
    return _daytona(canonical, fields, timestamp)


@dataclass(frozen=True, slots=True)
class DocumentedEventType:
    """A catalog type with its full daytona-format example, as the event catalog shows it."""

    event_type: EventType
    example: dict[str, Any]


def documented_catalog(*, organization_id: str, timestamp: str) -> list[DocumentedEventType]:
    """Every catalog type with its example for one organization, stamped ``timestamp``."""
    return [
        DocumentedEventType(
            event_type,
            example_payload(event_type.name, organization_id=organization_id, timestamp=timestamp),
        )
        for event_type in CATALOG.values()
    ]


def serialize(payload: dict[str, Any]) -> bytes:
    """The exact UTF-8 bytes that are signed and posted: compact JSON."""
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" is valid JSON input) cannot be UTF-8;
        # escaping everything still yields valid JSON instead of a failure.
        return json.dumps(payload, separators=(",", ":")).encode("ascii")
