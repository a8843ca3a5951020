"""Per-request plumbing shared by every face: the session, the caller, the error shapes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from flask import Response, g, request
from sqlalchemy.orm import Session

from shared.db import get_sessionmaker
from shared.errors import Unauthorized
from shared.payloads import format_timestamp
from shared.services.auth import Principal, authenticate, is_platform_token


def db() -> Session:
    """The request's session; the request owns the transaction (committed after a 2xx/3xx)."""
    session = g.get("db_session")
    if session is None:
        session = get_sessionmaker()()
        g.db_session = session
    return session


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def credential() -> str | None:
    """The API key or JWT the caller sent."""
    return request.headers.get("X-API-Key", "").strip() or _bearer()


def current_principal() -> Principal:
    """The authenticated organization user (401 otherwise; the platform token is not one)."""
    principal = g.get("principal")
    if principal is None:
        cred = credential()
        if is_platform_token(cred):
            raise Unauthorized("The platform token is not accepted here; use an API key")
        principal = authenticate(db(), cred)
        g.principal = principal
    return principal


def require_platform() -> None:
    """Only the platform token opens this route: 401 without credentials, 403 for a user key."""
    cred = credential()
    if is_platform_token(cred):
        return
    if not cred:
        raise Unauthorized("Missing credentials: send Authorization: Bearer <platform token>")
    from shared.errors import Forbidden

    # A valid organization credential is authenticated but not allowed; anything else is 401.
    authenticate(db(), cred)
    raise Forbidden("This route requires the platform token")


# Every route under these prefixes takes credentials (docs/api.md §3); the health probe, the docs,
# the dashboard shell and the socket live elsewhere and are left alone.
FACE_PREFIXES = ("/v1/webhooks", "/api/webhooks", "/events/webhooks/sandboxes", "/api/internal")
# The cross-organization routes (docs/api.md §6.2): the platform token, as /api/internal.
PLATFORM_RULES = frozenset(
    {
        "/api/webhooks/initialization-stats",
        "/api/webhooks/retry-failed-initializations",
        "/api/webhooks/update-all-endpoints",
        "/api/webhooks/status",
    }
)


def authenticate_request() -> None:
    """Check the caller before the body is read, so 401 and 404 come before any 400.

    Runs only for a route that matched (an unknown route's 404 or a wrong method's 405 comes
    first); the view asks again and gets the same caller from ``g``.
    """
    rule = request.url_rule
    # OPTIONS too: Flask answers it with the route's methods, which are not for strangers
    # either (docs/api.md §3 leaves only /healthz, the docs and the dashboard's shell open).
    if request.routing_exception is not None or rule is None:
        return
    path = request.path
    if not any(path == prefix or path.startswith(prefix + "/") for prefix in FACE_PREFIXES):
        return
    if path.startswith("/api/internal/") or rule.rule in PLATFORM_RULES:
        require_platform()
        return
    principal = current_principal()
    organization_id = (request.view_args or {}).get("organizationId")
    if organization_id is not None:
        principal.check_organization(organization_id)


def now_iso() -> str:
    """The current time as the faces print it."""
    return format_timestamp(datetime.now(UTC))


def face() -> str:
    """Which API face the request belongs to, by its path."""
    path = request.path
    if path.startswith("/v1/"):
        return "v1"
    if path.startswith("/events/webhooks"):
        return "e2b"
    return "daytona"


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error_response(status: int, message: str, *, headers: dict | None = None) -> Response:
    """An error in the shape of the request's face (docs/api.md §6.1, 6.2, 6.3)."""
    kind = face()
    if kind == "v1":
        body = {"success": False, "error": message, "timestamp": now_iso()}
    elif kind == "e2b":
        body = {"code": status, "message": message}
    else:
        body = {"statusCode": status, "error": _REASONS.get(status, "Error"), "message": message}
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


class NumberTooLarge(ValueError):
    """A JSON integer with more digits than Python converts (sys.get_int_max_str_digits)."""


def _parse_int(token: str) -> int:
    try:
        return int(token)
    except ValueError:
        # Valid JSON, but past the interpreter's digit limit (4,300 by default).
        raise NumberTooLarge(f"integer of {len(token)} digits") from None


def strict_json_loads(data: str | bytes) -> object:
    """JSON without NaN/Infinity, which are not JSON and cannot be stored or re-sent.

    An integer too long to convert raises ``NumberTooLarge`` (a ValueError).
    """

    def _reject(token: str) -> float:
        raise ValueError(f"{token} is not valid JSON")

    value = json.loads(data, parse_constant=_reject, parse_int=_parse_int)
    return value


def finite(value: float) -> bool:
    """True for a finite number."""
    return math.isfinite(value)
