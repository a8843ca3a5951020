"""Standard Webhooks signatures (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

from .crypto import SIGNING_SECRET_PREFIX


def secret_key_bytes(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part of a ``whsec_...`` secret."""
    if secret.startswith(SIGNING_SECRET_PREFIX):
        secret = secret[len(SIGNING_SECRET_PREFIX) :]
    return base64.b64decode(secret)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature of ``{id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per valid secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def webhook_headers(
    *, secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes, user_agent: str
) -> dict[str, str]:
    """Every header of a delivery request."""
    return {
        "content-type": "application/json",
        "user-agent": user_agent,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
