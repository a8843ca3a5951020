"""Schemas of the ScaleBox-style /v1 face: snake_case, wrapped in {success, data, timestamp}."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, missing

from shared.schemas import (
    DELETED_REASON_DOC,
    EXPIRES_AT_DOC,
    EXPIRES_AT_INPUT_DOC,
    FAILING_DOC,
    ORDERING_DOC,
    RATE_DOC,
    RESOURCE_ID_DOC,
    RESOURCE_ID_FIXED_DOC,
    RESOURCE_ID_INPUT_DOC,
    MaskedHeaders,
    Timestamp,
    filter_field,
)

from ..context import current_principal
from ..fields import HeadersInput, IsoDateTime


class V1EndpointCreateSchema(Schema):
    url = fields.String(required=True)
    event_types = fields.List(fields.String(), required=True)
    description = fields.String(allow_none=True)
    scope = fields.String()
    timeout_seconds = fields.Integer(strict=True)
    max_retries = fields.Integer(strict=True)
    headers = HeadersInput()
    filter = filter_field()
    resource_id = fields.String(
        allow_none=True,
        metadata={"description": RESOURCE_ID_INPUT_DOC},
    )
    expires_at = IsoDateTime(
        allow_none=True,
        metadata={"description": EXPIRES_AT_INPUT_DOC},
    )
    ordering = fields.String(metadata={"description": ORDERING_DOC})
    rate_limit = fields.Integer(strict=True, allow_none=True, metadata={"description": RATE_DOC})


class V1EndpointUpdateSchema(Schema):
    url = fields.String()
    event_types = fields.List(fields.String())
    is_active = fields.Boolean(truthy={True}, falsy={False})
    description = fields.String(allow_none=True)
    timeout_seconds = fields.Integer(strict=True)
    max_retries = fields.Integer(strict=True)
    scope = fields.String()
    payload_format = fields.String()
    headers = HeadersInput()
    filter = filter_field()
    # Set at creation only: named here so that the answer says so (docs/api.md §11.4).
    resource_id = fields.Raw(allow_none=True, metadata={"description": RESOURCE_ID_FIXED_DOC})
    expires_at = IsoDateTime(
        allow_none=True,
        metadata={"description": EXPIRES_AT_INPUT_DOC},
    )
    ordering = fields.String(metadata={"description": ORDERING_DOC})
    rate_limit = fields.Integer(strict=True, allow_none=True, metadata={"description": RATE_DOC})


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


class AdminOnlyString(fields.String):
    """A string that root and admin callers see; for a member the field is absent, not null."""

    def serialize(self, attr: str, obj: Any, accessor: Any = None, **kwargs) -> Any:
        """The value, or ``missing`` (left out of the answer) for a member."""
        if not current_principal().is_admin:
            return missing
        return super().serialize(attr, obj, accessor, **kwargs)


class V1EndpointSchema(Schema):
    """An endpoint with its delivery figures (``services.endpoint_stats.EndpointWithStats``)."""

    endpoint_id = fields.String(attribute="endpoint.id")
    url = fields.String(attribute="endpoint.url")
    event_types = fields.List(fields.String(), attribute="endpoint.event_types")
    is_active = fields.Boolean(attribute="endpoint.is_active")
    description = fields.String(attribute="endpoint.description", allow_none=True)
    timeout_seconds = fields.Integer(attribute="endpoint.timeout_seconds")
    max_retries = fields.Integer(attribute="endpoint.max_retries")
    scope = fields.String(attribute="endpoint.scope")
    payload_format = fields.String(attribute="endpoint.payload_format")
    headers = MaskedHeaders(attribute="endpoint.headers_encrypted")
    filter = filter_field(attribute="endpoint.filter")
    ordering = fields.String(attribute="endpoint.ordering", metadata={"description": ORDERING_DOC})
    rate_limit = fields.Integer(
        attribute="endpoint.rate_limit", allow_none=True, metadata={"description": RATE_DOC}
    )
    total_deliveries = fields.Integer(attribute="stats.total")
    successful_deliveries = fields.Integer(attribute="stats.successful")
    failed_deliveries = fields.Integer(attribute="stats.failed")
    last_delivery_at = Timestamp(attribute="stats.last_delivery_at", allow_none=True)
    last_success_at = Timestamp(attribute="stats.last_success_at", allow_none=True)
    last_failure_at = Timestamp(attribute="stats.last_failure_at", allow_none=True)
    created_at = Timestamp(attribute="endpoint.created_at")
    updated_at = Timestamp(attribute="endpoint.updated_at")
    user_id = fields.String(attribute="endpoint.user_id", allow_none=True)
    resource_id = fields.String(
        attribute="endpoint.resource_id",
        allow_none=True,
        metadata={"description": RESOURCE_ID_DOC},
    )
    expires_at = Timestamp(
        attribute="endpoint.expires_at",
        allow_none=True,
        metadata={"description": EXPIRES_AT_DOC},
    )
    deleted_reason = fields.String(
        attribute="endpoint.deleted_reason",
        allow_none=True,
        metadata={"description": DELETED_REASON_DOC},
    )
    failing = fields.Nested(
        lambda: V1FailingNoticeSchema(),
        attribute="endpoint.failing_notice",
        allow_none=True,
        metadata={"description": FAILING_DOC},
    )
    # Whose account the endpoint is in.
    account_id = AdminOnlyString(attribute="endpoint.organization_id")


class V1FailingNoticeSchema(Schema):
    """Why an endpoint is reported failing: its streak and last failure."""

    since = Timestamp(allow_none=True)
    notified_at = Timestamp()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)


class V1CreatedEndpointSchema(V1EndpointSchema):
    """A new endpoint with its signing secret, shown only in this answer."""

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
    attempt_number = fields.Integer(dump_only=True)
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
