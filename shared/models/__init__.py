"""The schema: one module per table family."""

from .base import Base, new_id, utcnow
from .endpoints import Endpoint
from .messages import Attempt, Delivery, ManualRequest, Message
from .organizations import (
    ApiKey,
    Application,
    Organization,
    OrganizationInitialization,
    User,
)

__all__ = [
    "ApiKey",
    "Application",
    "Attempt",
    "Base",
    "Delivery",
    "Endpoint",
    "ManualRequest",
    "Message",
    "Organization",
    "OrganizationInitialization",
    "User",
    "new_id",
    "utcnow",
]
