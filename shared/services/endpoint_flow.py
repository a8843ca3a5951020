"""The flow-control options of an endpoint: ``ordering`` and ``rate_limit``.

docs/api.md §11.3 and §11.6. Validated here for every face (each face's schema may
check them first, to name the field in its own spelling); what they do happens at
delivery (``shared.services.deliveries.ordering`` and ``.pacing``).
"""

from __future__ import annotations

from typing import Any

from ..errors import Invalid
from ..models import Ordering

ORDERINGS = tuple(o.value for o in Ordering)
# Attempts per second: at least one, and at most what one endpoint could take from a
# deployment's workers at all.
RATE_LIMIT_RANGE = (1, 10_000)
FIELDS = ("ordering", "rate_limit")


def check_ordering(value: object) -> str:
    """``none`` or ``resource``, else Invalid naming the field."""
    if not isinstance(value, str) or value not in ORDERINGS:
        raise Invalid(f"ordering must be one of {', '.join(ORDERINGS)}")
    return value


def check_rate_limit(value: object) -> int | None:
    """Attempts per second within ``RATE_LIMIT_RANGE``, or None for no limit."""
    if value is None:
        return None
    low, high = RATE_LIMIT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"rate_limit must be null or an integer between {low} and {high}")
    return value


def flow_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The checked values of the flow options among an update's changes."""
    values: dict[str, Any] = {}
    if "ordering" in changes:
        values["ordering"] = check_ordering(changes["ordering"])
    if "rate_limit" in changes:
        values["rate_limit"] = check_rate_limit(changes["rate_limit"])
    return values
