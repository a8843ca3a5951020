"""Event catalog and the name mapping between the three faces (docs/api.md §4.1).

The platform reports canonical (Daytona) events. Each one is also known by a
`/v1` (ScaleBox) name and an E2B label, some of them only under a condition
on the event's states. This module says which names an event has, whether
an endpoint's subscriptions match it, which name a delivery carries, and
which subscription lists each face accepts. It is pure: no database, Flask
or Celery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from shared.errors import Forbidden, Invalid

from .event_catalog import (
    ACCOUNT_LEVEL_TYPES,
    CATALOG,
    CATALOG_NAMES,
    E2B_LABELS,
    MAX_EVENT_TYPE_LENGTH,
    V1_EVENT_TYPES,
    EventType,
    describe,
    example_event,
)

__all__ = [
    "ACCOUNT_LEVEL_TYPES",
    "CATALOG",
    "CATALOG_NAMES",
    "E2B_LABELS",
    "MAX_EVENT_TYPE_LENGTH",
    "V1_EVENT_TYPES",
    "EventType",
    "describe",
    "example_event",
]

_CATALOG_NAMES_LOWER = frozenset(name.lower() for name in CATALOG_NAMES)

# docs/api.md §11.5: the service's own reports on its endpoints, under these names in every
# vocabulary. Like account-level types they reach only an endpoint that names them: a
# wildcard subscriber did not ask to hear about other endpoints' failures.
OPERATIONAL_TYPES: tuple[str, ...] = (
    "endpoint.failing",
    "endpoint.disabled",
    "message.attempt.exhausted",
)

# Limits on one subscription list of /api/webhooks: generous for any real
# use, small enough that matching stays cheap on every event.
MAX_SUBSCRIPTIONS = 100

# Custom names: lowercase dot-separated segments, at least two, so that a
# custom name can never look like an E2B label or a wildcard.
_CUSTOM_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")
# Wildcard prefixes may hold capitals so that `volume.lastUsedAt.*` is valid.
_WILDCARD = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.\*")

_ACCOUNT_LEVEL_MESSAGE = (
    "Account-level event types require a root user and an account-scoped webhook"
)


class PreconfiguredCategory(NamedTuple):
    """An endpoint the service creates for every organization (docs/api.md §6.2)."""

    category: str
    event_types: list[str]
    description: str


PRECONFIGURED_CATEGORIES: list[PreconfiguredCategory] = [
    PreconfiguredCategory(
        "sandbox-events",
        ["sandbox.*"],
        "Every sandbox event: creation, state and configuration changes",
    ),
    PreconfiguredCategory(
        "snapshot-events",
        ["snapshot.*"],
        "Every snapshot event: creation, state changes and removal",
    ),
    PreconfiguredCategory(
        "volume-events", ["volume.*"], "Every volume event: creation, state changes and use"
    ),
    PreconfiguredCategory(
        "audit-events", ["audit-log.*"], "Every audit log entry, for compliance and review"
    ),
    PreconfiguredCategory(
        "all-events", ["*"], "Every event of the organization except account-level ones"
    ),
]


@dataclass(frozen=True)
class EventNames:
    """Every name one event goes by: canonical, /v1 (least to most specific), E2B."""

    canonical: str
    v1: tuple[str, ...] = ()
    e2b: str | None = None
    account_level: bool = False
    operational: bool = False

    @property
    def by_name_only(self) -> bool:
        """Reached only by its name: no wildcard or empty list (account-level, operational)."""
        return self.account_level or self.operational

    @property
    def all(self) -> tuple[str, ...]:
        """Every name of the event, each once: canonical, then /v1, then E2B."""
        names = [self.canonical, *self.v1]
        if self.e2b is not None:
            names.append(self.e2b)
        return tuple(dict.fromkeys(names))


def normalize_state(value: Any) -> str | None:
    """A reported state as compared everywhere: trimmed and lowercased (None stays None)."""
    # Platforms report states in either case ("STARTED" in Daytona's own
    # README, "started" in its docs); the table compares them lowercased.
    if value is None:
        return None
    return str(value).strip().lower()


def _state_update_names(fields: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    new_state = normalize_state(fields.get("newState"))
    old_state = normalize_state(fields.get("oldState"))
    if new_state == "started":
        if old_state == "paused":
            return ("sandbox.started", "sandbox.resumed"), "resume"
        return ("sandbox.started",), None
    if new_state == "stopped":
        return ("sandbox.stopped",), None
    if new_state == "paused":
        return ("sandbox.paused",), "pause"
    if new_state in ("destroyed", "terminated"):
        return ("sandbox.terminated",), "kill"
    if new_state in ("error", "build_failed", "failed"):
        return ("sandbox.failed",), None
    return (), None


def resolve_names(event_type: str, fields: dict[str, Any]) -> EventNames:
    """Apply the docs/api.md §4.1 condition table: every name an event goes by."""
    catalog_type = CATALOG.get(event_type)
    if catalog_type is None:
        return EventNames(canonical=event_type, operational=event_type in OPERATIONAL_TYPES)
    if event_type == "sandbox.state.updated":
        v1, e2b = _state_update_names(fields)
    else:
        v1 = catalog_type.v1_types
        e2b = catalog_type.e2b_labels[0] if catalog_type.e2b_labels else None
    return EventNames(event_type, v1, e2b, catalog_type.account_level)


# docs/api.md §4.1: the states after which a sandbox or volume reports nothing more.
_FINAL_STATES = frozenset({"destroyed", "terminated", "deleted"})


def is_final_event(event_type: str, fields: dict[str, Any]) -> bool:
    """Whether the event is its resource's last (an endpoint bound to it then ends)."""
    if event_type == "snapshot.removed":
        return True
    if event_type in ("sandbox.state.updated", "volume.state.updated"):
        return normalize_state(fields.get("newState")) in _FINAL_STATES
    return False


def _entry_matches(entry: str, name: str, *, exact_only: bool) -> bool:
    entry = entry.lower()
    name = name.lower()
    if entry == name:
        return True
    if exact_only:
        return False
    if entry == "*":
        return True
    return entry.endswith(".*") and name.startswith(entry[:-1])


def _subscribed(subscriptions: list[str], name: str, *, exact_only: bool) -> bool:
    return any(_entry_matches(entry, name, exact_only=exact_only) for entry in subscriptions)


def matches_subscription(subscriptions: list[str], names: EventNames) -> bool:
    """Whether an endpoint with these subscriptions receives the event."""
    # docs/api.md §3: account-level types are subscribed only by name; `*`, `x.*`
    # and the empty list never reach them.
    if names.by_name_only:
        return any(_subscribed(subscriptions, name, exact_only=True) for name in names.all)
    if not subscriptions:
        return True
    return any(_subscribed(subscriptions, name, exact_only=False) for name in names.all)


def delivery_name(subscriptions: list[str], names: EventNames, payload_format: str) -> str | None:
    """The name a delivery to this endpoint carries, or None if it gets no delivery."""
    # Custom events never go to e2b endpoints (docs/api.md §4.2): an E2B receiver has
    # no place for a caller's payload.
    if payload_format == "e2b" and names.canonical not in CATALOG:
        return None
    if not matches_subscription(subscriptions, names):
        return None
    if payload_format == "envelope":
        if not names.v1:
            return names.canonical
        # docs/api.md §5: one delivery per endpoint, typed with the most specific name
        # that matched (sandbox.resumed over sandbox.started). The canonical name,
        # an E2B label (which stands for the most specific case: `resume`), a
        # wildcard or the empty list reach the most specific /v1 name; /v1 names
        # alone reach only themselves.
        exact_only = names.by_name_only
        most_specific = names.v1[-1]
        others = [name for name in names.all if name not in names.v1]
        if not subscriptions or any(
            _subscribed(subscriptions, name, exact_only=exact_only) for name in others
        ):
            return most_specific
        for name in reversed(names.v1):
            if _subscribed(subscriptions, name, exact_only=exact_only):
                return name
        return most_specific
    if payload_format == "e2b":
        # docs/api.md §4.2: the E2B label where the event has one, else the
        # canonical name (a stop, a snapshot, a payment).
        return names.e2b if names.e2b is not None else names.canonical
    return names.canonical


def check_account_level(names: list[str], *, is_root: bool, scope: str) -> None:
    """Account-level types need root and an account-scoped endpoint (docs/api.md §3)."""
    if not any(name in ACCOUNT_LEVEL_TYPES for name in names):
        return
    if not is_root:
        raise Forbidden(_ACCOUNT_LEVEL_MESSAGE)
    if scope != "account":
        # The caller may subscribe them, just not on this endpoint: a bad
        # request, not a missing permission.
        raise Invalid(_ACCOUNT_LEVEL_MESSAGE)


def validate_v1_event_types(event_types: list[Any], *, is_root: bool, scope: str) -> list[str]:
    """Check a /v1 subscription list: a non-empty list of /v1 names, deduplicated."""
    if not isinstance(event_types, list) or not event_types:
        raise Invalid("event_types must be a non-empty list")
    for item in event_types:
        if not isinstance(item, str) or (
            item not in V1_EVENT_TYPES and item not in OPERATIONAL_TYPES
        ):
            raise Invalid(f"Invalid event type: {describe(item)}")
    names = list(dict.fromkeys(event_types))
    check_account_level(names, is_root=is_root, scope=scope)
    return names


def _is_valid_subscription(name: str) -> bool:
    if name == "*" or name in CATALOG_NAMES or name in OPERATIONAL_TYPES:
        return True
    return bool(_WILDCARD.fullmatch(name) or _CUSTOM_NAME.fullmatch(name))


def validate_event_types(event_types: list[Any], *, is_root: bool, scope: str) -> list[str]:
    """Check an /api/webhooks subscription list (empty means every event), deduplicated."""
    if not isinstance(event_types, list):
        raise Invalid("eventTypes must be a list of event type names")
    if len(event_types) > MAX_SUBSCRIPTIONS:
        raise Invalid(f"eventTypes may hold at most {MAX_SUBSCRIPTIONS} entries")
    for item in event_types:
        if (
            not isinstance(item, str)
            or len(item) > MAX_EVENT_TYPE_LENGTH
            or not _is_valid_subscription(item)
        ):
            raise Invalid(f"Invalid event type: {describe(item)}")
    names = list(dict.fromkeys(event_types))
    check_account_level(names, is_root=is_root, scope=scope)
    return names


def validate_e2b_events(events: list[Any]) -> list[str]:
    """Check a team hook's `events`: a non-empty subset of the E2B labels, deduplicated."""
    allowed = ", ".join(E2B_LABELS)
    if not isinstance(events, list) or not events:
        raise Invalid(f"events must be a non-empty list of: {allowed}")
    for item in events:
        if not isinstance(item, str) or item not in E2B_LABELS:
            raise Invalid(f"Invalid event: {describe(item)} (allowed: {allowed})")
    return list(dict.fromkeys(events))


def is_custom_event_name(name: str) -> bool:
    """Whether a custom send may use this name: well formed and not a catalog name."""
    if not isinstance(name, str) or len(name) > MAX_EVENT_TYPE_LENGTH:
        return False
    if not _CUSTOM_NAME.fullmatch(name):
        return False
    # Matching is case-insensitive, so a lowercased catalog name
    # (volume.lastusedat.updated) would reach that type's subscribers; an operational
    # name would pass for the service's own report.
    return name not in _CATALOG_NAMES_LOWER and name.lower() not in OPERATIONAL_TYPES
