"""Marshmallow field types every face shares."""

from __future__ import annotations

from datetime import datetime

from marshmallow import fields

from shared.payloads import format_timestamp


class Timestamp(fields.Field):
    """A date-time printed as ISO 8601 UTC with milliseconds and ``Z``."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {}).update({"type": "string", "format": "date-time"})
        super().__init__(**kwargs)

    def _serialize(self, value: datetime | None, attr, obj, **kwargs):
        return None if value is None else format_timestamp(value)


class StrictString(fields.String):
    """A string that must really be a JSON string (no numbers coerced)."""
