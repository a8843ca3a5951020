"""The schema: one module per table family."""

from .base import Base, new_id, utcnow
from .endpoints import Endpoint
from .enums import AttemptStatus, DeliveryStatus, Ordering, PayloadFormat, Scope, Trigger
from .messages import Attempt, Delivery, ManualRequest, Message, ResourceSequence
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
    "AttemptStatus",
    "Base",
    "Delivery",
    "DeliveryStatus",
    "Endpoint",
    "ManualRequest",
    "Message",
    "Organization",
    "OrganizationInitialization",
    "PayloadFormat",
    "Ordering",
    "ResourceSequence",
    "Scope",
    "Trigger",
    "User",
    "new_id",
    "utcnow",
]
