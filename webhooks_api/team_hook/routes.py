"""The E2B-style team lifecycle hook at /events/webhooks/sandboxes (docs/api.md §6.3).

One hook per team (organization), managed with the team's API key. Errors on
this face are `{"code": <status>, "message": "..."}` (context.error_response
picks the shape from the path).
"""

from __future__ import annotations

from collections.abc import Callable

from flask.views import MethodView
from flask_smorest import Blueprint

from shared.services import team_hooks

from ..context import current_principal, db
from .schemas import (
    TeamHookCreatedSchema,
    TeamHookCreateSchema,
    TeamHookDeletedSchema,
    TeamHookErrorSchema,
    TeamHookSchema,
    TeamHookTestQueuedSchema,
    TeamHookUpdateSchema,
)

blp = Blueprint(
    "team_hook",
    __name__,
    url_prefix="/events/webhooks/sandboxes",
    description="E2B-style sandbox lifecycle webhook, one per team",
)

_SECURITY = [{"ApiKey": []}, {"Bearer": []}]
_ERRORS = {
    400: "Invalid body: bad url or events, unknown field, not JSON",
    401: "Missing or wrong credentials",
    403: "Only root and admin may change the team's webhook",
    404: "The team has no webhook registered",
    409: "Conflict",
    413: "Request body too large",
}


def _documented(*codes: int, conflict: str | None = None) -> Callable:
    """Document the key auth and this face's error shape for the given statuses."""

    def decorate(func: Callable) -> Callable:
        for code in codes:
            description = conflict if code == 409 and conflict else _ERRORS[code]
            func = blp.alt_response(code, schema=TeamHookErrorSchema, description=description)(func)
        return blp.doc(security=_SECURITY)(func)

    return decorate


@blp.route("")
class TeamHook(MethodView):
    @_documented(400, 401, 403, 409, 413, conflict="The team already has a webhook")
    @blp.arguments(TeamHookCreateSchema, error_status_code=400)
    @blp.response(201, TeamHookCreatedSchema)
    def post(self, body):
        """Register the team's webhook (root or admin); the signing secret is shown only here"""
        return team_hooks.register(
            db(), principal=current_principal(), url=body["url"], events=body["events"]
        )

    @_documented(401, 404)
    @blp.response(200, TeamHookSchema)
    def get(self):
        """Get the team's webhook configuration"""
        return team_hooks.get(db(), principal=current_principal())

    @_documented(400, 401, 403, 404, 413)
    @blp.arguments(TeamHookUpdateSchema, error_status_code=400)
    @blp.response(200, TeamHookSchema)
    def patch(self, body):
        """Replace the webhook's url and/or events (root or admin); other settings are kept"""
        return team_hooks.update(
            db(), principal=current_principal(), url=body.get("url"), events=body.get("events")
        )

    @_documented(401, 403, 404)
    @blp.response(200, TeamHookDeletedSchema)
    def delete(self):
        """Delete the team's webhook (root or admin); pending deliveries are cancelled"""
        team_hooks.delete(db(), principal=current_principal())
        return {"deleted": True}


@blp.route("/test")
class TeamHookTest(MethodView):
    @_documented(401, 404, 409, conflict="The team's webhook is disabled")
    @blp.response(200, TeamHookTestQueuedSchema)
    def post(self):
        """Queue a test `create` event to the team's webhook, whatever events it subscribes to"""
        message = team_hooks.send_test(db(), principal=current_principal())
        return {"queued": True, "messageId": message.id, "eventLabel": team_hooks.TEST_EVENT_LABEL}
