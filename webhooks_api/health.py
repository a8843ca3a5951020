"""Operator routes of the internal face: readiness and Prometheus metrics.

``/healthz`` (liveness) is the only probe that answers without credentials: SPEC 3
opens no other route to an anonymous caller, and SPEC 10 lets the platform token open
``/api/internal/*`` alone (and the platform routes of 6.2). Readiness and metrics
describe the whole deployment, so they live under ``/api/internal`` and take the platform
token (``Authorization: Bearer $WEBHOOKS_ADMIN_TOKEN``): 401 without credentials, 403 for
an organization key, errors in the ``/api/webhooks`` shape like the rest of the face.
Probes send the header (Kubernetes ``httpHeaders``, Prometheus ``authorization``).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from shared import metrics
from shared.db import get_sessionmaker
from shared.services.health import database_latency

from .context import require_platform

blp = Blueprint("operations", __name__, url_prefix="/api/internal")

# A readiness probe must answer before the prober gives up (Kubernetes: 1 s by default).
BROKER_TIMEOUT_SECONDS = 1.0


@blp.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 when the database and the broker answer, else 503 naming what is down."""
    require_platform()
    from webhooks_worker.health import broker_ok

    with get_sessionmaker()() as session:
        database = database_latency(session) is not None
    broker = broker_ok(timeout=BROKER_TIMEOUT_SECONDS)
    down = [name for name, ok in (("database", database), ("broker", broker)) if not ok]
    body = {
        "status": "unavailable" if down else "ready",
        "database": {"ok": database},
        "broker": {"ok": broker},
    }
    if down:
        body["down"] = down
    response = jsonify(body)
    if down:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return response


@blp.get("/metrics")
def metrics_text() -> Response:
    """Prometheus metrics of the whole deployment (platform token)."""
    require_platform()
    body, content_type = metrics.render()
    return Response(body, status=200, headers={"Content-Type": content_type})
