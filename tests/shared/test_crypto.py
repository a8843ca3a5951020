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


@pytest.fixture
def keys(monkeypatch):
    """Set WEBHOOKS_ENCRYPTION_KEY for the duration of a test (the settings re-read)."""

    def _use(*values: str) -> None:
        monkeypatch.setenv("WEBHOOKS_ENCRYPTION_KEY", ",".join(values))
        get_settings.cache_clear()

    yield _use
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_secret_stored_under_an_older_key_decrypts_while_that_key_follows_the_new_one(keys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys(old)
    secret = crypto.new_signing_secret()
    token = crypto.encrypt(secret)
    keys(new, old)
    assert crypto.decrypt(token) == secret
    assert not crypto.encrypted_with_first_key(token)
    # New secrets are written with the first key only: readable once the old key is gone.
    fresh = crypto.encrypt("whsec_fresh")
    assert crypto.encrypted_with_first_key(fresh)
    keys(new)
    assert crypto.decrypt(fresh) == "whsec_fresh"
    with pytest.raises(InvalidToken):
        crypto.decrypt(token)


def test_reencrypting_moves_a_secret_to_the_first_key(keys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys(old)
    token = crypto.encrypt("whsec_moved")
    keys(new, old)
    moved = crypto.reencrypt(token)
    assert crypto.encrypted_with_first_key(moved)
    keys(new)
    assert crypto.decrypt(moved) == "whsec_moved"
