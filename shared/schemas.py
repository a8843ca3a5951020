"""How the organization service shows an endpoint, a delivery, a message and an attempt.

These are the /api/webhooks face's answers, and more than that face renders them: the
live socket carries this very endpoint object in its ``endpoint.*`` events and its
attempt events are built on this attempt, and the ``webhooks`` CLI prints them with a
few operator fields added. A worker publishes ``endpoint.disabled`` after a 410, so the
shapes must render in a process that has neither Flask nor flask-smorest: that is why
they live here, in ``shared``, as plain marshmallow schemas, rather than beside the
face's routes. The face, the socket and the CLI import them from here; each face's
request bodies, query strings and envelopes stay in its own package.

Every schema renders the model's attributes; a derived value (an endpoint's status, a
delivery's attempt number) is a property of the model, so that every face reads it from
one place.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields

from .models.enums import AttemptStatus, DeliveryStatus, Trigger
from .payloads import format_timestamp
from .services.endpoint_headers import masked_headers

ENDPOINT_STATUSES = ("active", "disabled")
DELIVERY_STATUSES = tuple(DeliveryStatus)
ATTEMPT_STATUSES = tuple(AttemptStatus)
TRIGGERS = tuple(Trigger)


class Timestamp(fields.Field):
    """A date-time printed as ISO 8601 UTC with milliseconds and ``Z``."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {}).update({"type": "string", "format": "date-time"})
        super().__init__(**kwargs)

    def _serialize(self, value: datetime | None, attr, obj, **kwargs):
        return None if value is None else format_timestamp(value)


class MaskedHeaders(fields.Field):
    """An endpoint's custom headers as reads show them, sensitive values masked.

    Reads the stored token (``headers_encrypted``); ``{}`` when the endpoint has none.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {}).update(
            {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": (
                    "Custom headers sent with every attempt (docs/api.md §11.1): every "
                    "name, with the values of authorization, cookie and of names "
                    'containing token, secret, key or password shown as "********". '
                    "{} when there are none."
                ),
            }
        )
        super().__init__(dump_only=True, **kwargs)

    def _serialize(self, value: str | None, attr, obj, **kwargs) -> dict[str, str]:
        return masked_headers(value)


def through(schema: type[Schema], path: str) -> type[Schema]:
    """A schema with ``schema``'s fields, each reading its value from the object's ``path``.

    For an answer that is a model plus something that is not one of its columns (a new
    endpoint and its secret, a message and whether it repeated an eventId): subclass the
    result, declare the extra fields, and the model's shape stays declared once.
    """
    copied: dict[str, fields.Field] = {}
    for name, field in schema().fields.items():
        clone = copy.copy(field)
        clone.attribute = f"{path}.{field.attribute or name}"
        copied[name] = clone
    return Schema.from_dict(copied, name=f"{schema.__name__}Through")


# docs/api.md §11.2, for the OpenAPI documents of every face that takes or shows a filter.
FILTER_DESCRIPTION = (
    "Payload filter: conditions on the event's fields (Daytona names, `.` walks into "
    "objects), all of which must hold for a delivery. Each value is a scalar (equals), an "
    "array of scalars (one of) or an object with one operator: $eq, $ne, $in, $nin, "
    "$exists, $prefix, $gt, $gte, $lt, $lte. At most 20 keys and 4 KiB; null for none."
)


def filter_field(**kwargs: Any) -> fields.Raw:
    """The ``filter`` option: any JSON, checked by ``shared.filters`` (400 naming the key)."""
    return fields.Raw(
        allow_none=True,
        metadata={"type": "object", "nullable": True, "description": FILTER_DESCRIPTION},
        **kwargs,
    )


# The flow-control options as the OpenAPI documents describe them (docs/api.md §11.3, §11.6).
ORDERING_DOC = (
    '"none" or "resource": with "resource", the deliveries of one resource (the event\'s id) '
    "are made one after another in the order their events were accepted, each carrying "
    "webhook-sequence: 1, 2, 3, ..."
)
# The lifetime options and the failing notice as the OpenAPI documents describe them
# (docs/api.md §11.4, §11.5), shared by every face that shows or takes them.
RESOURCE_ID_DOC = "The one resource (an event's id) the endpoint receives"
RESOURCE_ID_INPUT_DOC = "Only events whose id is this; set at creation only"
RESOURCE_ID_FIXED_DOC = "Cannot be changed"
EXPIRES_AT_DOC = "When the endpoint is deleted by itself"
EXPIRES_AT_INPUT_DOC = "ISO 8601, at most a year ahead: the endpoint is deleted then"
DELETED_REASON_DOC = "Why the service deleted it: resource ended, expired"
FAILING_DOC = "The standing endpoint.failing notice; null when none"

RATE_DOC = (
    "At most this many attempts per second to the endpoint (1-10000), bursts of up to one "
    "second's worth; null for no limit. Tries over it wait their turn."
)


class EndpointSchema(Schema):
    """An endpoint, as the organization service, the live socket and the CLI show it."""

    id = fields.String()
    name = fields.String(allow_none=True)
    url = fields.String()
    description = fields.String(allow_none=True)
    eventTypes = fields.List(fields.String(), attribute="event_types")
    status = fields.String(dump_only=True, metadata={"enum": list(ENDPOINT_STATUSES)})
    disabledReason = fields.String(attribute="disabled_reason", allow_none=True)
    payloadFormat = fields.String(attribute="payload_format")
    timeoutSeconds = fields.Integer(attribute="timeout_seconds")
    maxRetries = fields.Integer(attribute="max_retries")
    ordering = fields.String(metadata={"description": ORDERING_DOC})
    rateLimit = fields.Integer(
        attribute="rate_limit", allow_none=True, metadata={"description": RATE_DOC}
    )
    scope = fields.String()
    category = fields.String(allow_none=True)
    headers = MaskedHeaders(attribute="headers_encrypted")
    filter = filter_field()
    createdAt = Timestamp(attribute="created_at")
    updatedAt = Timestamp(attribute="updated_at")
    # docs/api.md §11.4 and §11.5
    resourceId = fields.String(
        attribute="resource_id",
        allow_none=True,
        metadata={"description": RESOURCE_ID_DOC},
    )
    expiresAt = Timestamp(
        attribute="expires_at",
        allow_none=True,
        metadata={"description": EXPIRES_AT_DOC},
    )
    deletedReason = fields.String(
        attribute="deleted_reason",
        allow_none=True,
        metadata={"description": DELETED_REASON_DOC},
    )
    failing = fields.Nested(
        lambda: FailingNoticeSchema(),
        attribute="failing_notice",
        allow_none=True,
        metadata={"description": FAILING_DOC},
    )


class FailingNoticeSchema(Schema):
    """Why an endpoint is reported failing (docs/api.md §11.5): its streak and last failure."""

    since = Timestamp(allow_none=True)
    notifiedAt = Timestamp(attribute="notified_at")
    lastStatusCode = fields.Integer(attribute="last_status_code", allow_none=True)
    lastError = fields.String(attribute="last_error", allow_none=True)


class EndpointStatsSchema(Schema):
    """An endpoint's delivery figures (``services.endpoint_stats.EndpointStats``)."""

    total = fields.Integer()
    successful = fields.Integer()
    failed = fields.Integer()
    pending = fields.Integer()
    lastDeliveryAt = Timestamp(attribute="last_delivery_at", allow_none=True)
    lastSuccessAt = Timestamp(attribute="last_success_at", allow_none=True)
    lastFailureAt = Timestamp(attribute="last_failure_at", allow_none=True)


class MessageSchema(Schema):
    """A message as accepted: its type, the caller's eventId, its timestamp and payload."""

    id = fields.String()
    eventType = fields.String(attribute="event_type")
    eventId = fields.String(attribute="event_id", allow_none=True)
    timestamp = fields.String(metadata={"format": "date-time"})
    test = fields.Boolean()
    payload = fields.Dict()


class MessageDeliverySchema(Schema):
    """A message's delivery to one endpoint: where it stands and its last answer."""

    id = fields.String()
    endpointId = fields.String(attribute="endpoint_id")
    status = fields.String(metadata={"enum": list(DELIVERY_STATUSES)})
    attemptNumber = fields.Integer(attribute="attempt_number", dump_only=True)
    maxAttempts = fields.Integer(attribute="max_attempts")
    nextRetryAt = Timestamp(attribute="next_attempt_at", allow_none=True)
    deliveredAt = Timestamp(attribute="delivered_at", allow_none=True)
    failedAt = Timestamp(attribute="failed_at", allow_none=True)
    httpStatusCode = fields.Integer(attribute="http_status_code", allow_none=True)
    errorMessage = fields.String(attribute="error_message", allow_none=True)


class AttemptSchema(Schema):
    """One HTTP request made for a delivery, whatever its outcome."""

    id = fields.String()
    deliveryId = fields.String(attribute="delivery_id")
    endpointId = fields.String(attribute="endpoint_id")
    messageId = fields.String(attribute="message_id")
    url = fields.String()
    status = fields.String(metadata={"enum": list(ATTEMPT_STATUSES)})
    statusCode = fields.Integer(attribute="status_code", allow_none=True)
    durationMs = fields.Integer(attribute="duration_ms")
    trigger = fields.String(metadata={"enum": list(TRIGGERS)})
    responseBody = fields.String(attribute="response_body", allow_none=True)
    error = fields.String(allow_none=True)
    timestamp = Timestamp(attribute="created_at")


def _final(outcome: Any) -> bool:
    if outcome.delivery_status is not None:
        # No automatic try follows once the delivery left "pending" (delivered, failed,
        # cancelled); a failed manual attempt on a pending delivery leaves its retries due.
        return outcome.delivery_status != DeliveryStatus.PENDING
    return bool(outcome.final)


class AttemptEventSchema(through(AttemptSchema, "attempt")):
    """The live socket's ``webhook.delivered``/``webhook.failed``: a task's attempt.

    Rendered from the task's outcome (``services.deliveries.Outcome``), which holds the
    attempt and what the delivery became.
    """

    class Meta:
        fields = (
            "organizationId",
            "endpointId",
            "messageId",
            "deliveryId",
            "eventType",
            "attemptNumber",
            "statusCode",
            "durationMs",
            "trigger",
            "final",
            "timestamp",
        )

    organizationId = fields.String(attribute="attempt.organization_id")
    eventType = fields.String(attribute="event_type")
    attemptNumber = fields.Integer(attribute="attempt_number")
    final = fields.Function(_final, metadata={"type": "boolean"})


# ---- the operator's view: the ``webhooks`` CLI ---------------------------------------------


class OperatorEndpointSchema(EndpointSchema):
    """An endpoint as ``webhooks endpoint`` prints it: whose it is, and failing since when."""

    class Meta:
        fields = (
            "id",
            "organizationId",
            "url",
            "status",
            "disabledReason",
            "eventTypes",
            "payloadFormat",
            "ordering",
            "rateLimit",
            "scope",
            "category",
            "failingSince",
            "createdAt",
            "updatedAt",
        )

    organizationId = fields.String(attribute="organization_id")
    failingSince = Timestamp(attribute="failing_since", allow_none=True)


class OperatorEndpointWithStatsSchema(through(OperatorEndpointSchema, "endpoint")):
    """An endpoint and its delivery figures (``services.endpoint_stats.EndpointWithStats``)."""

    stats = fields.Nested(
        EndpointStatsSchema,
        only=("total", "successful", "failed", "pending", "lastDeliveryAt"),
    )


class OperatorMessageSchema(MessageSchema):
    """A new message as ``webhooks messages tail`` prints it (``activity.Activity``)."""

    class Meta:
        fields = (
            "kind",
            "id",
            "timestamp",
            "organizationId",
            "messageId",
            "eventType",
            "eventId",
            "test",
            "custom",
        )

    kind = fields.String()
    # When the message was accepted: the tail follows rows in that order, so its lines
    # carry that moment rather than the time the platform gave the event.
    timestamp = Timestamp(attribute="created_at")
    organizationId = fields.String(attribute="organization_id")
    messageId = fields.String(attribute="message_id")
    custom = fields.Boolean()


class OperatorAttemptSchema(AttemptSchema):
    """A new attempt as ``webhooks messages tail`` prints it (``activity.Activity``)."""

    class Meta:
        fields = (
            "kind",
            "id",
            "timestamp",
            "organizationId",
            "messageId",
            "eventType",
            "deliveryId",
            "endpointId",
            "status",
            "statusCode",
            "durationMs",
            "trigger",
            "url",
            "error",
        )

    kind = fields.String()
    organizationId = fields.String(attribute="organization_id")
    eventType = fields.String(attribute="event_type", allow_none=True)
