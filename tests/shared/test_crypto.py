"""Secrets at rest: a stored signing secret decrypts only under the key it was stored with."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, InvalidToken

from shared import crypto
from shared.config import get_settings


def test_a_stored_secret_decrypts_to_what_was_stored_every_time():
    secret = crypto.new_signing_secret()
    token = crypto.encrypt(secret)
    assert token != secret
    assert [crypto.decrypt(token) for _ in range(3)] == [secret] * 3


def test_a_secret_decrypted_once_is_not_readable_under_another_key():
    token = crypto.encrypt(crypto.new_signing_secret())
    crypto.decrypt(token)  # decrypted, and remembered, under the test key
    get_settings.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBHOOKS_ENCRYPTION_KEY", Fernet.generate_key().decode())
        get_settings.cache_clear()
        with pytest.raises(InvalidToken):
            crypto.decrypt(token)
    get_settings.cache_clear()
