"""The organization service face's blueprint and the access rules its routes share."""

from __future__ import annotations

from collections.abc import Callable

from flask_smorest import Blueprint

from shared.services.auth import Principal

from ..context import current_principal
from .schemas import DaytonaErrorSchema

blp = Blueprint(
    "organizations",
    __name__,
    url_prefix="/api/webhooks",
    description="Daytona-style organization webhook service",
)

ORG = "/organizations/<organizationId>"


def documented_errors(*codes: int) -> Callable:
    """Document the error answers of a route, in this face's error shape."""

    def decorator(func: Callable) -> Callable:
        for code in codes:
            func = blp.alt_response(code, schema=DaytonaErrorSchema)(func)
        return func

    return decorator


def member_of(organization_id: str) -> Principal:
    """The caller, who must belong to the organization in the path (404 otherwise)."""
    principal = current_principal()
    principal.check_organization(organization_id)
    return principal


def admin_of(organization_id: str) -> Principal:
    """A root or admin caller of the organization in the path."""
    principal = member_of(organization_id)
    principal.require_admin()
    return principal
