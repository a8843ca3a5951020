"""Custom headers on endpoints through the faces: set, shown masked, changed, refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.db import session_scope
from shared.models import Endpoint

MASK = "********"
GIVEN = {
    "Authorization": "Bearer very-secret-1",
    "Cookie": "session=abc",
    "X-Api-Key": "k-123",
    "X-Auth-Token": "t-456",
    "X-Client-Secret": "s-789",
    "X-DB-Password": "p-000",
    "X-Tenant": "acme",
    "Accept-Language": "en",
}
SHOWN = {
    "Authorization": MASK,
    "Cookie": MASK,
    "X-Api-Key": MASK,
    "X-Auth-Token": MASK,
    "X-Client-Secret": MASK,
    "X-DB-Password": MASK,
    "X-Tenant": "acme",
    "Accept-Language": "en",
}


def _org_endpoints(org) -> str:
    return f"/api/webhooks/organizations/{org.id}/endpoints"


def _v1_create(client, org, **extra):
    body = {"url": "https://example.com/hook", "event_types": ["sandbox.stopped"], **extra}
    return client.post("/v1/webhooks", json=body, headers=org.headers)


def _org_create(client, org, **extra):
    body = {"url": "https://example.com/hook", "eventTypes": ["sandbox.*"], **extra}
    return client.post(_org_endpoints(org), json=body, headers=org.headers)


def _stored_token(endpoint_id: str) -> str | None:
    with session_scope() as session:
        return session.scalar(select(Endpoint.headers_encrypted).where(Endpoint.id == endpoint_id))


def test_v1_create_get_list_show_every_name_and_mask_credentials(client, org):
    resp = _v1_create(client, org, headers=GIVEN)
    assert resp.status_code == 201, resp.json
    created = resp.json["data"]
    assert created["headers"] == SHOWN
    endpoint_id = created["endpoint_id"]
    got = client.get(f"/v1/webhooks/{endpoint_id}", headers=org.headers).json["data"]
    assert got["headers"] == SHOWN
    listed = client.get("/v1/webhooks", headers=org.headers).json["data"]["webhooks"]
    assert [w["headers"] for w in listed] == [SHOWN]
    # The other face shows the same endpoint the same way.
    shown = client.get(f"{_org_endpoints(org)}/{endpoint_id}", headers=org.headers).json
    assert shown["headers"] == SHOWN
    # Stored as one encrypted token, no value in clear.
    token = _stored_token(endpoint_id)
    # Values of four characters or more: a two-letter value ("en") turns up in a random
    # base64 token by chance now and then.
    assert token and all(value not in token for value in GIVEN.values() if len(value) >= 4)


def test_org_face_create_patch_and_list_use_camel_case_endpoints_with_headers(client, org):
    resp = _org_create(client, org, headers={"X-Tenant": "acme", "X-Api-Key": "k-1"})
    assert resp.status_code == 201, resp.json
    assert resp.json["headers"] == {"X-Tenant": "acme", "X-Api-Key": MASK}
    endpoint_id = resp.json["id"]
    resp = client.patch(
        f"{_org_endpoints(org)}/{endpoint_id}",
        json={"headers": {"X-Other": "1"}},
        headers=org.headers,
    )
    assert resp.status_code == 200, resp.json
    # An update replaces the whole object.
    assert resp.json["headers"] == {"X-Other": "1"}
    items = client.get(_org_endpoints(org), headers=org.headers).json["items"]
    assert [item["headers"] for item in items] == [{"X-Other": "1"}]


def test_endpoints_without_headers_show_an_empty_object(client, org):
    v1 = _v1_create(client, org).json["data"]
    assert v1["headers"] == {}
    org_face = _org_create(client, org).json
    assert org_face["headers"] == {}
    assert _stored_token(v1["endpoint_id"]) is None


@pytest.mark.parametrize("cleared", [{}, None])
def test_empty_object_or_null_clears_the_headers(client, org, cleared):
    endpoint_id = _v1_create(client, org, headers=GIVEN).json["data"]["endpoint_id"]
    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"headers": cleared}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    assert resp.json["data"]["headers"] == {}
    assert _stored_token(endpoint_id) is None


def test_an_update_without_headers_leaves_them_as_they_were(client, org):
    endpoint_id = _v1_create(client, org, headers=GIVEN).json["data"]["endpoint_id"]
    token = _stored_token(endpoint_id)
    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"description": "x"}, headers=org.headers)
    assert resp.status_code == 200 and resp.json["data"]["headers"] == SHOWN
    assert _stored_token(endpoint_id) == token


def test_a_masked_value_sent_back_keeps_the_stored_one_and_a_new_value_replaces_it(client, org):
    from shared.services.endpoint_headers import stored_headers

    endpoint_id = _v1_create(client, org, headers=GIVEN).json["data"]["endpoint_id"]
    # What a client read, with one credential re-typed, one renamed in another case and
    # one header dropped.
    sent = dict(SHOWN, **{"X-Api-Key": "k-new"})
    del sent["Cookie"]
    sent["authorization"] = sent.pop("Authorization")
    resp = client.put(f"/v1/webhooks/{endpoint_id}", json={"headers": sent}, headers=org.headers)
    assert resp.status_code == 200, resp.json
    expected = dict(GIVEN, **{"X-Api-Key": "k-new"})
    del expected["Cookie"]
    expected["authorization"] = expected.pop("Authorization")
    assert stored_headers(_stored_token(endpoint_id)) == expected


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ("Authorization: x", "must be an object"),
        (["X-A", "1"], "must be an object"),
        (7, "must be an object"),
        ({"X-A": 1}, "X-A must be a string"),
        ({"X-A": None}, "X-A must be a string"),
        ({"X-A": {"b": "c"}}, "X-A must be a string"),
        ({"X-A": "a\r\nX-Injected: 1"}, "CR, LF or NUL"),
        ({"X-A": "a\nb"}, "CR, LF or NUL"),
        ({"X-A": "caf\u00e9"}, "printable ASCII"),
        ({"X-A": "a\x7fb"}, "printable ASCII"),
        ({"X-A": " padded"}, "whitespace"),
        ({"X-A": "x" * 1025}, "at most 1024 bytes"),
        ({f"X-{n}": "x" * 1000 for n in range(9)}, "8192 bytes in all"),
        ({f"X-{n}": "1" for n in range(21)}, "at most 20 headers"),
        ({"": "1"}, "not a valid header name"),
        ({"X A": "1"}, "'X A' is not a valid header name"),
        ({"X:A": "1"}, "not a valid header name"),
        ({"X-\u00e9": "1"}, "not a valid header name"),
        ({"X" * 257: "1"}, "at most 256 characters"),
        ({"X-A": "1", "x-a": "2"}, "x-a is given twice"),
        ({"X-New-Key": MASK}, "has none for this header"),
    ]
    + [
        ({name: "1"}, f"{name} is set by the service")
        for name in (
            "Webhook-Id",
            "webhook-signature",
            "WEBHOOK-anything",
            "Content-Type",
            "content-length",
            "Content-Encoding",
            "Host",
            "User-Agent",
            "Connection",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Trailer",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-x",
        )
    ],
)
def test_forbidden_or_malformed_headers_are_400_on_both_faces_naming_the_field(
    client, org, headers, words
):
    v1 = _v1_create(client, org, headers=headers)
    assert v1.status_code == 400, v1.json
    assert v1.json["success"] is False
    assert v1.json["error"].startswith("headers") and words in v1.json["error"]
    org_face = _org_create(client, org, headers=headers)
    assert org_face.status_code == 400, org_face.json
    assert org_face.json["message"].startswith("headers") and words in org_face.json["message"]

    # On update too, and nothing is written.
    endpoint_id = _v1_create(client, org, headers={"X-Keep": "1"}).json["data"]["endpoint_id"]
    token = _stored_token(endpoint_id)
    put = client.put(f"/v1/webhooks/{endpoint_id}", json={"headers": headers}, headers=org.headers)
    assert put.status_code == 400 and words in put.json["error"]
    patch = client.patch(
        f"{_org_endpoints(org)}/{endpoint_id}", json={"headers": headers}, headers=org.headers
    )
    assert patch.status_code == 400 and words in patch.json["message"]
    assert _stored_token(endpoint_id) == token


def test_a_nul_in_a_value_is_400_on_both_faces(client, org):
    from shared.errors import Invalid
    from shared.services.endpoint_headers import validate_headers

    # Every face refuses a NUL anywhere in a JSON body before reading its fields (it
    # cannot be stored); the service refuses it in a header value for any other caller.
    v1 = _v1_create(client, org, headers={"X-A": "a\x00b"})
    assert v1.status_code == 400 and "NUL" in v1.json["error"]
    org_face = _org_create(client, org, headers={"X-A": "a\x00b"})
    assert org_face.status_code == 400 and "NUL" in org_face.json["message"]
    with pytest.raises(Invalid, match="headers: the value of X-A must not contain CR, LF or NUL"):
        validate_headers({"X-A": "a\x00b"})


def test_the_limits_themselves_are_accepted(client, org):
    # 20 headers, 8 of them at 1 KiB: 8 KiB in all.
    at_limits = {f"X-{n}": "v" * 1024 if n < 8 else "" for n in range(20)}
    resp = _v1_create(client, org, headers=at_limits)
    assert resp.status_code == 201, resp.json
    assert resp.json["data"]["headers"] == at_limits
    # Tokens may use every character RFC 9110 allows; values may hold inner spaces and "".
    odd = {"X!#$%&'*+-.^_`|~9": "a b\tc", "Accept": ""}
    resp = _v1_create(client, org, headers=odd)
    assert resp.status_code == 201, resp.json
    assert resp.json["data"]["headers"] == odd


def test_the_e2b_face_does_not_show_headers(client, org):
    resp = client.post(
        "/events/webhooks/sandboxes",
        json={"url": "https://example.com/e2b", "events": ["create"]},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    assert "headers" not in resp.json
    assert "headers" not in client.get("/events/webhooks/sandboxes", headers=org.headers).json
    resp = client.patch(
        "/events/webhooks/sandboxes", json={"headers": {"X-A": "1"}}, headers=org.headers
    )
    assert resp.status_code == 400


def test_openapi_describes_headers_on_both_faces(client):
    spec = client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]
    for name in ("V1EndpointCreate", "V1EndpointUpdate", "EndpointCreate", "EndpointUpdate"):
        field = schemas[name]["properties"]["headers"]
        assert field["type"] == "object" and "§11.1" in field["description"], name
        assert field["additionalProperties"]["type"] == "string"
    for name in ("V1Endpoint", "Endpoint"):
        field = schemas[name]["properties"]["headers"]
        assert field["readOnly"] is True and "********" in field["description"], name
