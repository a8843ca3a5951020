"""Schemas of the ScaleBox-style /v1 face: snake_case, wrapped in {success, data, timestamp}."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields

from ..fields import Timestamp


class V1EndpointCreateSchema(Schema):
    url = fields.String(required=True)
    event_types = fields.List(fields.String(), required=True)
    description = fields.String(allow_none=True)
    scope = fields.String()
    timeout_seconds = fields.Integer(strict=True)
    max_retries = fields.Integer(strict=True)


class V1EndpointUpdateSchema(Schema):
    url = fields.String()
    event_types = fields.List(fields.String())
    is_active = fields.Boolean(truthy={True}, falsy={False})
    description = fields.String(allow_none=True)
    timeout_seconds = fields.Integer(strict=True)
    max_retries = fields.Integer(strict=True)
    scope = fields.String()
    payload_format = fields.String()


class V1ListArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer()
    limit = fields.Integer()
    page_size = fields.Integer()
    offset = fields.Integer()
    skip = fields.Integer()


class V1DeliveryArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer()


class V1RecoverSchema(Schema):
    since = fields.String(required=True)
    until = fields.String(allow_none=True)


class V1EndpointSchema(Schema):
    endpoint_id = fields.String()
    url = fields.String()
    event_types = fields.List(fields.String())
    is_active = fields.Boolean()
    description = fields.String(allow_none=True)
    timeout_seconds = fields.Integer()
    max_retries = fields.Integer()
    scope = fields.String()
    payload_format = fields.String()
    total_deliveries = fields.Integer()
    successful_deliveries = fields.Integer()
    failed_deliveries = fields.Integer()
    last_delivery_at = Timestamp(allow_none=True)
    last_success_at = Timestamp(allow_none=True)
    last_failure_at = Timestamp(allow_none=True)
    created_at = Timestamp()
    updated_at = Timestamp()
    user_id = fields.String(allow_none=True)
    account_id = fields.String()


class V1CreatedEndpointSchema(V1EndpointSchema):
    secret = fields.String()


class V1PaginationSchema(Schema):
    page = fields.Integer()
    limit = fields.Integer()
    total = fields.Integer()
    total_pages = fields.Integer()


class V1EndpointListSchema(Schema):
    webhooks = fields.List(fields.Nested(V1EndpointSchema))
    pagination = fields.Nested(V1PaginationSchema)


class V1DeliverySchema(Schema):
    delivery_id = fields.String(attribute="id")
    event_type = fields.String()
    event_id = fields.String(attribute="message_id")
    status = fields.String()
    http_status_code = fields.Integer(allow_none=True)
    attempt_number = fields.Function(lambda d: d.attempt_count + d.extra_attempt_count)
    max_attempts = fields.Integer()
    next_retry_at = Timestamp(attribute="next_attempt_at", allow_none=True)
    delivered_at = Timestamp(allow_none=True)
    failed_at = Timestamp(allow_none=True)
    error_message = fields.String(allow_none=True)
    created_at = Timestamp()


class V1DeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(V1DeliverySchema))


class V1SecretSchema(Schema):
    secret = fields.String()


class V1RecoveredSchema(Schema):
    recovered = fields.Integer()


def envelope(data_schema: type[Schema], name: str) -> type[Schema]:
    """The /v1 success envelope around a data schema."""
    return Schema.from_dict(
        {
            "success": fields.Boolean(),
            "data": fields.Nested(data_schema),
            "timestamp": fields.String(),
        },
        name=name,
    )


class V1DeletedSchema(Schema):
    success = fields.Boolean()
    message = fields.String()
    timestamp = fields.String()


V1EndpointEnvelope = envelope(V1EndpointSchema, "V1EndpointEnvelope")
V1CreatedEndpointEnvelope = envelope(V1CreatedEndpointSchema, "V1CreatedEndpointEnvelope")
V1EndpointListEnvelope = envelope(V1EndpointListSchema, "V1EndpointListEnvelope")
V1DeliveryListEnvelope = envelope(V1DeliveryListSchema, "V1DeliveryListEnvelope")
V1SecretEnvelope = envelope(V1SecretSchema, "V1SecretEnvelope")
V1RecoveredEnvelope = envelope(V1RecoveredSchema, "V1RecoveredEnvelope")
