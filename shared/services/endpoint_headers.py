"""Custom headers of an endpoint: what may be set, how it is stored, shown and sent.

docs/api.md §11.1. An endpoint's headers are an object of header names to values, sent
with every attempt. Values often carry a receiver's credentials, so the whole object is
stored as ONE Fernet token (``Endpoint.headers_encrypted``, like the signing secrets) and
the sensitive values are masked on every read.

Only ``shared.crypto`` and the standard library: the API's faces, the live socket and the
worker all read headers through here.
"""

from __future__ import annotations

import json
import re

from ..crypto import decrypt, encrypt
from ..errors import Invalid

FIELD = "headers"
MAX_HEADERS = 20
MAX_VALUE_BYTES = 1024
MAX_TOTAL_BYTES = 8 * 1024
# Not in the contract's limits, but a name longer than this is no header anyone uses, and
# 20 of them would make a header block that receivers refuse.
MAX_NAME_LENGTH = 256
# What a read shows instead of a sensitive value; on an update, the same string given as a
# value keeps the stored one (docs/decisions.md: editing an endpoint without re-typing).
MASK = "********"

# RFC 9110 §5.6.2: a field name is a token of these characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5 field-value without obs-text: visible ASCII, space and tab. Non-ASCII
# cannot be sent (libcurl takes header lines as ASCII), control characters are refused.
_VALUE = re.compile(r"[\x20-\x7e\t]*")
# The service's own request headers, and those that frame the message or the connection.
_RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "user-agent",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "trailer",
        "keep-alive",
    }
)
_RESERVED_PREFIXES = ("webhook-", "proxy-")
_SENSITIVE_NAMES = frozenset({"authorization", "cookie"})
_SENSITIVE_PARTS = ("token", "secret", "key", "password")


def is_sensitive(name: str) -> bool:
    """Whether reads mask this header's value (credentials, by the usual names)."""
    lowered = name.lower()
    return lowered in _SENSITIVE_NAMES or any(part in lowered for part in _SENSITIVE_PARTS)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise Invalid(
            f"{FIELD}: {name!r} is not a valid header name (letters, digits and "
            "!#$%&'*+-.^_`|~ only)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid(f"{FIELD}: header names must be at most {MAX_NAME_LENGTH} characters")
    lowered = name.lower()
    if lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES):
        raise Invalid(f"{FIELD}: {name} is set by the service and cannot be a custom header")
    return lowered


def _check_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{FIELD}: the value of {name} must be a string")
    if any(char in value for char in "\r\n\x00"):
        raise Invalid(f"{FIELD}: the value of {name} must not contain CR, LF or NUL")
    if not _VALUE.fullmatch(value):
        raise Invalid(
            f"{FIELD}: the value of {name} must be printable ASCII (no control characters)"
        )
    if value != value.strip(" \t"):
        # Receivers strip it (RFC 9110 §5.5), so what they read would not be what was saved.
        raise Invalid(f"{FIELD}: the value of {name} must not begin or end with whitespace")
    if len(value) > MAX_VALUE_BYTES:
        raise Invalid(f"{FIELD}: the value of {name} must be at most {MAX_VALUE_BYTES} bytes")
    return value


def validate_headers(value: object, *, stored: dict[str, str] | None = None) -> dict[str, str]:
    """The headers to store, from what a client gave; ``{}`` clears them.

    ``stored`` is the endpoint's current headers on an update: a value given as ``MASK``
    for a name it holds (in any case) keeps the stored value.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{FIELD} must be an object of header names to string values, or null")
    if len(value) > MAX_HEADERS:
        raise Invalid(f"{FIELD}: at most {MAX_HEADERS} headers")
    kept = {name.lower(): text for name, text in (stored or {}).items()}
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for name, given in value.items():
        lowered = _check_name(name)
        if lowered in seen:
            raise Invalid(f"{FIELD}: {name} is given twice (header names ignore case)")
        seen.add(lowered)
        if given == MASK:
            if lowered not in kept:
                raise Invalid(
                    f"{FIELD}: the value of {name} is {MASK!r}, which keeps a stored value, "
                    "and the endpoint has none for this header: give the value"
                )
            headers[name] = kept[lowered]
        else:
            headers[name] = _check_value(name, given)
    if sum(len(text) for text in headers.values()) > MAX_TOTAL_BYTES:
        raise Invalid(f"{FIELD}: the values must be at most {MAX_TOTAL_BYTES} bytes in all")
    return headers


def encrypted_headers(value: object, *, stored: dict[str, str] | None = None) -> str | None:
    """What ``Endpoint.headers_encrypted`` holds for a client's value: a token, or None."""
    headers = validate_headers(value, stored=stored)
    return encrypt(json.dumps(headers, separators=(",", ":"))) if headers else None


def stored_headers(token: str | None) -> dict[str, str]:
    """The headers in clear from ``Endpoint.headers_encrypted`` (``{}`` for none)."""
    if not token:
        return {}
    # shared.crypto keeps each token's plaintext, so an attempt pays a small json.loads.
    return json.loads(decrypt(token))


def masked_headers(token: str | None) -> dict[str, str]:
    """The headers as every read shows them: names, and sensitive values as ``MASK``."""
    return {
        name: MASK if is_sensitive(name) else value for name, value in stored_headers(token).items()
    }


def with_custom_headers(token: str | None, own: dict[str, str]) -> dict[str, str]:
    """A request's headers: the endpoint's custom ones, then the service's, which win."""
    if not token:
        return own
    return {**stored_headers(token), **own}
