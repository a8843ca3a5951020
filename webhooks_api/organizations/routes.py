"""The Daytona-style organization service at /api/webhooks (docs/api.md §6.2).

Routes under ``/organizations/{organizationId}`` take an organization key or JWT; a
caller of another organization gets 404 for everything there. The cross-organization
routes at the end take the platform token only.
"""

from __future__ import annotations

from flask.views import MethodView

from shared.schemas import EndpointSchema, EndpointStatsSchema, MessageSchema
from shared.services import (
    deliveries,
    endpoint_secrets,
    endpoint_stats,
    endpoints,
    ingest,
    messages,
)

from ..context import db
from . import setup_routes  # noqa: F401 - its routes join the blueprint before it is registered
from .blueprint import ORG, admin_of, blp, documented_errors, member_of
from .schemas import (
    AttemptListSchema,
    CreatedEndpointSchema,
    EndpointCreateSchema,
    EndpointListSchema,
    EndpointQueryArgsSchema,
    EndpointUpdateSchema,
    MessageDetailSchema,
    MessagePageSchema,
    MessageQueryArgsSchema,
    RecoveredSchema,
    RecoverSchema,
    ResendSchema,
    SecretSchema,
    SendSchema,
    SentMessageSchema,
    TestSendSchema,
)

# PATCH body name -> update_endpoint field; `status` is mapped separately.
_PATCH_FIELDS = {
    "url": "url",
    "eventTypes": "event_types",
    "description": "description",
    "name": "name",
    "payloadFormat": "payload_format",
    "timeoutSeconds": "timeout_seconds",
    "maxRetries": "max_retries",
    "headers": "headers",
    "filter": "filter",
    "resourceId": "resource_id",
    "expiresAt": "expires_at",
    "ordering": "ordering",
    "rateLimit": "rate_limit",
}


# ---- endpoints ---------------------------------------------------------------------------


@blp.route(f"{ORG}/endpoints")
class Endpoints(MethodView):
    @blp.arguments(EndpointQueryArgsSchema, location="query", error_status_code=400)
    @blp.response(200, EndpointListSchema)
    @documented_errors(400, 401, 404)
    def get(self, args: dict, organizationId: str):  # noqa: N803
        """List the organization's webhook endpoints you can see"""
        principal = member_of(organizationId)
        items, total = endpoints.list_endpoints(
            db(), principal=principal, offset=args.get("offset", 0), limit=args.get("limit")
        )
        return {"items": items, "total": total}

    @blp.arguments(EndpointCreateSchema, error_status_code=400)
    @blp.response(201, CreatedEndpointSchema)
    @documented_errors(400, 401, 403, 404)
    def post(self, body: dict, organizationId: str):  # noqa: N803
        """Create an account-wide webhook endpoint; its signing secret is shown only here"""
        principal = admin_of(organizationId)
        return endpoints.create_endpoint(
            db(),
            principal=principal,
            url=body["url"],
            event_types=body["eventTypes"],
            vocabulary="daytona",
            payload_format="daytona",
            scope="account",
            description=body.get("description"),
            name=body.get("name"),
            headers=body.get("headers"),
            payload_filter=body.get("filter"),
            resource_id=body.get("resourceId"),
            expires_at=body.get("expiresAt"),
            ordering=body.get("ordering", "none"),
            rate_limit=body.get("rateLimit"),
        )


@blp.route(f"{ORG}/endpoints/<endpointId>")
class EndpointById(MethodView):
    @blp.response(200, EndpointSchema)
    @documented_errors(401, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Get one webhook endpoint"""
        principal = member_of(organizationId)
        return endpoints.get_endpoint(db(), principal=principal, endpoint_id=endpointId)

    @blp.arguments(EndpointUpdateSchema, error_status_code=400)
    @blp.response(200, EndpointSchema)
    @documented_errors(400, 401, 403, 404)
    def patch(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Change any of url, eventTypes, description, name, status, payloadFormat and limits"""
        principal = admin_of(organizationId)
        changes = {_PATCH_FIELDS[key]: value for key, value in body.items() if key != "status"}
        if "status" in body:
            changes["is_active"] = body["status"] == "active"
        return endpoints.update_endpoint(
            db(), principal=principal, endpoint_id=endpointId, vocabulary="daytona", changes=changes
        )

    @blp.response(204)
    @documented_errors(401, 403, 404)
    def delete(self, organizationId: str, endpointId: str):  # noqa: N803
        """Delete a webhook endpoint; its pending deliveries are cancelled"""
        principal = admin_of(organizationId)
        endpoints.delete_endpoint(db(), principal=principal, endpoint_id=endpointId)


@blp.route(f"{ORG}/endpoints/<endpointId>/rotate-secret")
class EndpointRotateSecret(MethodView):
    @blp.response(200, SecretSchema)
    @documented_errors(401, 403, 404)
    def post(self, organizationId: str, endpointId: str):  # noqa: N803
        """Rotate the signing secret; the old one keeps signing alongside for 24 hours"""
        principal = admin_of(organizationId)
        secret = endpoint_secrets.rotate_secret(db(), principal=principal, endpoint_id=endpointId)
        return {"secret": secret}


@blp.route(f"{ORG}/endpoints/<endpointId>/secret")
class EndpointSecret(MethodView):
    @blp.response(200, SecretSchema)
    @documented_errors(401, 403, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Reveal the current signing secret (root only), e.g. of a preconfigured endpoint"""
        principal = member_of(organizationId)
        secret = endpoint_secrets.reveal_secret(db(), principal=principal, endpoint_id=endpointId)
        return {"secret": secret}


@blp.route(f"{ORG}/endpoints/<endpointId>/recover")
class EndpointRecover(MethodView):
    @blp.arguments(RecoverSchema, error_status_code=400)
    @blp.response(202, RecoveredSchema)
    @documented_errors(400, 401, 403, 404, 409)
    def post(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Attempt every failed delivery of the endpoint in [since, until) once more"""
        principal = admin_of(organizationId)
        count = deliveries.recover_failed(
            db(),
            principal=principal,
            endpoint_id=endpointId,
            since=body["since"],
            until=body.get("until"),
        )
        return {"recovered": count}


@blp.route(f"{ORG}/endpoints/<endpointId>/stats")
class EndpointStats(MethodView):
    @blp.response(200, EndpointStatsSchema)
    @documented_errors(401, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Delivery statistics of an endpoint"""
        principal = member_of(organizationId)
        session = db()
        endpoint = endpoints.get_endpoint(session, principal=principal, endpoint_id=endpointId)
        return endpoint_stats.endpoint_stats(session, [endpoint.id])[endpoint.id]


@blp.route(f"{ORG}/endpoints/<endpointId>/test")
class EndpointTest(MethodView):
    @blp.arguments(TestSendSchema, error_status_code=400)
    @blp.response(202, MessageSchema)
    @documented_errors(400, 401, 404, 409)
    def post(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Send an event type's example to this endpoint only, whatever it subscribes to"""
        principal = member_of(organizationId)
        return ingest.send_test(
            db(), principal=principal, endpoint_id=endpointId, event_type=body["eventType"]
        )


# ---- messages ----------------------------------------------------------------------------


@blp.route(f"{ORG}/send")
class Send(MethodView):
    @blp.arguments(SendSchema, error_status_code=400)
    @blp.response(202, SentMessageSchema)
    @blp.alt_response(200, schema=SentMessageSchema, success=True)
    @documented_errors(400, 401, 404)
    def post(self, body: dict, organizationId: str):  # noqa: N803
        """Send a custom event; a repeated eventId answers 200 with the first message"""
        principal = member_of(organizationId)
        accepted = ingest.send_custom(
            db(),
            principal=principal,
            organization_id=organizationId,
            event_type=body["eventType"],
            payload=body["payload"],
            event_id=body.get("eventId"),
        )
        return accepted, 200 if accepted.duplicate else 202


@blp.route(f"{ORG}/messages")
class Messages(MethodView):
    @blp.arguments(MessageQueryArgsSchema, location="query", error_status_code=400)
    @blp.response(200, MessagePageSchema)
    @documented_errors(400, 401, 404)
    def get(self, args: dict, organizationId: str):  # noqa: N803
        """List messages newest first, filtered and paged with a cursor"""
        principal = member_of(organizationId)
        items, next_cursor = messages.list_messages(
            db(),
            principal=principal,
            organization_id=organizationId,
            limit=args.get("limit", 50),
            cursor=args.get("cursor"),
            event_type=args.get("eventType"),
            endpoint_id=args.get("endpointId"),
            status=args.get("status"),
            before=args.get("before"),
            after=args.get("after"),
        )
        return {"items": items, "next_cursor": next_cursor}


@blp.route(f"{ORG}/messages/<messageId>")
class MessageById(MethodView):
    @blp.response(200, MessageDetailSchema)
    @documented_errors(401, 404)
    def get(self, organizationId: str, messageId: str):  # noqa: N803
        """Get a message with its deliveries"""
        principal = member_of(organizationId)
        return messages.get_message_with_deliveries(
            db(), principal=principal, organization_id=organizationId, message_id=messageId
        )


@blp.route(f"{ORG}/messages/<messageId>/attempts")
class MessageAttempts(MethodView):
    @blp.response(200, AttemptListSchema)
    @documented_errors(401, 404)
    def get(self, organizationId: str, messageId: str):  # noqa: N803
        """Every delivery attempt of a message, newest first"""
        principal = member_of(organizationId)
        session = db()
        message = messages.get_message(
            session, principal=principal, organization_id=organizationId, message_id=messageId
        )
        return {"items": messages.message_attempts(session, principal=principal, message=message)}


@blp.route(f"{ORG}/messages/<messageId>/endpoints/<endpointId>/resend")
class MessageResend(MethodView):
    @blp.response(202, ResendSchema)
    @documented_errors(400, 401, 404, 409)
    def post(self, organizationId: str, messageId: str, endpointId: str):  # noqa: N803
        """Send a message to an endpoint once more, now (trigger manual)"""
        principal = member_of(organizationId)
        delivery = deliveries.request_resend(
            db(),
            principal=principal,
            organization_id=organizationId,
            message_id=messageId,
            endpoint_id=endpointId,
        )
        return {"delivery_id": delivery.id, "queued": True}
