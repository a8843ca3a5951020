"""The platform's own face at /api/internal (docs/api.md §6.4): organizations, users, events."""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from shared.errors import Invalid
from shared.schemas import Timestamp
from shared.services import ingest, organizations

from ..context import db, require_platform

blp = Blueprint(
    "internal", __name__, url_prefix="/api/internal", description="The platform's internal API"
)


class OrganizationCreateSchema(Schema):
    id = fields.String()
    name = fields.String(required=True)


class UserCreateSchema(Schema):
    role = fields.String(required=True)


class OrganizationSchema(Schema):
    id = fields.String()
    name = fields.String()
    createdAt = Timestamp(attribute="created_at")


class UserSchema(Schema):
    id = fields.String()
    role = fields.String()


class OrganizationCreatedSchema(Schema):
    organization = fields.Nested(OrganizationSchema)
    user = fields.Nested(UserSchema)
    apiKey = fields.String()


class UserCreatedSchema(Schema):
    user = fields.Nested(UserSchema)
    apiKey = fields.String()


class AcceptedMessageSchema(Schema):
    id = fields.String()
    eventId = fields.String(allow_none=True)
    duplicate = fields.Boolean()


class AcceptedMessagesSchema(Schema):
    messages = fields.List(fields.Nested(AcceptedMessageSchema))


@blp.route("/organizations")
class Organizations(MethodView):
    @blp.arguments(OrganizationCreateSchema, error_status_code=400)
    @blp.response(201, OrganizationCreatedSchema)
    def post(self, body):
        """Create an organization with its root user; the API key is shown only here"""
        require_platform()
        session = db()
        org, root = organizations.create_organization(
            session, name=body["name"], organization_id=body.get("id")
        )
        organizations.start_initialization(session, organization_id=org.id)
        return {
            "organization": org,
            "user": {"id": root.user.id, "role": root.user.role},
            "apiKey": root.api_key,
        }


@blp.route("/organizations/<organization_id>/users")
class OrganizationUsers(MethodView):
    @blp.arguments(UserCreateSchema, error_status_code=400)
    @blp.response(201, UserCreatedSchema)
    def post(self, body, organization_id):
        """Add a user to an organization; the API key is shown only here"""
        require_platform()
        new = organizations.create_user(db(), organization_id=organization_id, role=body["role"])
        return {"user": {"id": new.user.id, "role": new.user.role}, "apiKey": new.api_key}


_EVENTS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/PlatformEvent"},
                    {
                        "type": "array",
                        "maxItems": ingest.MAX_BATCH,
                        "items": {"$ref": "#/components/schemas/PlatformEvent"},
                    },
                ]
            }
        }
    },
}


@blp.route("/events")
class Events(MethodView):
    @blp.doc(requestBody=_EVENTS_BODY)
    @blp.response(202, AcceptedMessagesSchema)
    def post(self):
        """Report canonical platform events, one or an array of up to 1,000 (all-or-nothing)"""
        require_platform()
        body = g.get("json_body")
        if isinstance(body, list):
            accepted = ingest.ingest_events(db(), raw_events=body, single=False)
        elif isinstance(body, dict):
            accepted = ingest.ingest_events(db(), raw_events=[body], single=True)
        else:
            raise Invalid("body must be an event object or an array of events")
        return {
            "messages": [
                {"id": a.message.id, "eventId": a.message.event_id, "duplicate": a.duplicate}
                for a in accepted
            ]
        }
