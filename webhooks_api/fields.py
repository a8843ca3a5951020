"""Marshmallow field types the HTTP faces share (``shared.schemas.Timestamp`` prints times)."""

from __future__ import annotations

from marshmallow import fields


class StrictString(fields.String):
    """A string that must really be a JSON string (no numbers coerced)."""
