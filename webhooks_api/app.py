"""The api process: create_app(config) -> Flask."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.config import get_settings
from shared.errors import DomainError

from .context import authenticate_request, error_response, strict_json_loads
from .request_body import JSON_BODY_ROUTES, limit_and_parse_body, routes_reading_a_json_body

log = logging.getLogger("webhooks.api")

# Where /docs loads Swagger UI's files from.
SWAGGER_UI_ASSETS = "/docs/assets"


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing NaN and Infinity on the way in, keeping key order on the way out."""

    sort_keys = False

    def loads(self, s, **kwargs):
        return strict_json_loads(s)


def _closed(required: list[str], **properties: str) -> dict:
    return {
        "type": "object",
        "required": required,
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "additionalProperties": False,
    }


# Error bodies of the faces (docs/api.md §6.1, 6.2, 6.3), whichever route answers.
FACE_ERROR_SCHEMA = {
    "description": "An error in the shape of the face: /v1, /api (the Daytona shape) or "
    "/events (the E2B shape).",
    "oneOf": [
        _closed(["success", "error", "timestamp"], success="boolean", error="string",
                timestamp="string"),
        _closed(["statusCode", "error", "message"], statusCode="integer", error="string",
                message="string"),
        _closed(["code", "message"], code="integer", message="string"),
    ],
}  # fmt: skip


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
    from shared.logs import configure_logging

    configure_logging(settings.log_format, process="api")
    # The Celery app first: tracing loads its task modules (webhooks_worker.observability).
    from webhooks_worker.celery_app import install_sender
    from webhooks_worker.observability import start_tracing

    start_tracing("api")
    app = Flask(__name__)
    # Before the app's own request hooks: the request's span is open when they run.
    from shared.tracing import instrument_flask

    instrument_flask(app)
    app.json = StrictJSONProvider(app)
    app.config.update(
        API_TITLE="Sandbox webhooks",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Swagger UI's files come from the installed swagger-ui-bundle package, served
        # below: the page works on a machine without internet.
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_ASSETS + "/",
        # No badge from the public validator, which would send it the spec's address.
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        # The hard ceiling; each request gets its own limit in limit_and_parse_body.
        MAX_CONTENT_LENGTH=settings.max_payload_bytes * 16,
    )
    app.config.update(config or {})
    api = Api(app)
    app.register_blueprint(_swagger_ui_assets())
    # Every error response flask-smorest documents refers to "Error": make it what the
    # faces really send (its own {code, status, message, errors} never goes out).
    api.spec.components.schemas["Error"] = FACE_ERROR_SCHEMA
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

    from .dashboard.routes import me_blp, pages

    api.register_blueprint(me_blp)
    app.register_blueprint(pages)
    from .health import blp as operations_blp

    app.register_blueprint(operations_blp)  # /readyz and /metrics

    @app.get("/healthz")
    def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    app.extensions[JSON_BODY_ROUTES] = routes_reading_a_json_body(app, api)

    # Credentials first: a caller without them gets 401, not a 400 about its body (docs/api.md §3).
    app.before_request(authenticate_request)
    app.before_request(limit_and_parse_body)
    app.after_request(_commit)
    app.teardown_request(_close_session)
    _register_error_handlers(app)
    # The worker's sender, so that the api can enqueue after its commits.
    install_sender()

    from .realtime import init_realtime

    init_realtime(app)  # the live socket, relayed from the broker (docs/api.md §7)
    return app


def _swagger_ui_assets() -> Blueprint:
    """Swagger UI's scripts and styles, from the installed swagger-ui-bundle package."""
    from swagger_ui_bundle import swagger_ui_path

    return Blueprint(
        "swagger_ui",
        __name__,
        static_folder=str(swagger_ui_path),
        static_url_path=SWAGGER_UI_ASSETS,
    )


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
    except DataError:
        session.rollback()
        return error_response(400, _DATA_ERROR)
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


_DATA_ERROR = "A value in the request is out of range or malformed for its field"


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

    @app.errorhandler(DataError)
    def _bad_value(exc: DataError) -> Response:
        # The database refused a value the client sent (a number beyond its column's
        # range, say): the client's to fix, and retrying the same request cannot help.
        log.info("value refused by the database: %s", exc.orig.__class__.__name__)
        return error_response(400, _DATA_ERROR)

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
