"""Tests of the three payload formats and their serialization."""

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.events import CATALOG, resolve_names
from shared.payloads import (
    example_payload,
    format_timestamp,
    render_payload,
    serialize,
    snake_case,
)
from tests.support.daytona_examples import DAYTONA_DOC_EXAMPLES

DOC_TIMESTAMP = "2025-12-19T10:30:00.000Z"


def render(payload_format, event_type, fields, *, name=None, custom=False):
    return render_payload(
        payload_format=payload_format,
        message_id="evt-abc123def456789",
        event_type=event_type,
        delivery_name=name or event_type,
        fields=fields,
        timestamp=DOC_TIMESTAMP,
        custom=custom,
    )


def ordered(payload):
    """A dict with its key order, since == on dicts ignores order."""
    return json.dumps(payload)


# --- format_timestamp ---------------------------------------------------------


def test_timestamp_has_milliseconds_and_z():
    assert format_timestamp(datetime(2025, 12, 19, 10, 30, tzinfo=UTC)) == (
        "2025-12-19T10:30:00.000Z"
    )
    assert format_timestamp(datetime(2025, 12, 19, 10, 30, 5, 123999, tzinfo=UTC)) == (
        "2025-12-19T10:30:05.123Z"
    )


def test_naive_timestamp_is_taken_as_utc():
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5, 6000)) == "2025-01-02T03:04:05.006Z"


def test_aware_timestamp_is_converted_to_utc():
    paris = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2025, 1, 1, 0, 30, tzinfo=paris)) == (
        "2024-12-31T23:30:00.000Z"
    )


# --- daytona ------------------------------------------------------------------


@pytest.mark.parametrize("documented", DAYTONA_DOC_EXAMPLES, ids=lambda d: d["event"])
def test_daytona_format_reproduces_the_documented_example(documented):
    fields = {k: v for k, v in documented.items() if k not in ("event", "timestamp")}
    names = resolve_names(documented["event"], fields)
    payload = render("daytona", documented["event"], fields, name=names.canonical)
    assert payload == documented
    assert ordered(payload) == ordered(documented)


@pytest.mark.parametrize("documented", DAYTONA_DOC_EXAMPLES, ids=lambda d: d["event"])
def test_catalog_example_is_the_documented_example(documented):
    payload = example_payload(
        documented["event"], organization_id="org123", timestamp=DOC_TIMESTAMP
    )
    assert ordered(payload) == ordered(documented)


def test_example_payload_uses_the_real_organization():
    payload = example_payload(
        "sandbox.created",
        organization_id="org-abcdefghijklmno",
        timestamp="2026-01-01T00:00:00.000Z",
    )
    assert payload["organizationId"] == "org-abcdefghijklmno"
    assert payload["event"] == "sandbox.created"
    assert payload["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert CATALOG["sandbox.created"].example["organizationId"] == "org123"


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_every_catalog_type_has_a_full_example(event_type):
    payload = example_payload(event_type, organization_id="org-x", timestamp=DOC_TIMESTAMP)
    assert list(payload)[:2] == ["event", "timestamp"]
    assert payload["event"] == event_type
    assert payload["id"] and payload["organizationId"] == "org-x"


def test_daytona_keeps_extra_fields_in_reported_order():
    fields = {
        "id": "s1",
        "organizationId": "o1",
        "oldState": "paused",
        "newState": "started",
        "updatedAt": DOC_TIMESTAMP,
        "templateId": "t1",
        "metadata": {"k": "v"},
    }
    payload = render("daytona", "sandbox.state.updated", fields)
    assert list(payload) == ["event", "timestamp", *fields]
    assert payload["metadata"] == {"k": "v"}


def test_daytona_custom_payload_keeps_keys_and_adds_timestamp():
    payload = render("daytona", "custom.event", {"message": "Hello", "n": 1}, custom=True)
    assert ordered(payload) == ordered(
        {"event": "custom.event", "timestamp": DOC_TIMESTAMP, "message": "Hello", "n": 1}
    )


def test_daytona_custom_payload_keeps_its_own_timestamp_and_loses_its_event():
    sent = {"message": "Hello", "timestamp": "2025-01-01T00:00:00.000Z", "event": "spoofed"}
    payload = render("daytona", "custom.event", sent, custom=True)
    assert payload == {
        "event": "custom.event",
        "message": "Hello",
        "timestamp": "2025-01-01T00:00:00.000Z",
    }


# --- envelope -----------------------------------------------------------------


def test_envelope_wraps_snake_case_data_with_resource_id_and_status():
    fields = {
        "id": "sandbox123",
        "organizationId": "org123",
        "oldState": "paused",
        "newState": "started",
        "updatedAt": DOC_TIMESTAMP,
    }
    payload = render("envelope", "sandbox.state.updated", fields, name="sandbox.resumed")
    assert ordered(payload) == ordered(
        {
            "id": "evt-abc123def456789",
            "type": "sandbox.resumed",
            "timestamp": DOC_TIMESTAMP,
            "data": {
                "sandbox_id": "sandbox123",
                "organization_id": "org123",
                "status": "running",
                "old_state": "paused",
                "new_state": "started",
                "updated_at": DOC_TIMESTAMP,
            },
        }
    )


@pytest.mark.parametrize(
    ("state", "status"),
    [
        ("started", "running"),
        ("STARTED", "running"),
        ("stopped", "stopped"),
        ("paused", "paused"),
        ("destroyed", "terminated"),
        ("terminated", "terminated"),
        ("error", "failed"),
        ("build_failed", "failed"),
        ("failed", "failed"),
        ("Starting", "Starting"),
        ("archived", "archived"),
    ],
)
def test_envelope_status_uses_scalebox_words(state, status):
    fields = {"id": "sandbox123", "organizationId": "org123", "oldState": "x", "newState": state}
    data = render("envelope", "sandbox.state.updated", fields)["data"]
    assert data["status"] == status
    assert data["new_state"] == state


def test_envelope_status_comes_from_state_when_no_new_state():
    fields = dict(CATALOG["sandbox.created"].example)
    data = render("envelope", "sandbox.created", fields)["data"]
    assert list(data)[:3] == ["sandbox_id", "organization_id", "status"]
    assert data["status"] == "running"
    assert data["state"] == "started"
    assert data["class"] == "small"


def test_envelope_without_state_has_no_status():
    fields = dict(CATALOG["snapshot.removed"].example)
    data = render("envelope", "snapshot.removed", fields)["data"]
    assert data == {
        "snapshot_id": "snapshot123",
        "organization_id": "org123",
        "name": "my-snapshot",
        "removed_at": DOC_TIMESTAMP,
    }


@pytest.mark.parametrize(
    ("event_type", "key"),
    [
        ("sandbox.created", "sandbox_id"),
        ("snapshot.created", "snapshot_id"),
        ("volume.lastUsedAt.updated", "volume_id"),
        ("audit-log.created", "audit_log_id"),
        ("template.uploaded", "template_id"),
        ("payment.succeeded", "payment_id"),
        ("subscription.cancelled", "subscription_id"),
        ("budget.exceeded", "budget_id"),
    ],
)
def test_envelope_names_the_resource_id_after_the_type(event_type, key):
    fields = dict(CATALOG[event_type].example)
    data = render("envelope", event_type, fields)["data"]
    assert list(data)[:2] == [key, "organization_id"]
    assert data[key] == fields["id"]
    assert "id" not in data and "organizationId" not in data


def test_envelope_renames_top_level_keys_only():
    fields = {
        "id": "vol-1",
        "organizationId": "org123",
        "name": "v",
        "lastUsedAt": DOC_TIMESTAMP,
        "metadata": {"ownerTeam": "a"},
        "changes": {"cpuCount": {"old": 1, "new": 2}},
    }
    data = render("envelope", "volume.lastUsedAt.updated", fields)["data"]
    assert data["last_used_at"] == DOC_TIMESTAMP
    assert data["metadata"] == {"ownerTeam": "a"}
    assert data["changes"] == {"cpuCount": {"old": 1, "new": 2}}


def test_envelope_account_event_keeps_its_status_first():
    fields = dict(CATALOG["payment.failed"].example)
    data = render("envelope", "payment.failed", fields)["data"]
    assert list(data)[:3] == ["payment_id", "organization_id", "status"]
    assert data["status"] == "failed"
    assert data["created_at"] == fields["createdAt"]


def test_envelope_custom_event_carries_the_payload_as_data():
    sent = {"message": "Hello", "someKey": {"innerKey": 1}}
    payload = render("envelope", "custom.event", sent, custom=True)
    assert payload == {
        "id": "evt-abc123def456789",
        "type": "custom.event",
        "timestamp": DOC_TIMESTAMP,
        "data": sent,
    }


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("organizationId", "organization_id"),
        ("oldState", "old_state"),
        ("lastUsedAt", "last_used_at"),
        ("oldDesiredState", "old_desired_state"),
        ("class", "class"),
        ("already_snake", "already_snake"),
        ("sandboxURL", "sandbox_url"),
        ("statusCode", "status_code"),
    ],
)
def test_snake_case(key, expected):
    assert snake_case(key) == expected


# --- e2b ----------------------------------------------------------------------


def test_e2b_payload_carries_the_sandbox_fields():
    fields = {
        "id": "sbx1",
        "organizationId": "org-team",
        "state": "started",
        "class": "small",
        "createdAt": DOC_TIMESTAMP,
        "templateId": "rki5dems9wqfm4r03t7g",
        "buildId": "a979a14b",
        "executionId": "1dae9a1c",
        "metadata": {"k": "v"},
    }
    payload = render("e2b", "sandbox.created", fields, name="create")
    assert ordered(payload) == ordered(
        {
            "eventCategory": "lifecycle",
            "eventLabel": "create",
            "eventData": {"sandbox_metadata": {"k": "v"}},
            "sandboxBuildId": "a979a14b",
            "sandboxExecutionId": "1dae9a1c",
            "sandboxId": "sbx1",
            "sandboxTeamId": "org-team",
            "sandboxTemplateId": "rki5dems9wqfm4r03t7g",
            "timestamp": DOC_TIMESTAMP,
        }
    )


def test_e2b_payload_has_empty_strings_for_unreported_ids():
    fields = {
        "id": "sbx1",
        "organizationId": "org-team",
        "oldState": "started",
        "newState": "destroyed",
    }
    payload = render("e2b", "sandbox.state.updated", fields, name="kill")
    assert payload["eventLabel"] == "kill"
    assert payload["eventData"] == {"sandbox_metadata": {}}
    assert payload["sandboxBuildId"] == ""
    assert payload["sandboxExecutionId"] == ""
    assert payload["sandboxTemplateId"] == ""
    numeric = render("e2b", "sandbox.state.updated", {**fields, "buildId": 7}, name="kill")
    assert numeric["sandboxBuildId"] == "7"


def test_e2b_refuses_custom_events():
    with pytest.raises(ValueError):
        render("e2b", "custom.event", {"message": "hi"}, custom=True)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        render("xml", "sandbox.created", dict(CATALOG["sandbox.created"].example))


# --- serialize ----------------------------------------------------------------


def test_serialize_is_compact_utf8_json_in_key_order():
    body = serialize({"event": "custom.event", "message": "héllo ✓", "n": [1, 2]})
    assert body == '{"event":"custom.event","message":"héllo ✓","n":[1,2]}'.encode()


def test_serialize_escapes_lone_surrogates_instead_of_failing():
    body = serialize({"message": "bad \ud800 text"})
    assert json.loads(body) == {"message": "bad \ud800 text"}
