"""Payload filters (docs/api.md §11.2): check an endpoint's filter, compile it to a predicate.

A filter is a JSON object of conditions on an event's fields, all of which must hold for
the endpoint to get a delivery. ``compile_filter`` checks a filter and turns it into a
function of the event's payload, so that a fan-out to many endpoints runs each
condition as a few Python comparisons rather than interpreting the JSON again per event;
``stored_predicate`` does the same for a filter as the database returns it, compiling
each distinct filter once. Pure: no database, Flask or Celery.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .errors import Invalid
from .event_catalog import STATE_FIELD_NAMES
from .events import normalize_state

# docs/api.md §11.2: enough for any real selection, small enough that a fan-out to
# thousands of endpoints stays a matter of microseconds per endpoint.
MAX_KEYS = 20
MAX_BYTES = 4096

RANGE_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", "$prefix", *RANGE_OPERATORS)

Predicate = Callable[[dict[str, Any]], bool]
_Test = Callable[[Any], bool]

# A field the event does not carry (a reported null is a value: it equals null).
_MISSING = object()


def _fail(key: str, problem: str) -> Invalid:
    return Invalid(f'filter key "{key}": {problem}')


def _check_text(key: str, text: str) -> None:
    # PostgreSQL's jsonb holds neither NUL nor lone surrogates: refuse them here, naming
    # the key, rather than have the database refuse the whole request.
    if "\x00" in text:
        raise _fail(key, "text must not contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise _fail(key, "text must be valid Unicode (no lone surrogates)") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def _comparable(value: Any, state: bool) -> Any:
    """What equality compares: a scalar tagged with its kind, or None for anything else.

    Tagged so that JSON's kinds stay apart (``true`` is not ``1``, ``"1"`` is not ``1``)
    while ``1`` and ``1.0`` stay equal; a state compares as everywhere, lowercased.
    """
    if isinstance(value, str):
        return ("s", normalize_state(value) if state else value)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if value is None:
        return ("null", None)
    return None  # an object or an array equals no scalar


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as aware UTC (no zone: UTC), or None when ``value`` is not one."""
    if not isinstance(value, str) or not value[:4].isdigit():
        return None
    return _parse_time_text(value)


# A fan-out compares one event's time with the bounds of many endpoints: parsed once.
@lru_cache(maxsize=256)
def _parse_time_text(value: str) -> datetime | None:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _scalar(key: str, value: Any, what: str) -> Any:
    if not _is_scalar(value):
        raise _fail(key, f"{what} must be a string, number, boolean or null")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(key, f"{what} must be a finite number")
    if isinstance(value, str):
        _check_text(key, value)
    return value


def _scalars(key: str, value: Any, what: str) -> frozenset:
    if not isinstance(value, list) or not value:
        raise _fail(key, f"{what} must be a non-empty array of scalars")
    what = f"each item of {what}"
    return frozenset(_comparable(_scalar(key, item, what), False) for item in value)


def _equals(expected: Any, state: bool) -> _Test:
    target = _comparable(expected, state)
    return lambda value: value is not _MISSING and _comparable(value, state) == target


def _one_of(expected: frozenset, state: bool) -> _Test:
    return lambda value: value is not _MISSING and _comparable(value, state) in expected


def _state_set(keys: frozenset) -> frozenset:
    return frozenset(("s", normalize_state(v)) if kind == "s" else (kind, v) for kind, v in keys)


def _range(key: str, name: str, bound: Any) -> _Test:
    compare = RANGE_OPERATORS[name]
    if _is_number(bound):
        if isinstance(bound, float) and not math.isfinite(bound):
            raise _fail(key, f"{name} takes a finite number")
        return lambda value: _is_number(value) and compare(value, bound)
    instant = parse_time(bound)
    if instant is None:
        raise _fail(key, f"{name} takes a number or an ISO 8601 time")

    def test(value: Any) -> bool:
        parsed = parse_time(value)
        return parsed is not None and compare(parsed, instant)

    return test


def _condition(key: str, name: str, operand: Any, state: bool) -> _Test:
    """The test one operator makes of a field's value (``_MISSING`` when absent)."""
    if name == "$eq":
        return _equals(_scalar(key, operand, "$eq"), state)
    if name == "$ne":
        equal = _equals(_scalar(key, operand, "$ne"), state)
        return lambda value: value is _MISSING or not equal(value)
    if name in ("$in", "$nin"):
        members = _scalars(key, operand, name)
        members = _state_set(members) if state else members
        inside = _one_of(members, state)
        if name == "$in":
            return inside
        return lambda value: value is _MISSING or not inside(value)
    if name == "$exists":
        if not isinstance(operand, bool):
            raise _fail(key, "$exists takes true or false")
        return lambda value: (value is not _MISSING) is operand
    if name == "$prefix":
        if not isinstance(operand, str):
            raise _fail(key, "$prefix takes a string")
        _check_text(key, operand)
        if state:
            lowered = operand.lower()
            return lambda value: (
                isinstance(value, str) and value.strip().lower().startswith(lowered)
            )
        return lambda value: isinstance(value, str) and value.startswith(operand)
    return _range(key, name, operand)


def _test_for(key: str, spec: Any) -> _Test:
    state = key in STATE_FIELD_NAMES
    if isinstance(spec, list):
        members = _scalars(key, spec, "the value")
        return _one_of(_state_set(members) if state else members, state)
    if not isinstance(spec, dict):
        return _equals(_scalar(key, spec, "a value"), state)
    if len(spec) != 1:
        given = ", ".join(str(name) for name in spec) or "none"
        raise _fail(key, f"a condition takes exactly one operator, got {given}")
    ((name, operand),) = spec.items()
    if name not in OPERATORS:
        if not str(name).startswith("$"):
            raise _fail(
                key,
                f'nested filters are not supported; name the field by its path ("{key}.{name}")',
            )
        raise _fail(key, f"unknown operator {name} (one of {', '.join(OPERATORS)})")
    return _condition(key, name, operand, state)


def _getter(key: str) -> Callable[[dict[str, Any]], Any]:
    """How to read a field by its dotted path (docs/api.md §11.2: ``metadata.team``)."""
    parts = key.split(".")
    if len(parts) == 1:
        return lambda payload: payload.get(key, _MISSING)

    def get(payload: dict[str, Any]) -> Any:
        value: Any = payload
        for part in parts:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    return get


def _check_key(key: str) -> None:
    if not key:
        raise _fail(key, "a field path must not be empty")
    _check_text(key, key)
    if key.startswith("$"):
        raise _fail(key, 'keys are field paths; an operator goes in a condition: {"a": {"$eq": 1}}')
    if "" in key.split("."):
        raise _fail(key, "a field path must not have an empty part (a.b, not a..b, .a or a.)")


def compile_filter(spec: Any) -> Predicate | None:
    """Check a filter and compile it; None for no filter (null or ``{}``). Invalid, naming
    the key, for anything docs/api.md §11.2 does not allow."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise Invalid("filter must be a JSON object or null")
    if len(spec) > MAX_KEYS:
        raise Invalid(f"filter has {len(spec)} keys; at most {MAX_KEYS} are allowed")
    predicate = _compile(spec)
    size = len(json.dumps(spec, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_BYTES:
        raise Invalid(f"filter is {size} bytes of JSON; at most {MAX_BYTES} are allowed")
    return predicate


def _compile(spec: dict[str, Any]) -> Predicate | None:
    conditions = []
    for key, condition in spec.items():
        _check_key(key)
        conditions.append((_getter(key), _test_for(key, condition)))
    if not conditions:
        return None

    def matches(payload: dict[str, Any]) -> bool:
        return all(test(get(payload)) for get, test in conditions)

    return matches


def validate_filter(spec: Any) -> dict[str, Any] | None:
    """The filter to store: as given, or None for null and ``{}``; Invalid naming the key."""
    return spec if compile_filter(spec) is not None else None


def _reject_all(payload: dict[str, Any]) -> bool:
    return False


@lru_cache(maxsize=4096)
def stored_predicate(text: str | None) -> Predicate | None:
    """The predicate of a stored filter, given as its JSON text; None when it has none.

    Keyed by the text, so that a fan-out compiles each distinct filter once per process
    (endpoints that share a filter share its predicate) and a changed filter, having
    another text, is compiled anew. The limits on size are not checked again: the
    database may spell a stored number longer than it was given (jsonb writes ``1e300``
    out in full).
    """
    if text is None:
        return None
    spec = json.loads(text)
    if not isinstance(spec, dict):
        return None  # JSON null: no filter
    try:
        return _compile(spec)
    except Invalid:
        # Every write checks the filter, so this is a row written some other way. Refusing
        # the event for this endpoint loses nothing (the message is kept and can be resent);
        # sending it could leak what the filter was meant to keep away, and raising would
        # refuse the event for every endpoint of the organization.
        return _reject_all
