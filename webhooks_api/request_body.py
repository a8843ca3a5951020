"""A request's body: its size limit, parsed once as strict JSON, and refused with a clear
400 when it could not be stored or the route takes none (docs/api.md §10)."""

from __future__ import annotations

import math
import re

from flask import Flask, Response, current_app, g, request
from flask_smorest import Api
from werkzeug.exceptions import RequestEntityTooLarge

from shared.config import get_settings

from .context import NumberTooLarge, error_response, strict_json_loads

# Paths whose bodies may reach 16 times WEBHOOKS_MAX_PAYLOAD_BYTES (docs/api.md §10).
BATCH_PATHS = ("/api/internal/events",)
API_PREFIXES = ("/v1/", "/api/", "/events/")
# Bodies nested deeper are refused: no event or management body needs more, and the
# worker re-encodes an event's fields with a stack deeper than the api's, so a body the
# api could just parse would overflow there on every try (a message never delivered).
MAX_JSON_DEPTH = 64


def limit_and_parse_body() -> Response | None:
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
