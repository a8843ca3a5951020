"""The api process: create_app(config) -> Flask."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.config import get_settings
from shared.errors import DomainError

from .context import error_response, strict_json_loads

log = logging.getLogger("webhooks.api")

# Paths whose bodies may reach 16 times WEBHOOKS_MAX_PAYLOAD_BYTES (SPEC 10).
BATCH_PATHS = ("/api/internal/events",)
API_PREFIXES = ("/v1/", "/api/", "/events/")


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing NaN and Infinity on the way in, keeping key order on the way out."""

    sort_keys = False

    def loads(self, s, **kwargs):
        return strict_json_loads(s)


def _validation_message(messages: object) -> str:
    """The first marshmallow error as one sentence: ``field: problem``."""
    if isinstance(messages, dict):
        for location in ("json", "query", "path"):
            if location in messages:
                messages = messages[location]
                break
    path: list[str] = []
    while isinstance(messages, dict) and messages:
        key, messages = next(iter(messages.items()))
        path.append(str(key))
    text = messages[0] if isinstance(messages, list) and messages else str(messages)
    field = ".".join(p for p in path if p != "_schema")
    if text == "Unknown field.":
        return f"Unknown field: {field}"
    return f"{field}: {text}" if field else str(text)


def create_app(config: dict | None = None) -> Flask:
    """Build the Flask app with every face, the error shapes and the request transaction."""
    settings = get_settings()
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    app.config.update(
        API_TITLE="Sandbox webhooks",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        # The hard ceiling; each request gets its own limit in _limit_and_parse_body.
        MAX_CONTENT_LENGTH=settings.max_payload_bytes * 16,
    )
    app.config.update(config or {})
    api = Api(app)
    api.spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    api.spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    api.spec.components.schema(
        "PlatformEvent",
        {
            "type": "object",
            "required": ["event", "organizationId", "id"],
            "properties": {
                "event": {"type": "string"},
                "organizationId": {"type": "string"},
                "id": {"type": "string"},
                "eventId": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
            },
            "additionalProperties": True,
        },
    )

    from .internal.routes import blp as internal_blp
    from .v1.routes import blp as v1_blp

    api.register_blueprint(v1_blp)
    api.register_blueprint(internal_blp)
    _register_optional_faces(api)

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    app.before_request(_limit_and_parse_body)
    app.after_request(_commit)
    app.teardown_request(_close_session)
    _register_error_handlers(app)
    # The worker's sender, so that the api can enqueue after its commits.
    import webhooks_worker.celery_app  # noqa: F401

    return app


def _register_optional_faces(api: Api) -> None:
    """Faces that live in their own packages register themselves here."""
    import importlib

    for module in (
        "webhooks_api.organizations.routes",
        "webhooks_api.team_hook.routes",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for blueprint in getattr(mod, "BLUEPRINTS", [mod.blp]):
            api.register_blueprint(blueprint)


def _limit_and_parse_body() -> Response | None:
    settings = get_settings()
    limit = settings.max_payload_bytes
    if request.path in BATCH_PATHS:
        limit *= 16
    request.max_content_length = limit
    g.json_body = None
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    if not request.path.startswith(API_PREFIXES):
        return None
    data = request.get_data(cache=True)  # raises 413 past the limit, chunked bodies included
    if not data.strip():
        return None
    if not request.is_json:
        return error_response(400, "Request body must be JSON (Content-Type: application/json)")
    try:
        g.json_body = strict_json_loads(data)
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "Request body is not valid JSON")
    return None


def _commit(response: Response) -> Response:
    session = g.get("db_session")
    if session is None:
        return response
    if response.status_code >= 400:
        session.rollback()
        return response
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return error_response(409, "The request conflicts with the current state; try again")
    except (OperationalError, DBAPIError):
        session.rollback()
        log.warning("database unavailable at commit")
        return error_response(
            503, "Database unavailable, retry later", headers={"Retry-After": "5"}
        )
    return response


def _close_session(exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        try:
            session.rollback()
        finally:
            session.close()


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> Response:
        headers = {"Retry-After": "5"} if exc.status_code == 503 else None
        return error_response(exc.status_code, exc.message, headers=headers)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        if status == 422 or "messages" in data:
            return error_response(400, _validation_message(data.get("messages", {})))
        if status == 404:
            message = f"No route for {request.method} {request.path}"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.path}"
        elif status == 413:
            message = f"Request body is larger than {request.max_content_length} bytes"
        elif status == 400 and "JSON" in (exc.description or ""):
            message = "Request body is not valid JSON"
        else:
            message = exc.description or exc.name
        response = error_response(status, message)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError) -> Response:
        log.warning("database unavailable: %s", exc.orig.__class__.__name__ if exc.orig else exc)
        return error_response(
            503, "Database unavailable, retry later", headers={"Retry-After": "5"}
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return error_response(
                503, "Database unavailable, retry later", headers={"Retry-After": "5"}
            )
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "Internal server error")
