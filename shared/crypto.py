"""Secrets at rest: Fernet encryption of signing secrets, hashing of API keys."""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet

from .config import get_settings

SIGNING_SECRET_PREFIX = "whsec_"
API_KEY_PREFIX = "whk_live_"


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


def encrypt(plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return _fernet(get_settings().encryption_key).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a stored secret."""
    return _decrypt(get_settings().encryption_key, token)


# Every delivery attempt signs with its endpoint's secret, and checking and decrypting a
# Fernet token cost about 4% of a worker's CPU per attempt (py-spy, benchmark scenario 1).
# A token is written once and never changes (a rotation writes a new one), so the answer
# for a token under a key is kept: a few thousand endpoints' secrets, well under 1 MB.
@lru_cache(maxsize=4096)
def _decrypt(key: str, token: str) -> str:
    return _fernet(key).decrypt(token.encode()).decode()


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
