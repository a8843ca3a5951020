"""The event catalog: every canonical event type, its names on the other faces, its example.

Data, and the examples built from it; ``shared.events`` says which names an event has and
whether subscriptions match it. Pure: no database, Flask or Celery.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from shared.errors import Invalid

# The state a state event reports, by type: an event without it is refused, since a
# misspelt field (new_state) would otherwise match no subscription and go nowhere.
STATE_FIELDS: dict[str, str] = {
    "sandbox.state.updated": "newState",
    "snapshot.state.updated": "newState",
    "volume.state.updated": "newState",
    "sandbox.desired-state.updated": "newDesiredState",
}
# Every field that holds a state: these compare case-insensitively wherever they are
# compared (subscriptions, payload filters).
STATE_FIELD_NAMES = frozenset(
    {"state", "oldState", "newState", "oldDesiredState", "newDesiredState"}
)
# The longest event type name: generous for any real use, short enough for messages.
MAX_EVENT_TYPE_LENGTH = 128

# The documented Daytona examples all use this instant; the other examples
# reuse it so that every example in the catalog reads alike.
_EXAMPLE_TIME = "2025-12-19T10:30:00.000Z"


@dataclass(frozen=True)
class EventType:
    """One canonical event type of the catalog and its names on the other faces."""

    name: str
    description: str
    category: str
    account_level: bool
    v1_types: tuple[str, ...]
    e2b_labels: tuple[str, ...]
    fields: tuple[str, ...]
    # Excluded from hashing and comparison: a dict is neither hashable nor a
    # part of the type's identity.
    example: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _sandbox(
    name: str,
    description: str,
    fields: tuple[str, ...],
    example: dict[str, Any],
    *,
    v1: tuple[str, ...] = (),
    e2b: tuple[str, ...] = (),
) -> EventType:
    return EventType(name, description, "sandbox", False, v1, e2b, fields, example)


def _plain(
    name: str,
    category: str,
    description: str,
    fields: tuple[str, ...],
    example: dict[str, Any],
    *,
    v1: tuple[str, ...] = (),
) -> EventType:
    return EventType(name, description, category, False, v1, (), fields, example)


def _account(name: str, description: str, example: dict[str, Any]) -> EventType:
    # Account-level types keep the same name on /v1 (docs/api.md §4.1, last row).
    fields = tuple(key for key in example if key not in ("id", "organizationId"))
    return EventType(name, description, "account", True, (name,), (), fields, example)


def _money(resource_id: str, amount: str, status: str) -> dict[str, Any]:
    return {
        "id": resource_id,
        "organizationId": "org123",
        "amount": amount,
        "currency": "USD",
        "status": status,
        "createdAt": _EXAMPLE_TIME,
    }


_AUDIT_FIELDS = ("actorId", "action", "targetType", "targetId", "statusCode")

_TYPES: tuple[EventType, ...] = (
    # The seven examples documented by Daytona are copied value for value and
    # key for key (snapshot and volume examples put `name` before
    # `organizationId`), so a daytona-format receiver sees exactly the docs.
    _sandbox(
        "sandbox.created",
        "A new sandbox has been created",
        ("state", "class", "createdAt"),
        {
            "id": "sandbox123",
            "organizationId": "org123",
            "state": "started",
            "class": "small",
            "createdAt": _EXAMPLE_TIME,
        },
        v1=("sandbox.created",),
        e2b=("create",),
    ),
    _sandbox(
        "sandbox.state.updated",
        "A sandbox's state has changed",
        ("oldState", "newState", "updatedAt"),
        {
            "id": "sandbox123",
            "organizationId": "org123",
            "oldState": "started",
            "newState": "stopped",
            "updatedAt": _EXAMPLE_TIME,
        },
        v1=(
            "sandbox.started",
            "sandbox.resumed",
            "sandbox.stopped",
            "sandbox.paused",
            "sandbox.terminated",
            "sandbox.failed",
        ),
        e2b=("resume", "pause", "kill"),
    ),
    _sandbox(
        "sandbox.updated",
        "A sandbox's configuration has changed",
        ("updatedAt", "changes"),
        {
            "id": "sandbox123",
            "organizationId": "org123",
            "updatedAt": _EXAMPLE_TIME,
            "changes": {"class": {"old": "small", "new": "medium"}},
        },
        e2b=("update",),
    ),
    _sandbox(
        "sandbox.desired-state.updated",
        "A sandbox's desired state has changed",
        ("oldDesiredState", "newDesiredState", "updatedAt"),
        {
            "id": "sandbox123",
            "organizationId": "org123",
            "oldDesiredState": "started",
            "newDesiredState": "stopped",
            "updatedAt": _EXAMPLE_TIME,
        },
    ),
    _sandbox(
        "sandbox.project_switched",
        "A sandbox has moved to another project",
        ("oldProject", "newProject", "updatedAt"),
        {
            "id": "sandbox123",
            "organizationId": "org123",
            "oldProject": "project123",
            "newProject": "project456",
            "updatedAt": _EXAMPLE_TIME,
        },
        v1=("sandbox.project_switched",),
    ),
    _plain(
        "snapshot.created",
        "snapshot",
        "A new snapshot has been created",
        ("name", "state", "createdAt"),
        {
            "id": "snapshot123",
            "name": "my-snapshot",
            "organizationId": "org123",
            "state": "active",
            "createdAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "snapshot.state.updated",
        "snapshot",
        "A snapshot's state has changed",
        ("name", "oldState", "newState", "updatedAt"),
        {
            "id": "snapshot123",
            "name": "my-snapshot",
            "organizationId": "org123",
            "oldState": "building",
            "newState": "active",
            "updatedAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "snapshot.removed",
        "snapshot",
        "A snapshot has been removed",
        ("name", "removedAt"),
        {
            "id": "snapshot123",
            "name": "my-snapshot",
            "organizationId": "org123",
            "removedAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "volume.created",
        "volume",
        "A new volume has been created",
        ("name", "state", "createdAt"),
        {
            "id": "vol-12345678",
            "name": "my-volume",
            "organizationId": "org123",
            "state": "ready",
            "createdAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "volume.state.updated",
        "volume",
        "A volume's state has changed",
        ("name", "oldState", "newState", "updatedAt"),
        {
            "id": "vol-12345678",
            "name": "my-volume",
            "organizationId": "org123",
            "oldState": "creating",
            "newState": "ready",
            "updatedAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "volume.lastUsedAt.updated",
        "volume",
        "A volume has been used",
        ("name", "lastUsedAt"),
        {
            "id": "vol-12345678",
            "name": "my-volume",
            "organizationId": "org123",
            "lastUsedAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "audit-log.created",
        "audit-log",
        "An audit log entry has been recorded",
        (*_AUDIT_FIELDS, "createdAt"),
        {
            "id": "auditlog123",
            "organizationId": "org123",
            "actorId": "user123",
            "action": "create",
            "targetType": "sandbox",
            "targetId": "sandbox123",
            "statusCode": 201,
            "createdAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "audit-log.updated",
        "audit-log",
        "An audit log entry has been completed or amended",
        (*_AUDIT_FIELDS, "updatedAt"),
        {
            "id": "auditlog123",
            "organizationId": "org123",
            "actorId": "user123",
            "action": "delete",
            "targetType": "sandbox",
            "targetId": "sandbox123",
            "statusCode": 200,
            "updatedAt": _EXAMPLE_TIME,
        },
    ),
    _plain(
        "template.uploaded",
        "template",
        "A new template has been uploaded",
        ("name", "createdAt"),
        {
            "id": "template123",
            "organizationId": "org123",
            "name": "my-template",
            "createdAt": _EXAMPLE_TIME,
        },
        v1=("template.uploaded",),
    ),
    _plain(
        "template.deleted",
        "template",
        "A template has been deleted",
        ("name", "deletedAt"),
        {
            "id": "template123",
            "organizationId": "org123",
            "name": "my-template",
            "deletedAt": _EXAMPLE_TIME,
        },
        v1=("template.deleted",),
    ),
    _account(
        "payment.succeeded",
        "A payment has gone through",
        _money("payment123", "49.00", "succeeded"),
    ),
    _account(
        "payment.failed", "A payment has been declined", _money("payment123", "49.00", "failed")
    ),
    _account(
        "subscription.created",
        "A subscription has started",
        _money("subscription123", "49.00", "active"),
    ),
    _account(
        "subscription.updated",
        "A subscription's plan or status has changed",
        _money("subscription123", "99.00", "active"),
    ),
    _account(
        "subscription.cancelled",
        "A subscription has been cancelled",
        _money("subscription123", "99.00", "cancelled"),
    ),
    _account(
        "budget.threshold_reached",
        "Spending has reached a budget's alert threshold",
        _money("budget123", "80.00", "threshold_reached"),
    ),
    _account(
        "budget.exceeded",
        "Spending has gone over a budget",
        _money("budget123", "100.00", "exceeded"),
    ),
)

CATALOG: dict[str, EventType] = {event_type.name: event_type for event_type in _TYPES}

ACCOUNT_LEVEL_TYPES: frozenset[str] = frozenset(
    event_type.name for event_type in _TYPES if event_type.account_level
)

V1_EVENT_TYPES: frozenset[str] = frozenset(
    name for event_type in _TYPES for name in event_type.v1_types
)

# The labels of E2B's sandbox lifecycle webhooks, in the order E2B lists them.
E2B_LABELS: tuple[str, ...] = ("create", "kill", "update", "pause", "resume")

# Every name the catalog knows, in any face's vocabulary.
CATALOG_NAMES: frozenset[str] = frozenset({*CATALOG, *V1_EVENT_TYPES, *E2B_LABELS})


# Every name a test event may be asked for, mapped to its canonical type and
# the states that make resolve_names() give that name.
_STATE_EXAMPLES: dict[str, tuple[str, str]] = {
    "sandbox.started": ("stopped", "started"),
    "sandbox.resumed": ("paused", "started"),
    "resume": ("paused", "started"),
    "sandbox.stopped": ("started", "stopped"),
    "sandbox.paused": ("started", "paused"),
    "pause": ("started", "paused"),
    "sandbox.terminated": ("stopped", "destroyed"),
    "kill": ("stopped", "destroyed"),
    "sandbox.failed": ("starting", "error"),
}


def example_event(name: str, *, organization_id: str) -> tuple[str, dict[str, Any]]:
    """The canonical type and example fields of a catalog name in any vocabulary."""
    if name in _STATE_EXAMPLES:
        old_state, new_state = _STATE_EXAMPLES[name]
        fields = copy.deepcopy(CATALOG["sandbox.state.updated"].example)
        fields.update(oldState=old_state, newState=new_state)
        canonical = "sandbox.state.updated"
    else:
        canonical = next(
            (
                event_type.name
                for event_type in _TYPES
                if name == event_type.name
                or name in event_type.v1_types
                or name in event_type.e2b_labels
            ),
            None,
        )
        if canonical is None:
            raise Invalid(f"Invalid event type: {describe(name)}")
        # A copy, so that a caller changing it cannot change the catalog.
        fields = copy.deepcopy(CATALOG[canonical].example)
    fields["organizationId"] = organization_id
    return canonical, fields


def describe(item: Any) -> str:
    """An offending value as an error message shows it: cut when it is long."""
    text = item if isinstance(item, str) else repr(item)
    if len(text) > MAX_EVENT_TYPE_LENGTH:
        # Keep the error message readable when someone sends a huge string.
        return text[:MAX_EVENT_TYPE_LENGTH] + "..."
    return text
