"""A try a worker holds: what claiming it gave the attempt and its record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ...models import Trigger
from ...transitions import DeliveryState
from .requests import SignedRequest


@dataclass(frozen=True, slots=True)
class Claimed:
    """A try this process holds: the request to post and what its record needs."""

    delivery_id: str
    try_number: int | None
    state: DeliveryState
    request: SignedRequest
    url: str
    timeout: float
    trigger: Trigger
    organization_id: str
    event_type: str
    message_id: str
    endpoint_id: str
    failing_since: datetime | None
    endpoint_scope: str
    endpoint_owner: str | None
    # This delivery's end ends the endpoint's resource binding (docs/api.md §11.4).
    ends_binding: bool = False
    # Ordering (docs/api.md §11.3): the delivery's resource and sequence, None if unordered.
    resource_id: str | None = None
    sequence: int | None = None
    # Pacing (docs/api.md §11.6): the endpoint's rate limit, the slot this try was given.
    rate_limit: int | None = None
    slot_at: datetime | None = None
