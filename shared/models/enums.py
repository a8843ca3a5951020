"""The values the status, trigger, format and scope columns take, named once.

They are ``StrEnum``s, so a member is its string: it compares equal to the column's value,
serializes as it in JSON and binds as it in SQL.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryStatus(StrEnum):
    """Where a delivery stands: pending until it ends as delivered, failed or cancelled."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    """How one HTTP request of a delivery went."""

    SUCCESS = "success"
    FAILED = "failed"


class Trigger(StrEnum):
    """What made an attempt: the retry schedule, a person (resend, recover) or a test send."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    TEST = "test"


class PayloadFormat(StrEnum):
    """The body an endpoint receives: flat (Daytona), enveloped (/v1) or the team hook's."""

    DAYTONA = "daytona"
    ENVELOPE = "envelope"
    E2B = "e2b"


class Scope(StrEnum):
    """Who owns an endpoint: its creator, or the whole account."""

    USER = "user"
    ACCOUNT = "account"


class Ordering(StrEnum):
    """Whether an endpoint gets each resource's deliveries one after another, in order."""

    NONE = "none"
    RESOURCE = "resource"
