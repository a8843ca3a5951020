"""The Daytona-style organization service at /api/webhooks (docs/api.md §6.2).

Routes under ``/organizations/{organizationId}`` take an organization key or JWT; a
caller of another organization gets 404 for everything there. The cross-organization
routes at the end take the platform token only.
"""

from __future__ import annotations

from collections.abc import Callable

from flask.views import MethodView
from flask_smorest import Blueprint

from shared import payloads
from shared.db import get_sessionmaker
from shared.schemas import EndpointSchema, EndpointStatsSchema, MessageSchema
from shared.services import deliveries, endpoints, health, ingest, initialization, messages
from shared.services.auth import Principal
from webhooks_worker import health as probes

from ..context import current_principal, db, require_platform
from .schemas import (
    AttemptListSchema,
    CreatedEndpointSchema,
    DaytonaErrorSchema,
    EndpointCreateSchema,
    EndpointItemsSchema,
    EndpointListSchema,
    EndpointQueryArgsSchema,
    EndpointUpdateSchema,
    EventTypeListSchema,
    InitializationStatsSchema,
    InitializationStatusSchema,
    MessageDetailSchema,
    MessagePageSchema,
    MessageQueryArgsSchema,
    PreconfiguredConfigListSchema,
    RecoveredSchema,
    RecoverSchema,
    ResendSchema,
    RetriedSchema,
    SecretSchema,
    SendSchema,
    SentMessageSchema,
    ServiceStatusSchema,
    TestSendSchema,
    UpdateReportSchema,
)

blp = Blueprint(
    "organizations",
    __name__,
    url_prefix="/api/webhooks",
    description="Daytona-style organization webhook service",
)

ORG = "/organizations/<organizationId>"
# The instant of every example in Daytona's docs, reused so that the catalog's
# examples read exactly like the documented payloads.
EXAMPLE_TIMESTAMP = "2025-12-19T10:30:00.000Z"
# An operator's retry of every failed initialization runs at most this many per call.
OPERATOR_RETRY_LIMIT = 1000

# PATCH body name -> update_endpoint field; `status` is mapped separately.
_PATCH_FIELDS = {
    "url": "url",
    "eventTypes": "event_types",
    "description": "description",
    "name": "name",
    "payloadFormat": "payload_format",
    "timeoutSeconds": "timeout_seconds",
    "maxRetries": "max_retries",
    "ordering": "ordering",
    "rateLimit": "rate_limit",
}


def _errors(*codes: int) -> Callable:
    """Document the error answers of a route, in this face's error shape."""

    def decorator(func: Callable) -> Callable:
        for code in codes:
            func = blp.alt_response(code, schema=DaytonaErrorSchema)(func)
        return func

    return decorator


def _member(organization_id: str) -> Principal:
    """The caller, who must belong to the organization in the path (404 otherwise)."""
    principal = current_principal()
    principal.check_organization(organization_id)
    return principal


def _admin(organization_id: str) -> Principal:
    """A root or admin caller of the organization in the path."""
    principal = _member(organization_id)
    principal.require_admin()
    return principal


# ---- endpoints ---------------------------------------------------------------------------


@blp.route(f"{ORG}/endpoints")
class Endpoints(MethodView):
    @blp.arguments(EndpointQueryArgsSchema, location="query", error_status_code=400)
    @blp.response(200, EndpointListSchema)
    @_errors(400, 401, 404)
    def get(self, args: dict, organizationId: str):  # noqa: N803
        """List the organization's webhook endpoints you can see"""
        principal = _member(organizationId)
        items, total = endpoints.list_endpoints(
            db(), principal=principal, offset=args.get("offset", 0), limit=args.get("limit")
        )
        return {"items": items, "total": total}

    @blp.arguments(EndpointCreateSchema, error_status_code=400)
    @blp.response(201, CreatedEndpointSchema)
    @_errors(400, 401, 403, 404)
    def post(self, body: dict, organizationId: str):  # noqa: N803
        """Create an account-wide webhook endpoint; its signing secret is shown only here"""
        principal = _admin(organizationId)
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
            ordering=body.get("ordering", "none"),
            rate_limit=body.get("rateLimit"),
        )


@blp.route(f"{ORG}/endpoints/<endpointId>")
class EndpointById(MethodView):
    @blp.response(200, EndpointSchema)
    @_errors(401, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Get one webhook endpoint"""
        principal = _member(organizationId)
        return endpoints.get_endpoint(db(), principal=principal, endpoint_id=endpointId)

    @blp.arguments(EndpointUpdateSchema, error_status_code=400)
    @blp.response(200, EndpointSchema)
    @_errors(400, 401, 403, 404)
    def patch(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Change any of url, eventTypes, description, name, status, payloadFormat and limits"""
        principal = _admin(organizationId)
        changes = {_PATCH_FIELDS[key]: value for key, value in body.items() if key != "status"}
        if "status" in body:
            changes["is_active"] = body["status"] == "active"
        return endpoints.update_endpoint(
            db(), principal=principal, endpoint_id=endpointId, vocabulary="daytona", changes=changes
        )

    @blp.response(204)
    @_errors(401, 403, 404)
    def delete(self, organizationId: str, endpointId: str):  # noqa: N803
        """Delete a webhook endpoint; its pending deliveries are cancelled"""
        principal = _admin(organizationId)
        endpoints.delete_endpoint(db(), principal=principal, endpoint_id=endpointId)


@blp.route(f"{ORG}/endpoints/<endpointId>/rotate-secret")
class EndpointRotateSecret(MethodView):
    @blp.response(200, SecretSchema)
    @_errors(401, 403, 404)
    def post(self, organizationId: str, endpointId: str):  # noqa: N803
        """Rotate the signing secret; the old one keeps signing alongside for 24 hours"""
        principal = _admin(organizationId)
        secret = endpoints.rotate_secret(db(), principal=principal, endpoint_id=endpointId)
        return {"secret": secret}


@blp.route(f"{ORG}/endpoints/<endpointId>/secret")
class EndpointSecret(MethodView):
    @blp.response(200, SecretSchema)
    @_errors(401, 403, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Reveal the current signing secret (root only), e.g. of a preconfigured endpoint"""
        principal = _member(organizationId)
        secret = endpoints.reveal_secret(db(), principal=principal, endpoint_id=endpointId)
        return {"secret": secret}


@blp.route(f"{ORG}/endpoints/<endpointId>/recover")
class EndpointRecover(MethodView):
    @blp.arguments(RecoverSchema, error_status_code=400)
    @blp.response(202, RecoveredSchema)
    @_errors(400, 401, 403, 404, 409)
    def post(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Attempt every failed delivery of the endpoint in [since, until) once more"""
        principal = _admin(organizationId)
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
    @_errors(401, 404)
    def get(self, organizationId: str, endpointId: str):  # noqa: N803
        """Delivery statistics of an endpoint"""
        principal = _member(organizationId)
        session = db()
        endpoint = endpoints.get_endpoint(session, principal=principal, endpoint_id=endpointId)
        return endpoints.endpoint_stats(session, [endpoint.id])[endpoint.id]


@blp.route(f"{ORG}/endpoints/<endpointId>/test")
class EndpointTest(MethodView):
    @blp.arguments(TestSendSchema, error_status_code=400)
    @blp.response(202, MessageSchema)
    @_errors(400, 401, 404, 409)
    def post(self, body: dict, organizationId: str, endpointId: str):  # noqa: N803
        """Send an event type's example to this endpoint only, whatever it subscribes to"""
        principal = _member(organizationId)
        return ingest.send_test(
            db(), principal=principal, endpoint_id=endpointId, event_type=body["eventType"]
        )


# ---- messages ----------------------------------------------------------------------------


@blp.route(f"{ORG}/send")
class Send(MethodView):
    @blp.arguments(SendSchema, error_status_code=400)
    @blp.response(202, SentMessageSchema)
    @blp.alt_response(200, schema=SentMessageSchema, success=True)
    @_errors(400, 401, 404)
    def post(self, body: dict, organizationId: str):  # noqa: N803
        """Send a custom event; a repeated eventId answers 200 with the first message"""
        principal = _member(organizationId)
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
    @_errors(400, 401, 404)
    def get(self, args: dict, organizationId: str):  # noqa: N803
        """List messages newest first, filtered and paged with a cursor"""
        principal = _member(organizationId)
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
    @_errors(401, 404)
    def get(self, organizationId: str, messageId: str):  # noqa: N803
        """Get a message with its deliveries"""
        principal = _member(organizationId)
        return messages.get_message_with_deliveries(
            db(), principal=principal, organization_id=organizationId, message_id=messageId
        )


@blp.route(f"{ORG}/messages/<messageId>/attempts")
class MessageAttempts(MethodView):
    @blp.response(200, AttemptListSchema)
    @_errors(401, 404)
    def get(self, organizationId: str, messageId: str):  # noqa: N803
        """Every delivery attempt of a message, newest first"""
        principal = _member(organizationId)
        session = db()
        message = messages.get_message(
            session, principal=principal, organization_id=organizationId, message_id=messageId
        )
        return {"items": messages.message_attempts(session, principal=principal, message=message)}


@blp.route(f"{ORG}/messages/<messageId>/endpoints/<endpointId>/resend")
class MessageResend(MethodView):
    @blp.response(202, ResendSchema)
    @_errors(400, 401, 404, 409)
    def post(self, organizationId: str, messageId: str, endpointId: str):  # noqa: N803
        """Send a message to an endpoint once more, now (trigger manual)"""
        principal = _member(organizationId)
        delivery = deliveries.request_resend(
            db(),
            principal=principal,
            organization_id=organizationId,
            message_id=messageId,
            endpoint_id=endpointId,
        )
        return {"delivery_id": delivery.id, "queued": True}


# ---- preconfigured endpoints and initialization ------------------------------------------


@blp.route(f"{ORG}/preconfigured-endpoints")
class OrganizationPreconfigured(MethodView):
    @blp.response(200, EndpointItemsSchema)
    @_errors(401, 403, 404)
    def post(self, organizationId: str):  # noqa: N803
        """Create the organization's missing preconfigured endpoints and list them all"""
        _admin(organizationId)
        items = initialization.ensure_preconfigured_endpoints(db(), organization_id=organizationId)
        return {"items": items}


@blp.route(f"{ORG}/initialize")
class OrganizationInitialize(MethodView):
    @blp.response(202, InitializationStatusSchema)
    @_errors(401, 403, 404)
    def post(self, organizationId: str):  # noqa: N803
        """Run the organization's webhook initialization again (never duplicates)"""
        _admin(organizationId)
        # Its own transactions: a failure is recorded even though the run is rolled back.
        return initialization.run_initialization(get_sessionmaker(), organization_id=organizationId)


@blp.route(f"{ORG}/initialization-status")
class OrganizationInitializationStatus(MethodView):
    @blp.response(200, InitializationStatusSchema)
    @_errors(401, 403, 404)
    def get(self, organizationId: str):  # noqa: N803
        """Where the organization's webhook initialization stands"""
        _admin(organizationId)
        return initialization.get_status(db(), organization_id=organizationId)


@blp.route("/preconfigured-endpoints")
class PreconfiguredConfigs(MethodView):
    @blp.response(200, PreconfiguredConfigListSchema)
    @_errors(401)
    def get(self):
        """The preconfigured endpoint categories every organization gets"""
        current_principal()
        return {"items": initialization.preconfigured_configs()}


@blp.route("/event-types")
class EventTypes(MethodView):
    @blp.response(200, EventTypeListSchema)
    @_errors(401)
    def get(self):
        """The event catalog, each type with its names on every face and a full example"""
        principal = current_principal()
        items = payloads.documented_catalog(
            organization_id=principal.organization_id, timestamp=EXAMPLE_TIMESTAMP
        )
        return {"items": items}


# ---- platform routes ---------------------------------------------------------------------


@blp.route("/initialization-stats")
class InitializationStats(MethodView):
    @blp.response(200, InitializationStatsSchema)
    @_errors(401, 403)
    def get(self):
        """How many organizations are initialized, failed or pending (platform token)"""
        require_platform()
        return initialization.initialization_stats(db())


@blp.route("/retry-failed-initializations")
class RetryFailedInitializations(MethodView):
    @blp.response(200, RetriedSchema)
    @_errors(401, 403)
    def post(self):
        """Run every failed organization initialization again now (platform token)"""
        require_platform()
        results = initialization.retry_failed(
            get_sessionmaker(), due_only=False, limit=OPERATOR_RETRY_LIMIT
        )
        return {"retried": len(results)}


@blp.route("/update-all-endpoints")
class UpdateAllEndpoints(MethodView):
    @blp.response(200, UpdateReportSchema)
    @_errors(401, 403)
    def post(self):
        """Re-apply the preconfigured endpoint table to every organization (platform token)"""
        require_platform()
        return initialization.update_all_endpoints(db())


@blp.route("/status")
class ServiceStatus(MethodView):
    @blp.response(200, ServiceStatusSchema)
    @blp.alt_response(503, schema=ServiceStatusSchema, description="A part is unhealthy")
    @_errors(401, 403)
    def get(self):
        """Health of the database, the broker and the workers (platform token)"""
        require_platform()
        status = health.service_status(
            db(), broker_ok=probes.broker_ok, worker_count=probes.worker_count
        )
        body = {
            "status": "ok" if status.healthy else "degraded",
            "database": {"ok": status.database_ok, "latencyMs": status.database_latency_ms},
            "broker": {"ok": status.broker_ok},
            "workers": {"ok": status.workers_ok, "count": status.worker_count},
        }
        if status.healthy:
            return body, 200
        # A database outage answers 503 with Retry-After on every route (docs/api.md §10).
        headers = {} if status.database_ok else {"Retry-After": "5"}
        return body, 503, headers
