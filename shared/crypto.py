"""Secrets at rest: Fernet encryption of signing secrets, hashing of API keys.

``WEBHOOKS_ENCRYPTION_KEY`` holds one or more Fernet keys, newest first: the first
encrypts, any of them decrypts, so that a key can be replaced without downtime
(``webhooks rotate-encryption-key`` re-encrypts what the older keys wrote).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .config import get_settings

SIGNING_SECRET_PREFIX = "whsec_"
API_KEY_PREFIX = "whk_live_"


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


@lru_cache(maxsize=4)
def _first(key: str) -> Fernet:
    return Fernet(key.encode())


def encrypt(plaintext: str) -> str:
    """Encrypt a secret for storage, with the first configured key."""
    return _fernet(get_settings().encryption_keys).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a stored secret with whichever configured key wrote it."""
    return _decrypt(get_settings().encryption_keys, token)


def encrypted_with_first_key(token: str) -> bool:
    """Whether the first configured key wrote this token (nothing to re-encrypt)."""
    try:
        _first(get_settings().encryption_key).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def reencrypt(token: str) -> str:
    """The same secret encrypted with the first key; raises InvalidToken if no key reads it."""
    return _fernet(get_settings().encryption_keys).rotate(token.encode()).decode()


# Every delivery attempt signs with its endpoint's secret, and checking and decrypting a
# Fernet token is a visible share of a worker's CPU per attempt.
# A token is written once and never changes (a rotation writes a new one), so the answer
# for a token under a key is kept: a few thousand endpoints' secrets, well under 1 MB.
@lru_cache(maxsize=4096)
def _decrypt(keys: tuple[str, ...], token: str) -> str:
    return _fernet(keys).decrypt(token.encode()).decode()


def new_signing_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes (Svix's size)."""
    return SIGNING_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def new_api_key() -> str:
    """A fresh API key (256 bits of randomness)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of an API key.

    The keys are 256-bit random strings, so a fast hash is enough: there is no
    low-entropy password to stretch, and lookups stay one indexed query.
    """
    return hashlib.sha256(key.encode()).hexdigest()
