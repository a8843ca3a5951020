"""The ScaleBox-style management face at /v1/webhooks (docs/api.md §6.1)."""

from __future__ import annotations

import math
from dataclasses import replace

from flask.views import MethodView
from flask_smorest import Blueprint

from shared.errors import Invalid
from shared.services import deliveries, endpoint_secrets, endpoint_stats, endpoints
from shared.services.ingest import parse_timestamp

from ..context import current_principal, db, now_iso
from .schemas import (
    V1CreatedEndpointEnvelope,
    V1DeletedSchema,
    V1DeliveryArgsSchema,
    V1DeliveryListEnvelope,
    V1EndpointCreateSchema,
    V1EndpointEnvelope,
    V1EndpointListEnvelope,
    V1EndpointUpdateSchema,
    V1ListArgsSchema,
    V1RecoveredEnvelope,
    V1RecoverSchema,
    V1SecretEnvelope,
)

blp = Blueprint(
    "v1", __name__, url_prefix="/v1/webhooks", description="ScaleBox-style webhooks API"
)


def _ok(data: object) -> dict:
    return {"success": True, "data": data, "timestamp": now_iso()}


def _one(session, endpoint, secret: str | None = None) -> dict:
    (shown,) = endpoint_stats.with_stats(session, [endpoint])
    return _ok(replace(shown, secret=secret))


def _int_arg(args: dict, names: tuple[str, ...], default: int) -> int:
    for name in names:
        if args.get(name) is not None:
            return args[name]
    return default


@blp.route("")
class Webhooks(MethodView):
    @blp.arguments(V1ListArgsSchema, location="query", error_status_code=400)
    @blp.response(200, V1EndpointListEnvelope)
    def get(self, args):
        """List the webhook endpoints you can see, with delivery stats"""
        principal = current_principal()
        limit = _int_arg(args, ("limit", "page_size"), 50)
        if not 1 <= limit <= 200:
            raise Invalid("limit must be between 1 and 200")
        page = _int_arg(args, ("page",), 1)
        if page < 1:
            raise Invalid("page must be 1 or more")
        offset = _int_arg(args, ("offset", "skip"), -1)
        if offset < -1 or (
            offset == -1 and any(args.get(n) is not None for n in ("offset", "skip"))
        ):
            raise Invalid("offset must be 0 or more")
        if offset >= 0:
            page = offset // limit + 1
        else:
            offset = (page - 1) * limit
        session = db()
        items, total = endpoints.list_endpoints(
            session, principal=principal, offset=offset, limit=limit
        )
        return _ok(
            {
                "webhooks": endpoint_stats.with_stats(session, items),
                "pagination": {
                    "page": page,
                    "limit": limit,
                    "total": total,
                    "total_pages": math.ceil(total / limit) if total else 0,
                },
            }
        )

    @blp.arguments(V1EndpointCreateSchema, error_status_code=400)
    @blp.response(201, V1CreatedEndpointEnvelope)
    def post(self, body):
        """Create a webhook endpoint; the signing secret is shown only in this answer"""
        principal = current_principal()
        session = db()
        created = endpoints.create_endpoint(
            session,
            principal=principal,
            url=body["url"],
            event_types=body["event_types"],
            vocabulary="v1",
            payload_format="envelope",
            scope=body.get("scope", "user"),
            description=body.get("description"),
            timeout_seconds=body.get("timeout_seconds", 30),
            max_retries=body.get("max_retries", 3),
            headers=body.get("headers"),
            payload_filter=body.get("filter"),
            resource_id=body.get("resource_id"),
            expires_at=body.get("expires_at"),
            ordering=body.get("ordering", "none"),
            rate_limit=body.get("rate_limit"),
        )
        return _one(session, created.endpoint, created.secret)


@blp.route("/<endpoint_id>")
class WebhookById(MethodView):
    @blp.response(200, V1EndpointEnvelope)
    def get(self, endpoint_id):
        """Get one webhook endpoint with its delivery stats"""
        principal = current_principal()
        session = db()
        endpoint = endpoints.get_endpoint(session, principal=principal, endpoint_id=endpoint_id)
        return _one(session, endpoint)

    @blp.arguments(V1EndpointUpdateSchema, error_status_code=400)
    @blp.response(200, V1EndpointEnvelope)
    def put(self, body, endpoint_id):
        """Change any of url, event_types, is_active, description, limits, scope, format"""
        principal = current_principal()
        session = db()
        endpoint = endpoints.update_endpoint(
            session, principal=principal, endpoint_id=endpoint_id, vocabulary="v1", changes=body
        )
        return _one(session, endpoint)

    @blp.response(200, V1DeletedSchema)
    def delete(self, endpoint_id):
        """Delete a webhook endpoint; its pending deliveries are cancelled"""
        principal = current_principal()
        endpoints.delete_endpoint(db(), principal=principal, endpoint_id=endpoint_id)
        return {
            "success": True,
            "message": "Webhook endpoint deleted successfully",
            "timestamp": now_iso(),
        }


@blp.route("/<endpoint_id>/deliveries")
class WebhookDeliveries(MethodView):
    @blp.arguments(V1DeliveryArgsSchema, location="query", error_status_code=400)
    @blp.response(200, V1DeliveryListEnvelope)
    def get(self, args, endpoint_id):
        """Delivery history of an endpoint, newest first"""
        principal = current_principal()
        rows = deliveries.list_endpoint_deliveries(
            db(), principal=principal, endpoint_id=endpoint_id, limit=args.get("limit", 50)
        )
        return _ok({"deliveries": rows})


@blp.route("/<endpoint_id>/rotate-secret")
class WebhookRotateSecret(MethodView):
    @blp.response(200, V1SecretEnvelope)
    def post(self, endpoint_id):
        """Rotate the signing secret; the old one keeps signing for 24 hours"""
        principal = current_principal()
        secret = endpoint_secrets.rotate_secret(db(), principal=principal, endpoint_id=endpoint_id)
        return _ok({"secret": secret})


@blp.route("/<endpoint_id>/recover")
class WebhookRecover(MethodView):
    @blp.arguments(V1RecoverSchema, error_status_code=400)
    @blp.response(202, V1RecoveredEnvelope)
    def post(self, body, endpoint_id):
        """Attempt every failed delivery of the endpoint in [since, until) once more"""
        principal = current_principal()
        since = parse_timestamp(body["since"], "since")
        until = parse_timestamp(body["until"], "until") if body.get("until") else None
        count = deliveries.recover_failed(
            db(), principal=principal, endpoint_id=endpoint_id, since=since, until=until
        )
        return _ok({"recovered": count})
