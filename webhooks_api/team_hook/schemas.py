"""Schemas of the E2B-style team hook face: camelCase, plain JSON, `{code, message}` errors."""

from __future__ import annotations

from marshmallow import Schema, fields

from shared.events import E2B_LABELS
from shared.schemas import through

_LABELS = list(E2B_LABELS)


def _events_field(**kwargs) -> fields.List:
    # The labels are checked by the service (one message for every face); the
    # metadata only documents them in the OpenAPI spec.
    return fields.List(
        fields.String(metadata={"enum": _LABELS}),
        metadata={
            "description": "Lifecycle labels to receive: a non-empty subset of "
            + ", ".join(_LABELS)
            + " (repeats are ignored)",
            "minItems": 1,
            "example": ["create", "kill", "update"],
        },
        **kwargs,
    )


_URL_DOC = {
    "description": "Where events are posted: http(s), publicly reachable",
    "example": "https://your-webhook-endpoint.com/webhook",
}


class TeamHookCreateSchema(Schema):
    """Body of a registration; unknown fields are refused."""

    url = fields.String(required=True, metadata=_URL_DOC)
    events = _events_field(required=True)


class TeamHookUpdateSchema(Schema):
    """Body of a change: any of url and events; what is left out stays as it is."""

    url = fields.String(metadata=_URL_DOC)
    events = _events_field()


class TeamHookSchema(Schema):
    """The team's hook (an endpoint of category team-hook) as E2B shows it."""

    teamID = fields.String(
        attribute="organization_id", metadata={"description": "The organization (team) id"}
    )
    url = fields.String()
    events = fields.List(
        fields.String(),
        attribute="event_types",
        metadata={"description": "The subscribed labels, as stored"},
    )


class TeamHookCreatedSchema(through(TeamHookSchema, "endpoint")):
    """The registered hook with its signing secret, shown only in this answer."""

    signatureSecret = fields.String(
        attribute="secret",
        metadata={
            "description": "Standard Webhooks signing secret (whsec_...); shown only once",
            "example": "whsec_XW4lMMdZZ3ry/w+3Exw2Uu/WIIhjNpLQ",
        },
    )


class TeamHookDeletedSchema(Schema):
    """Answer of a deletion."""

    deleted = fields.Boolean(metadata={"example": True})


class TeamHookTestQueuedSchema(Schema):
    """Answer of a test: the `create` example is queued for delivery to the hook."""

    queued = fields.Boolean(metadata={"example": True})
    messageId = fields.String(
        metadata={
            "description": "The test message's id, sent as the `webhook-id` header",
            "example": "evt-abc123def456789",
        }
    )
    eventLabel = fields.String(
        metadata={"description": "The label the test delivery carries", "example": "create"}
    )


class TeamHookErrorSchema(Schema):
    """Every error of this face."""

    code = fields.Integer(metadata={"description": "The HTTP status", "example": 404})
    message = fields.String(
        metadata={
            "description": "What is wrong",
            "example": "The team has no webhook registered",
        }
    )
