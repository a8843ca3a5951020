"""Schemas of the Daytona-style /api/webhooks face: camelCase, plain JSON (docs/api.md §6.2)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.schemas import (
    DELIVERY_STATUSES,
    EXPIRES_AT_INPUT_DOC,
    ORDERING_DOC,
    RATE_DOC,
    RESOURCE_ID_FIXED_DOC,
    RESOURCE_ID_INPUT_DOC,
    AttemptSchema,
    EndpointSchema,
    MessageDeliverySchema,
    MessageSchema,
    Timestamp,
    filter_field,
    through,
)
from shared.services.endpoint_flow import ORDERINGS, RATE_LIMIT_RANGE
from shared.services.endpoints import PAYLOAD_FORMATS, RETRIES_RANGE, TIMEOUT_RANGE
from shared.services.ingest import EVENT_ID_MAX

from ..fields import HeadersInput, IsoDateTime

# Bounds on free text and ids; the services check the same limits and say so in words.
NAME_MAX = 200
DESCRIPTION_MAX = 2000
URL_MAX = 2048
ID_MAX = 64
EVENT_TYPE_MAX = 128
CURSOR_MAX = 512


def _storable(value: str) -> None:
    # PostgreSQL text holds neither NUL nor lone surrogates (valid in JSON input): refuse
    # them up front with a 400 rather than fail on the insert.
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be valid Unicode text (no lone surrogates)") from None


def _storable_json(value: object) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _storable(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _storable(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def text_field(*, max_length: int | None = None, **kwargs) -> fields.String:
    """A JSON string that PostgreSQL can store, optionally bounded."""
    checks = [_storable]
    if max_length is not None:
        checks.append(validate.Length(max=max_length))
    return fields.String(validate=checks, **kwargs)


# ---- request bodies ------------------------------------------------------------------------


def _ordering_field() -> fields.Field:
    return fields.String(validate=validate.OneOf(ORDERINGS), metadata={"description": ORDERING_DOC})


def _rate_limit_field() -> fields.Field:
    return fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(*RATE_LIMIT_RANGE),
        metadata={"description": RATE_DOC},
    )


class EndpointCreateSchema(Schema):
    url = text_field(required=True, max_length=URL_MAX)
    eventTypes = fields.List(text_field(max_length=EVENT_TYPE_MAX), required=True)
    description = text_field(allow_none=True, max_length=DESCRIPTION_MAX)
    name = text_field(allow_none=True, max_length=NAME_MAX)
    headers = HeadersInput()
    filter = filter_field()
    resourceId = text_field(
        allow_none=True,
        metadata={"description": RESOURCE_ID_INPUT_DOC},
    )
    expiresAt = IsoDateTime(
        allow_none=True,
        metadata={"description": EXPIRES_AT_INPUT_DOC},
    )
    ordering = _ordering_field()
    rateLimit = _rate_limit_field()


class EndpointUpdateSchema(Schema):
    url = text_field(max_length=URL_MAX)
    eventTypes = fields.List(text_field(max_length=EVENT_TYPE_MAX))
    description = text_field(allow_none=True, max_length=DESCRIPTION_MAX)
    name = text_field(allow_none=True, max_length=NAME_MAX)
    status = fields.String(validate=validate.OneOf(("active", "disabled")))
    payloadFormat = fields.String(validate=validate.OneOf(PAYLOAD_FORMATS))
    timeoutSeconds = fields.Integer(strict=True, validate=validate.Range(*TIMEOUT_RANGE))
    maxRetries = fields.Integer(strict=True, validate=validate.Range(*RETRIES_RANGE))
    headers = HeadersInput()
    filter = filter_field()
    # Set at creation only: named here so that the answer says so (docs/api.md §11.4).
    resourceId = fields.Raw(allow_none=True, metadata={"description": RESOURCE_ID_FIXED_DOC})
    expiresAt = IsoDateTime(
        allow_none=True,
        metadata={"description": EXPIRES_AT_INPUT_DOC},
    )
    ordering = _ordering_field()
    rateLimit = _rate_limit_field()


class RecoverSchema(Schema):
    since = IsoDateTime(required=True)
    until = IsoDateTime(allow_none=True)


class TestSendSchema(Schema):
    eventType = text_field(required=True, max_length=EVENT_TYPE_MAX)


class SendSchema(Schema):
    eventType = text_field(required=True, max_length=EVENT_TYPE_MAX)
    payload = fields.Dict(required=True, validate=_storable_json)
    eventId = text_field(max_length=EVENT_ID_MAX)


# ---- query strings -------------------------------------------------------------------------


class EndpointQueryArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # Capped at PostgreSQL's integer range, so that no offset overflows the query.
    offset = fields.Integer(validate=validate.Range(0, 2**31 - 1))
    limit = fields.Integer(validate=validate.Range(1, 500))


class MessageQueryArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    eventType = text_field(max_length=EVENT_TYPE_MAX)
    endpointId = text_field(max_length=ID_MAX)
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    before = IsoDateTime()
    after = IsoDateTime()
    limit = fields.Integer(validate=validate.Range(1, 200))
    cursor = text_field(max_length=CURSOR_MAX)


# ---- answers -------------------------------------------------------------------------------


# The endpoint, delivery, message and attempt shapes live in shared.schemas: the live
# socket and the CLI render them too, in processes without Flask.


class CreatedEndpointSchema(through(EndpointSchema, "endpoint")):
    """A new endpoint (``services.endpoints.NewEndpoint``) with its secret, shown only here."""

    secret = fields.String()


class EndpointListSchema(Schema):
    items = fields.List(fields.Nested(EndpointSchema))
    total = fields.Integer()


class EndpointItemsSchema(Schema):
    items = fields.List(fields.Nested(EndpointSchema))


class SecretSchema(Schema):
    secret = fields.String()


class RecoveredSchema(Schema):
    recovered = fields.Integer()


class SentMessageSchema(through(MessageSchema, "message")):
    """An accepted send (``services.ingest.Accepted``): a repeated eventId gets the first."""

    duplicate = fields.Boolean()


class MessageDetailSchema(through(MessageSchema, "message")):
    """A message with its deliveries (``services.messages.MessageWithDeliveries``)."""

    deliveries = fields.List(fields.Nested(MessageDeliverySchema))


class MessagePageSchema(Schema):
    items = fields.List(fields.Nested(MessageSchema))
    nextCursor = fields.String(attribute="next_cursor", allow_none=True)


class AttemptListSchema(Schema):
    items = fields.List(fields.Nested(AttemptSchema))


class ResendSchema(Schema):
    deliveryId = fields.String(attribute="delivery_id")
    queued = fields.Boolean()


class PreconfiguredConfigSchema(Schema):
    category = fields.String()
    description = fields.String()
    eventTypes = fields.List(fields.String(), attribute="event_types")
    urlTemplate = fields.String(attribute="url_template", allow_none=True)


class PreconfiguredConfigListSchema(Schema):
    items = fields.List(fields.Nested(PreconfiguredConfigSchema))


class EventTypeSchema(Schema):
    """A catalog type with its example (``payloads.DocumentedEventType``)."""

    name = fields.String(attribute="event_type.name")
    description = fields.String(attribute="event_type.description")
    category = fields.String(attribute="event_type.category")
    accountLevel = fields.Boolean(attribute="event_type.account_level")
    example = fields.Dict()
    v1Types = fields.List(fields.String(), attribute="event_type.v1_types")
    e2bLabels = fields.List(fields.String(), attribute="event_type.e2b_labels")


class EventTypeListSchema(Schema):
    items = fields.List(fields.Nested(EventTypeSchema))


class InitializationStatusSchema(Schema):
    organizationId = fields.String(attribute="organization_id")
    status = fields.String(metadata={"enum": ["pending", "initialized", "failed"]})
    applicationCreated = fields.Boolean(attribute="application_created")
    endpointsCreated = fields.Boolean(attribute="endpoints_created")
    endpointIds = fields.List(fields.String(), attribute="endpoint_ids")
    lastError = fields.String(attribute="last_error", allow_none=True)
    retryCount = fields.Integer(attribute="retry_count")
    createdAt = Timestamp(attribute="created_at")
    updatedAt = Timestamp(attribute="updated_at")


class InitializationStatsSchema(Schema):
    total = fields.Integer()
    initialized = fields.Integer()
    failed = fields.Integer()
    pending = fields.Integer()


class RetriedSchema(Schema):
    retried = fields.Integer()


class UpdateReportSchema(Schema):
    organizations = fields.Integer()
    created = fields.Integer()
    updated = fields.Integer()


class DatabaseHealthSchema(Schema):
    ok = fields.Boolean()
    latencyMs = fields.Float(allow_none=True)


class OkSchema(Schema):
    ok = fields.Boolean()


class WorkersHealthSchema(Schema):
    ok = fields.Boolean()
    count = fields.Integer()


class ServiceStatusSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "degraded"]})
    database = fields.Nested(DatabaseHealthSchema)
    broker = fields.Nested(OkSchema)
    workers = fields.Nested(WorkersHealthSchema)


class DaytonaErrorSchema(Schema):
    statusCode = fields.Integer()
    error = fields.String()
    message = fields.String()
