"""Operator routes beside ``/healthz``: readiness (``/readyz``) and Prometheus (``/metrics``).

``/readyz`` answers without credentials, like ``/healthz``: load balancers and
orchestrators probe it, and it tells only which part is down, never why. ``/metrics``
is fleet-wide business volume, so it takes the platform token
(``Authorization: Bearer $WEBHOOKS_ADMIN_TOKEN``; Prometheus sends it with
``authorization: {credentials_file: ...}``); an organization key is 403.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from shared import metrics
from shared.db import get_sessionmaker
from shared.services.health import database_latency

from .context import require_platform

blp = Blueprint("operations", __name__)

# A readiness probe must answer before the prober gives up (Kubernetes: 1 s by default).
BROKER_TIMEOUT_SECONDS = 1.0


@blp.get("/readyz")
def readyz() -> Response:
    """Readiness: 200 when the database and the broker answer, else 503 naming what is down."""
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
