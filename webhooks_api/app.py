"""The api process: create_app(config) -> Flask."""

from __future__ import annotations

import logging
import math
import re

from flask import Blueprint, Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Api
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.config import get_settings
from shared.errors import DomainError

from .context import NumberTooLarge, authenticate_request, error_response, strict_json_loads

log = logging.getLogger("webhooks.api")

# Where /docs loads Swagger UI's files from.
SWAGGER_UI_ASSETS = "/docs/assets"
# Paths whose bodies may reach 16 times WEBHOOKS_MAX_PAYLOAD_BYTES (docs/api.md §10).
BATCH_PATHS = ("/api/internal/events",)
API_PREFIXES = ("/v1/", "/api/", "/events/")
# Bodies nested deeper are refused: no event or management body needs more, and the
# worker re-encodes an event's fields with a stack deeper than the api's, so a body the
# api could just parse would overflow there on every try (a message never delivered).
MAX_JSON_DEPTH = 64


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
        # The hard ceiling; each request gets its own limit in _limit_and_parse_body.
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
    app.before_request(_limit_and_parse_body)
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


def _limit_and_parse_body() -> Response | None:
    settings = get_settings()
    limit = settings.max_payload_bytes
    if request.path in BATCH_PATHS:
        limit *= 16
    request.max_content_length = limit
    g.json_body = None
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    if not request.path.startswith(API_PREFIXES) or request.routing_exception is not None:
        return None  # no such route or method: its 404 or 405 comes first
    data = request.get_data(cache=True)  # raises 413 past the limit, chunked bodies included
    # A chunked body (no Content-Length) is cut at the limit by werkzeug's stream wrapper,
    # silently: whatever the server still holds past the cut means it was too large.
    if request.content_length is None and len(data) >= limit and _more_body_left():
        raise RequestEntityTooLarge()
    if not data.strip():
        if request.method in ("PUT", "PATCH"):
            # An update without a body is a client mistake (the OpenAPI says it is required).
            return error_response(400, "Request body is required: a JSON object of changes")
        return None
    if not request.is_json:
        return error_response(400, "Request body must be JSON (Content-Type: application/json)")
    try:
        g.json_body = strict_json_loads(data)
    except NumberTooLarge:
        return error_response(400, f"Request body {_TOO_LARGE_NUMBER}")
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "Request body is not valid JSON")
    except RecursionError:
        return error_response(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep")
    problem = _unstorable_body(g.json_body, batch=request.path in BATCH_PATHS)
    if problem:
        g.json_body = None
        return error_response(400, problem)
    if len(data) > settings.max_payload_bytes and not isinstance(g.json_body, list):
        # Only an array of events may exceed the limit (docs/api.md §10), not one event alone.
        g.json_body = None
        request.max_content_length = settings.max_payload_bytes
        raise RequestEntityTooLarge()
    if g.json_body != {} and request.path not in BATCH_PATHS and not _reads_a_body():
        # A route that takes no body (rotate, resend, delete, a hook's test...): whatever
        # is sent is unknown fields, which docs/api.md §10 refuses; an empty object is no body.
        body, g.json_body = g.json_body, None
        if isinstance(body, dict):
            return error_response(400, f"Unknown field: {next(iter(body))}")
        return error_response(400, "This route takes no request body")
    return None


# Where create_app keeps routes_reading_a_json_body's answer.
JSON_BODY_ROUTES = "webhooks.json_body_routes"
# A Flask rule's variables (``<int:id>``) as the OpenAPI document writes them (``{id}``).
_RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def routes_reading_a_json_body(app: Flask, api: Api) -> frozenset[tuple[str, str]]:
    """(endpoint, METHOD) of every route whose documented operation takes a JSON body.

    Read from the OpenAPI document flask-smorest builds from each view's
    ``@blp.arguments`` and ``@blp.doc``, so the rule has one source: what the docs promise.
    """
    paths = api.spec.to_dict().get("paths", {})
    found = set()
    for rule in app.url_map.iter_rules():
        operations = paths.get(_RULE_VARIABLE.sub(r"{\1}", rule.rule), {})
        for method, operation in operations.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body and "application/json" in body.get("content", {}):
                found.add((rule.endpoint, method.upper()))
    return frozenset(found)


def _reads_a_body() -> bool:
    """Whether the matched route's documented operation takes a JSON body."""
    routes = current_app.extensions.get(JSON_BODY_ROUTES, frozenset())
    return (request.url_rule.endpoint, request.method) in routes


def _more_body_left() -> bool:
    """Whether the server's input stream still has body bytes after what was read."""
    try:
        return bool(request.environ["wsgi.input"].read(1))
    except (OSError, ValueError):
        return False


def _unstorable_body(body: object, *, batch: bool) -> str | None:
    """What makes a request body unstorable, naming the event of an array (docs/api.md §6.4)."""
    if batch and isinstance(body, list):
        for index, event in enumerate(body):
            problem = _unstorable(event, depth=2)
            if problem:
                return f"event {index}: {problem}"
        return None
    problem = _unstorable(body)
    return f"Request body {problem}" if problem else None


_TOO_LARGE_NUMBER = "contains a number too large to represent"


def _unstorable(value: object, depth: int = 1) -> str | None:
    """Why a parsed JSON body cannot be stored and re-sent as it is, or None.

    PostgreSQL text and JSONB refuse NUL characters, UTF-8 cannot encode an unpaired
    surrogate (a lone ``\\ud800`` escape), and an overflowing number parses as infinity,
    which is not JSON; each would otherwise fail at the insert, as a 500.
    """
    pending: list[tuple[object, int]] = [(value, depth)]  # a loop: no recursion on hostile input
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            return f"is nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "contains a NUL character (\\u0000), which cannot be stored"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "contains an unpaired surrogate (\\ud800-\\udfff), which is not valid text"
        elif isinstance(item, float) and not math.isfinite(item):
            return _TOO_LARGE_NUMBER
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
