"""The custom headers rules: what is stored, what a read shows, what a request carries."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from shared.errors import Invalid
from shared.services.endpoint_headers import (
    MASK,
    encrypted_headers,
    is_sensitive,
    masked_headers,
    stored_headers,
    validate_headers,
    with_custom_headers,
)
from tests.conftest import ENCRYPTION_KEY


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("COOKIE", True),
        ("X-Api-Key", True),
        ("Keycloak-Realm", True),
        ("X-Session-TOKEN", True),
        ("Client-Secret", True),
        ("X-Password-Hint", True),
        ("X-Tenant", False),
        ("Set-Cookie-Policy", False),
        ("X-Authorization-Mode", False),
    ],
)
def test_credentials_are_recognised_by_name_in_any_case(name, sensitive):
    assert is_sensitive(name) is sensitive


def test_the_object_is_one_fernet_token_of_its_json_and_empty_stores_nothing():
    token = encrypted_headers({"X-A": "1", "Authorization": "Bearer z"})
    plain = Fernet(ENCRYPTION_KEY.encode()).decrypt(token.encode())
    assert json.loads(plain) == {"X-A": "1", "Authorization": "Bearer z"}
    assert stored_headers(token) == {"X-A": "1", "Authorization": "Bearer z"}
    assert masked_headers(token) == {"X-A": "1", "Authorization": MASK}
    assert encrypted_headers({}) is None and encrypted_headers(None) is None
    assert stored_headers(None) == {} and masked_headers(None) == {}


def test_the_mask_keeps_the_stored_value_matched_in_any_case():
    stored = {"Authorization": "Bearer old", "X-A": "1"}
    kept = validate_headers({"authorization": MASK, "X-B": "2"}, stored=stored)
    assert kept == {"authorization": "Bearer old", "X-B": "2"}
    with pytest.raises(Invalid, match="has none for this header"):
        validate_headers({"X-Token": MASK}, stored=stored)
    with pytest.raises(Invalid, match="has none for this header"):
        validate_headers({"X-Token": MASK})


def test_the_services_own_headers_win_and_no_headers_costs_nothing():
    own = {"content-type": "application/json", "webhook-id": "evt-1"}
    assert with_custom_headers(None, own) is own
    token = encrypted_headers({"X-A": "1"})
    sent = with_custom_headers(token, own)
    assert sent == {"X-A": "1", **own}
    # A stored object that somehow held a service name (not writable through the rules)
    # still loses to the service's value.
    forged = Fernet(ENCRYPTION_KEY.encode()).encrypt(b'{"webhook-id": "forged"}').decode()
    assert with_custom_headers(forged, own)["webhook-id"] == "evt-1"
