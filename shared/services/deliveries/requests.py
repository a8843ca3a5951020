"""The signed HTTP request of a delivery: its payload in the endpoint's format, its headers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ... import payloads
from ...signing import webhook_headers
from ..endpoint_headers import with_custom_headers
from ..endpoint_secrets import signing_secrets


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The body and headers of one attempt (signed for the time it was built)."""

    body: bytes
    headers: dict[str, str]


@lru_cache(maxsize=1)
def user_agent() -> str:
    """The User-Agent of delivery requests: product/version (read once: metadata is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"sandbox-webhooks/{version('sandbox-webhooks')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "sandbox-webhooks/0.1.0"


def build_request(endpoint: Any, message: Any, delivery: Any) -> SignedRequest:
    """Render and sign a delivery's request (rows or anything with their attributes)."""
    body = payloads.serialize(
        payloads.render_payload(
            payload_format=endpoint.payload_format,
            message_id=message.id,
            event_type=message.event_type,
            delivery_name=delivery.event_type,
            fields=message.payload,
            timestamp=message.timestamp,
            custom=message.custom,
        )
    )
    headers = webhook_headers(
        secrets=signing_secrets(endpoint),
        msg_id=message.id,
        timestamp=int(time.time()),
        body=body,
        user_agent=user_agent(),
    )
    # docs/api.md §11.1: the endpoint's custom headers go with every attempt; none of them
    # can have a name the service sends, and the service's are merged last all the same.
    headers = with_custom_headers(endpoint.headers_encrypted, headers)
    sequence = getattr(delivery, "sequence", None)
    if sequence is not None:
        # docs/api.md §11.3: the delivery's place among its resource's deliveries.
        headers["webhook-sequence"] = str(sequence)
    return SignedRequest(body=body, headers=headers)
