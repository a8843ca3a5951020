"""Re-encrypting stored secrets with the first key of ``WEBHOOKS_ENCRYPTION_KEY``.

The secrets kept encrypted are the endpoints' signing secrets, the current one
(``secret_encrypted``) and every rotated-out one still signing (the Fernet tokens inside
``previous_secret_encrypted``), and their custom headers (``headers_encrypted``, one
token, docs/api.md §11.1). Deleted endpoints keep theirs too, and are re-encrypted
like the others, so that no row is left that only a dropped key could read.

The work goes by endpoint id, one batch per transaction with its rows locked (an
endpoint's own secret rotation waits for the batch, and the other way round). A token the
first key wrote already is left as it is, so a run that was interrupted, or one run twice,
only re-encrypts what is still under an older key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..crypto import encrypted_with_first_key, reencrypt
from ..errors import Invalid
from ..models import Endpoint

# Endpoints per transaction: a few hundred row locks held for well under a second.
BATCH_SIZE = 200


@dataclass(frozen=True)
class Batch:
    """What one batch did: the endpoints it read, how many it rewrote, and where it stopped."""

    endpoints: int
    reencrypted: int
    last_id: str


def count_endpoints(session: Session) -> int:
    """How many endpoints hold secrets (deleted ones included): the length of the work."""
    return session.scalar(select(func.count()).select_from(Endpoint)) or 0


def _current(token: str, endpoint_id: str) -> str:
    """The token under the first key (itself when it is already)."""
    if encrypted_with_first_key(token):
        return token
    try:
        return reencrypt(token)
    except InvalidToken:
        raise Invalid(
            f"endpoint {endpoint_id} has a secret that none of the keys in "
            "WEBHOOKS_ENCRYPTION_KEY can read: add the key it was encrypted with after the "
            "new one, and run again"
        ) from None


def reencrypt_endpoint(endpoint: Endpoint) -> bool:
    """Re-encrypt one endpoint's secrets with the first key; True when anything changed."""
    changed = False
    current = _current(endpoint.secret_encrypted, endpoint.id)
    if current != endpoint.secret_encrypted:
        endpoint.secret_encrypted = current
        changed = True
    if endpoint.previous_secret_encrypted:
        entries = json.loads(endpoint.previous_secret_encrypted)
        rewritten = False
        for entry in entries:
            token = _current(entry["secret"], endpoint.id)
            if token != entry["secret"]:
                entry["secret"] = token
                rewritten = True
        if rewritten:
            endpoint.previous_secret_encrypted = json.dumps(entries)
            changed = True
    if endpoint.headers_encrypted:
        headers = _current(endpoint.headers_encrypted, endpoint.id)
        if headers != endpoint.headers_encrypted:
            endpoint.headers_encrypted = headers
            changed = True
    return changed


def reencrypt_batch(session: Session, *, after_id: str, limit: int = BATCH_SIZE) -> Batch:
    """Re-encrypt the next ``limit`` endpoints by id after ``after_id``, locking them."""
    endpoints = list(
        session.scalars(
            select(Endpoint)
            .where(Endpoint.id > after_id)
            .order_by(Endpoint.id)
            .limit(limit)
            .with_for_update()
        )
    )
    changed = sum(1 for endpoint in endpoints if reencrypt_endpoint(endpoint))
    session.flush()
    return Batch(len(endpoints), changed, endpoints[-1].id if endpoints else after_id)


def reencrypt_in_batches(
    factory: sessionmaker[Session], *, batch_size: int = BATCH_SIZE
) -> Iterator[Batch]:
    """Re-encrypt every endpoint's secrets, committing each batch before yielding it."""
    after_id = ""
    while True:
        with factory() as session:
            batch = reencrypt_batch(session, after_id=after_id, limit=batch_size)
            session.commit()
        if not batch.endpoints:
            return
        yield batch
        after_id = batch.last_id
