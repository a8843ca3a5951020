"""The organization service face: preconfigured endpoints, initialization, the catalog, and
the cross-organization routes, which take the platform token only (docs/api.md §6.2)."""

from __future__ import annotations

from flask.views import MethodView

from shared import payloads
from shared.db import get_sessionmaker
from shared.services import health, initialization
from webhooks_worker import health as probes

from ..context import current_principal, db, require_platform
from .blueprint import ORG, admin_of, blp, documented_errors
from .schemas import (
    EndpointItemsSchema,
    EventTypeListSchema,
    InitializationStatsSchema,
    InitializationStatusSchema,
    PreconfiguredConfigListSchema,
    RetriedSchema,
    ServiceStatusSchema,
    UpdateReportSchema,
)

# The instant of every example in Daytona's docs, reused so that the catalog's
# examples read exactly like the documented payloads.
EXAMPLE_TIMESTAMP = "2025-12-19T10:30:00.000Z"
# An operator's retry of every failed initialization runs at most this many per call.
OPERATOR_RETRY_LIMIT = 1000

# ---- preconfigured endpoints and initialization ------------------------------------------


@blp.route(f"{ORG}/preconfigured-endpoints")
class OrganizationPreconfigured(MethodView):
    @blp.response(200, EndpointItemsSchema)
    @documented_errors(401, 403, 404)
    def post(self, organizationId: str):  # noqa: N803
        """Create the organization's missing preconfigured endpoints and list them all"""
        admin_of(organizationId)
        items = initialization.ensure_preconfigured_endpoints(db(), organization_id=organizationId)
        return {"items": items}


@blp.route(f"{ORG}/initialize")
class OrganizationInitialize(MethodView):
    @blp.response(202, InitializationStatusSchema)
    @documented_errors(401, 403, 404)
    def post(self, organizationId: str):  # noqa: N803
        """Run the organization's webhook initialization again (never duplicates)"""
        admin_of(organizationId)
        # Its own transactions: a failure is recorded even though the run is rolled back.
        return initialization.run_initialization(get_sessionmaker(), organization_id=organizationId)


@blp.route(f"{ORG}/initialization-status")
class OrganizationInitializationStatus(MethodView):
    @blp.response(200, InitializationStatusSchema)
    @documented_errors(401, 403, 404)
    def get(self, organizationId: str):  # noqa: N803
        """Where the organization's webhook initialization stands"""
        admin_of(organizationId)
        return initialization.get_status(db(), organization_id=organizationId)


@blp.route("/preconfigured-endpoints")
class PreconfiguredConfigs(MethodView):
    @blp.response(200, PreconfiguredConfigListSchema)
    @documented_errors(401)
    def get(self):
        """The preconfigured endpoint categories every organization gets"""
        current_principal()
        return {"items": initialization.preconfigured_configs()}


@blp.route("/event-types")
class EventTypes(MethodView):
    @blp.response(200, EventTypeListSchema)
    @documented_errors(401)
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
    @documented_errors(401, 403)
    def get(self):
        """How many organizations are initialized, failed or pending (platform token)"""
        require_platform()
        return initialization.initialization_stats(db())


@blp.route("/retry-failed-initializations")
class RetryFailedInitializations(MethodView):
    @blp.response(200, RetriedSchema)
    @documented_errors(401, 403)
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
    @documented_errors(401, 403)
    def post(self):
        """Re-apply the preconfigured endpoint table to every organization (platform token)"""
        require_platform()
        return initialization.update_all_endpoints(db())


@blp.route("/status")
class ServiceStatus(MethodView):
    @blp.response(200, ServiceStatusSchema)
    @blp.alt_response(503, schema=ServiceStatusSchema, description="A part is unhealthy")
    @documented_errors(401, 403)
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
