"""Operator routes at the root, where probes and scrapers look: readiness and metrics.

``/readyz`` answers without credentials, like ``/healthz``: a load balancer's probe has
none. It is 503 only when the database does not answer; a broker outage is reported in
the body (and in ``/metrics``) but keeps the api in rotation, because ingest keeps
accepting events while the broker is away (they are rows first).

``/metrics`` is the Prometheus text of the whole deployment. It is open unless
``WEBHOOKS_METRICS_TOKEN`` is set; then it takes ``Authorization: Bearer <that token>``
(Prometheus's ``authorization`` setting), and 401 otherwise.

Both are also served under ``/api/internal`` with the platform token, for probes set up
before they moved to the root.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request

from shared import metrics_scrape
from shared.config import get_settings
from shared.db import get_sessionmaker
from shared.errors import Unauthorized
from shared.services.health import readiness

blp = Blueprint("operations", __name__)

# A readiness probe must answer before the prober gives up (Kubernetes: 1 s by default).
BROKER_TIMEOUT_SECONDS = 1.0


@blp.get("/readyz")
@blp.get("/api/internal/readyz")
def readyz() -> Response:
    """Readiness: 200 while the database answers, else 503 naming it; the broker is reported."""
    from webhooks_worker.health import broker_ok

    with get_sessionmaker()() as session:
        status = readiness(session, broker_ok=lambda: broker_ok(timeout=BROKER_TIMEOUT_SECONDS))
    body: dict = {
        "status": "ready" if status.ready else "unavailable",
        "database": {"ok": status.database_ok},
        "broker": {"ok": status.broker_ok},
    }
    if status.down:
        body["down"] = status.down
    response = jsonify(body)
    if not status.ready:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return response


@blp.get("/metrics")
@blp.get("/api/internal/metrics")
def metrics_text() -> Response:
    """Prometheus metrics of the whole deployment (a bearer token if one is configured)."""
    _require_metrics_token()
    body, content_type = metrics_scrape.render()
    return Response(body, status=200, headers={"Content-Type": content_type})


def _require_metrics_token() -> None:
    """401 unless WEBHOOKS_METRICS_TOKEN is unset or sent as the bearer token."""
    expected = get_settings().metrics_token
    if expected is None or request.path.startswith("/api/internal/"):
        return  # open, or the platform token was checked already (context.authenticate_request)
    auth = request.authorization
    sent = auth.token or "" if auth is not None and auth.type == "bearer" else ""
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Unauthorized(
            "Missing or wrong credentials: send Authorization: Bearer <WEBHOOKS_METRICS_TOKEN>"
        )
