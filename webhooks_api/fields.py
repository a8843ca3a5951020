"""Marshmallow field types the HTTP faces share (``shared.schemas.Timestamp`` prints times)."""

from __future__ import annotations

from datetime import datetime

from marshmallow import ValidationError, fields

from shared.errors import Invalid
from shared.services.ingest import parse_timestamp


class StrictString(fields.String):
    """A string that must really be a JSON string (no numbers coerced)."""


class HeadersInput(fields.Raw):
    """An endpoint's custom headers as a client gives them; the service checks them.

    Validation lives in ``shared.services.endpoint_headers`` so that every face (and the
    dashboard) answers the same 400s; this field only documents the shape.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {}).update(
            {
                "type": "object",
                "nullable": True,
                "additionalProperties": {"type": "string", "maxLength": 1024},
                "maxProperties": 20,
                "description": (
                    "Custom headers sent with every attempt (docs/api.md §11.1): up to 20 "
                    "names (HTTP tokens; webhook-*, proxy-*, content-type, content-length, "
                    "content-encoding, host, user-agent, connection, transfer-encoding, "
                    "te, upgrade, trailer and keep-alive are the service's) to printable "
                    "ASCII values of at most 1 KiB, 8 KiB in all. Stored encrypted. "
                    "Replaces the whole object; {} or null clears it. On an update, a "
                    'value of "********" keeps that header\'s stored value.'
                ),
            }
        )
        super().__init__(allow_none=True, **kwargs)


class IsoDateTime(fields.String):
    """An ISO 8601 date-time given as a string, read as aware UTC."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("metadata", {}).update({"format": "date-time"})
        super().__init__(**kwargs)

    # marshmallow's documented hook for a custom field's input.
    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        try:
            return parse_timestamp(value, attr or "value")
        except Invalid as exc:
            raise ValidationError("must be an ISO 8601 date-time") from exc
        except OverflowError:
            raise ValidationError("is out of range") from None
