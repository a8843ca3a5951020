"""Marshmallow field types the HTTP faces share (``shared.schemas.Timestamp`` prints times)."""

from __future__ import annotations

from marshmallow import fields


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
