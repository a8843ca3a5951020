"""Tests of the event catalog, name mapping, matching and subscription validation."""

import pytest

from shared.errors import Forbidden, Invalid
from shared.events import (
    ACCOUNT_LEVEL_TYPES,
    CATALOG,
    E2B_LABELS,
    PRECONFIGURED_CATEGORIES,
    V1_EVENT_TYPES,
    EventNames,
    delivery_name,
    example_event,
    is_custom_event_name,
    is_final_event,
    matches_subscription,
    resolve_names,
    validate_e2b_events,
    validate_event_types,
    validate_v1_event_types,
)

ACCOUNT_TYPES = {
    "payment.succeeded",
    "payment.failed",
    "subscription.created",
    "subscription.updated",
    "subscription.cancelled",
    "budget.threshold_reached",
    "budget.exceeded",
}


def state_update(old: str, new: str) -> EventNames:
    return resolve_names(
        "sandbox.state.updated",
        {"id": "sandbox123", "organizationId": "org123", "oldState": old, "newState": new},
    )


# --- catalog -----------------------------------------------------------------


def test_catalog_holds_every_canonical_type_of_the_spec():
    assert set(CATALOG) == {
        "sandbox.created",
        "sandbox.state.updated",
        "sandbox.updated",
        "sandbox.desired-state.updated",
        "sandbox.project_switched",
        "snapshot.created",
        "snapshot.state.updated",
        "snapshot.removed",
        "volume.created",
        "volume.state.updated",
        "volume.lastUsedAt.updated",
        "audit-log.created",
        "audit-log.updated",
        "template.uploaded",
        "template.deleted",
        *ACCOUNT_TYPES,
    }


def test_account_level_types_are_the_seven_billing_types():
    assert ACCOUNT_LEVEL_TYPES == ACCOUNT_TYPES
    assert all(CATALOG[name].account_level for name in ACCOUNT_TYPES)
    assert all(CATALOG[name].category == "account" for name in ACCOUNT_TYPES)


def test_v1_event_types_are_the_v1_column():
    assert set(V1_EVENT_TYPES) == {
        "sandbox.created",
        "sandbox.started",
        "sandbox.stopped",
        "sandbox.paused",
        "sandbox.resumed",
        "sandbox.terminated",
        "sandbox.failed",
        "sandbox.project_switched",
        "template.uploaded",
        "template.deleted",
        *ACCOUNT_TYPES,
    }


def test_e2b_labels_are_the_five_lifecycle_labels():
    assert E2B_LABELS == ("create", "kill", "update", "pause", "resume")


@pytest.mark.parametrize("event_type", sorted(CATALOG))
def test_every_example_carries_id_organization_and_the_types_fields(event_type):
    entry = CATALOG[event_type]
    assert set(entry.example) == {"id", "organizationId", *entry.fields}
    assert "event" not in entry.example and "timestamp" not in entry.example
    assert entry.description


def test_catalog_records_every_name_of_the_state_update():
    entry = CATALOG["sandbox.state.updated"]
    assert set(entry.v1_types) == {
        "sandbox.started",
        "sandbox.resumed",
        "sandbox.stopped",
        "sandbox.paused",
        "sandbox.terminated",
        "sandbox.failed",
    }
    assert set(entry.e2b_labels) == {"resume", "pause", "kill"}


def test_preconfigured_categories_follow_the_spec_table_in_order():
    assert [(c.category, c.event_types) for c in PRECONFIGURED_CATEGORIES] == [
        ("sandbox-events", ["sandbox.*"]),
        ("snapshot-events", ["snapshot.*"]),
        ("volume-events", ["volume.*"]),
        ("audit-events", ["audit-log.*"]),
        ("all-events", ["*"]),
    ]
    category, event_types, description = PRECONFIGURED_CATEGORIES[0]
    assert category == "sandbox-events" and event_types == ["sandbox.*"] and description


# --- resolve_names: every row of the docs/api.md §4.1 condition table -----------------


@pytest.mark.parametrize(
    ("event_type", "v1", "e2b"),
    [
        ("sandbox.created", ("sandbox.created",), "create"),
        ("sandbox.updated", (), "update"),
        ("sandbox.desired-state.updated", (), None),
        ("sandbox.project_switched", ("sandbox.project_switched",), None),
        ("snapshot.created", (), None),
        ("snapshot.state.updated", (), None),
        ("snapshot.removed", (), None),
        ("volume.created", (), None),
        ("volume.state.updated", (), None),
        ("volume.lastUsedAt.updated", (), None),
        ("audit-log.created", (), None),
        ("audit-log.updated", (), None),
        ("template.uploaded", ("template.uploaded",), None),
        ("template.deleted", ("template.deleted",), None),
        *[(name, (name,), None) for name in sorted(ACCOUNT_TYPES)],
    ],
)
def test_unconditional_rows_map_to_their_names(event_type, v1, e2b):
    names = resolve_names(event_type, dict(CATALOG[event_type].example))
    assert names == EventNames(event_type, v1, e2b, event_type in ACCOUNT_TYPES)


@pytest.mark.parametrize(
    ("old", "new", "v1", "e2b"),
    [
        ("paused", "started", ("sandbox.started", "sandbox.resumed"), "resume"),
        ("stopped", "started", ("sandbox.started",), None),
        ("creating", "started", ("sandbox.started",), None),
        ("started", "stopped", ("sandbox.stopped",), None),
        ("started", "paused", ("sandbox.paused",), "pause"),
        ("stopped", "destroyed", ("sandbox.terminated",), "kill"),
        ("started", "terminated", ("sandbox.terminated",), "kill"),
        ("starting", "error", ("sandbox.failed",), None),
        ("building", "build_failed", ("sandbox.failed",), None),
        ("started", "failed", ("sandbox.failed",), None),
        ("stopped", "starting", (), None),
        ("started", "archived", (), None),
    ],
)
def test_state_update_follows_the_condition_table(old, new, v1, e2b):
    names = state_update(old, new)
    assert names.canonical == "sandbox.state.updated"
    assert names.v1 == v1
    assert names.e2b == e2b
    assert names.account_level is False


@pytest.mark.parametrize(
    ("old", "new", "v1", "e2b"),
    [
        ("PAUSED", "STARTED", ("sandbox.started", "sandbox.resumed"), "resume"),
        ("Paused", "Started", ("sandbox.started", "sandbox.resumed"), "resume"),
        ("STARTED", "STOPPED", ("sandbox.stopped",), None),
        ("STARTED", "PAUSED", ("sandbox.paused",), "pause"),
        ("STOPPED", "DESTROYED", ("sandbox.terminated",), "kill"),
        ("STARTING", "BUILD_FAILED", ("sandbox.failed",), None),
    ],
)
def test_state_names_compare_case_insensitively(old, new, v1, e2b):
    names = state_update(old, new)
    assert (names.v1, names.e2b) == (v1, e2b)


def test_state_update_without_states_has_no_other_names():
    names = resolve_names("sandbox.state.updated", {"id": "s", "organizationId": "o"})
    assert names == EventNames("sandbox.state.updated")


def test_custom_type_has_only_its_own_name():
    names = resolve_names("custom.event", {"message": "hi"})
    assert names == EventNames("custom.event", (), None, False)
    assert names.all == ("custom.event",)


def test_all_lists_every_name_once():
    assert state_update("paused", "started").all == (
        "sandbox.state.updated",
        "sandbox.started",
        "sandbox.resumed",
        "resume",
    )
    assert resolve_names("sandbox.created", {}).all == ("sandbox.created", "create")


# --- matches_subscription -----------------------------------------------------


@pytest.mark.parametrize(
    "subscriptions",
    [
        [],
        ["*"],
        ["sandbox.*"],
        ["sandbox.state.*"],
        ["sandbox.state.updated"],
        ["SANDBOX.STATE.UPDATED"],
        ["sandbox.resumed"],
        ["sandbox.started"],
        ["resume"],
        ["snapshot.created", "sandbox.resumed"],
    ],
)
def test_event_matches_by_any_of_its_names(subscriptions):
    assert matches_subscription(subscriptions, state_update("paused", "started"))


@pytest.mark.parametrize(
    "subscriptions",
    [
        ["snapshot.*"],
        ["sandbox.stopped"],
        ["pause", "kill"],
        ["sandbox.state"],
        ["sandbox"],
        ["sandbox.state.updated.extra"],
        ["sandbox.st*"],
    ],
)
def test_event_does_not_match_other_names(subscriptions):
    assert not matches_subscription(subscriptions, state_update("paused", "started"))


def test_wildcard_needs_the_dot_after_its_prefix():
    names = resolve_names("sandboxes.created", {})
    assert not matches_subscription(["sandbox.*"], names)
    assert matches_subscription(["sandboxes.*"], names)


def test_wildcards_and_empty_list_match_custom_events():
    names = resolve_names("custom.event", {})
    assert matches_subscription([], names)
    assert matches_subscription(["*"], names)
    assert matches_subscription(["custom.*"], names)
    assert matches_subscription(["Custom.Event"], names)
    assert not matches_subscription(["custom.other"], names)


@pytest.mark.parametrize("subscriptions", [[], ["*"], ["payment.*"], ["budget.*", "*"]])
def test_account_level_events_never_match_wildcards_or_empty_list(subscriptions):
    for name in ACCOUNT_TYPES:
        assert not matches_subscription(subscriptions, resolve_names(name, {}))


def test_account_level_events_match_their_exact_name():
    names = resolve_names("payment.failed", {})
    assert matches_subscription(["payment.failed"], names)
    assert matches_subscription(["PAYMENT.FAILED"], names)
    assert matches_subscription(["*", "payment.failed"], names)
    assert not matches_subscription(["payment.succeeded"], names)


# --- delivery_name ------------------------------------------------------------


def test_no_delivery_when_nothing_matches():
    names = state_update("paused", "started")
    for payload_format in ("daytona", "envelope", "e2b"):
        assert delivery_name(["snapshot.*"], names, payload_format) is None


def test_daytona_deliveries_carry_the_canonical_name():
    names = state_update("paused", "started")
    assert delivery_name(["sandbox.resumed"], names, "daytona") == "sandbox.state.updated"
    assert delivery_name(["resume"], names, "daytona") == "sandbox.state.updated"


@pytest.mark.parametrize(
    ("subscriptions", "expected"),
    [
        # docs/api.md §5: both names match, one delivery typed with the specific one.
        (["sandbox.started", "sandbox.resumed"], "sandbox.resumed"),
        (["sandbox.resumed", "sandbox.started"], "sandbox.resumed"),
        (["sandbox.resumed"], "sandbox.resumed"),
        # Only the general name was asked for: that is what the endpoint gets.
        (["sandbox.started"], "sandbox.started"),
        # Matched through canonical, label, wildcard or empty list.
        (["sandbox.state.updated"], "sandbox.resumed"),
        (["resume"], "sandbox.resumed"),
        (["sandbox.*"], "sandbox.resumed"),
        (["*"], "sandbox.resumed"),
        ([], "sandbox.resumed"),
        # The general /v1 name beside another that reaches the specific case.
        (["sandbox.started", "resume"], "sandbox.resumed"),
        (["resume", "sandbox.started"], "sandbox.resumed"),
        (["sandbox.started", "sandbox.state.updated"], "sandbox.resumed"),
        (["sandbox.started", "sandbox.*"], "sandbox.resumed"),
        (["sandbox.started", "snapshot.*"], "sandbox.started"),
    ],
)
def test_envelope_delivery_prefers_the_most_specific_v1_name(subscriptions, expected):
    names = state_update("paused", "started")
    assert delivery_name(subscriptions, names, "envelope") == expected


def test_envelope_falls_back_to_canonical_without_v1_name():
    assert delivery_name([], state_update("stopped", "starting"), "envelope") == (
        "sandbox.state.updated"
    )
    assert delivery_name(["snapshot.*"], resolve_names("snapshot.created", {}), "envelope") == (
        "snapshot.created"
    )
    assert delivery_name([], resolve_names("custom.event", {}), "envelope") == "custom.event"


def test_envelope_account_level_delivery_needs_the_exact_name():
    names = resolve_names("budget.exceeded", {})
    assert delivery_name(["budget.exceeded"], names, "envelope") == "budget.exceeded"
    assert delivery_name(["*"], names, "envelope") is None
    assert delivery_name(["budget.exceeded"], names, "daytona") == "budget.exceeded"


@pytest.mark.parametrize(
    ("old", "new", "label"),
    [
        ("paused", "started", "resume"),
        ("started", "paused", "pause"),
        ("stopped", "destroyed", "kill"),
    ],
)
def test_e2b_delivery_carries_the_label(old, new, label):
    names = state_update(old, new)
    assert delivery_name(list(E2B_LABELS), names, "e2b") == label
    assert delivery_name(["sandbox.state.updated"], names, "e2b") == label


def test_e2b_delivery_needs_a_subscribed_label():
    assert delivery_name(["create"], state_update("started", "paused"), "e2b") is None
    assert delivery_name(["create"], resolve_names("sandbox.created", {}), "e2b") == "create"
    assert delivery_name(["update"], resolve_names("sandbox.updated", {}), "e2b") == "update"


@pytest.mark.parametrize(
    "subscriptions",
    [["*"], [], ["sandbox.*"], ["sandbox.stopped"], ["SANDBOX.STOPPED"], ["sandbox.state.updated"]],
)
def test_e2b_endpoint_gets_label_less_events_under_the_canonical_name(subscriptions):
    # docs/api.md §4.1: any of the event's names matches; docs/api.md §4.2: the E2B face has
    # no name for a stop, so the delivery carries the canonical one.
    stopped = state_update("started", "stopped")
    assert delivery_name(subscriptions, stopped, "e2b") == "sandbox.state.updated"


def test_e2b_endpoint_matches_labelled_events_through_any_of_their_names():
    paused = state_update("started", "paused")
    for subscriptions in (["*"], [], ["sandbox.*"], ["sandbox.paused"], ["pause"]):
        assert delivery_name(subscriptions, paused, "e2b") == "pause"
    created = resolve_names("sandbox.created", {})
    assert delivery_name(["sandbox.created"], created, "e2b") == "create"


def test_e2b_endpoint_gets_other_resources_by_wildcard_or_name():
    snapshot = resolve_names("snapshot.created", {})
    assert delivery_name(["*"], snapshot, "e2b") == "snapshot.created"
    assert delivery_name([], snapshot, "e2b") == "snapshot.created"
    assert delivery_name(["snapshot.*"], snapshot, "e2b") == "snapshot.created"
    assert delivery_name(["snapshot.created"], snapshot, "e2b") == "snapshot.created"
    assert delivery_name(["sandbox.*"], snapshot, "e2b") is None


def test_e2b_endpoint_with_labels_only_gets_labelled_events():
    assert delivery_name(list(E2B_LABELS), state_update("started", "stopped"), "e2b") is None
    assert delivery_name(list(E2B_LABELS), resolve_names("snapshot.created", {}), "e2b") is None


def test_e2b_account_level_delivery_needs_the_exact_name():
    names = resolve_names("payment.failed", {})
    assert delivery_name(["payment.failed"], names, "e2b") == "payment.failed"
    assert delivery_name(["*"], names, "e2b") is None
    assert delivery_name([], names, "e2b") is None
    assert delivery_name(["payment.*"], names, "e2b") is None


def test_custom_events_never_go_to_e2b_endpoints():
    names = resolve_names("custom.event", {})
    assert delivery_name(["custom.event"], names, "e2b") is None
    assert delivery_name([], names, "e2b") is None
    assert delivery_name(["*"], names, "e2b") is None
    assert delivery_name(["custom.*"], names, "e2b") is None


# --- validate_v1_event_types --------------------------------------------------


def test_v1_accepts_its_column_and_deduplicates_in_order():
    result = validate_v1_event_types(
        ["sandbox.started", "sandbox.terminated", "sandbox.started"],
        is_root=False,
        scope="user",
    )
    assert result == ["sandbox.started", "sandbox.terminated"]


@pytest.mark.parametrize(
    "name",
    [
        "sandbox.unknown",
        "sandbox.state.updated",
        "sandbox.*",
        "*",
        "create",
        "Sandbox.Started",
        "custom.event",
    ],
)
def test_v1_refuses_names_outside_its_column(name):
    with pytest.raises(Invalid) as caught:
        validate_v1_event_types(["sandbox.created", name], is_root=True, scope="account")
    assert caught.value.message == f"Invalid event type: {name}"


@pytest.mark.parametrize("value", [[], None, "sandbox.started"])
def test_v1_needs_a_non_empty_list(value):
    with pytest.raises(Invalid) as caught:
        validate_v1_event_types(value, is_root=True, scope="account")
    assert caught.value.message == "event_types must be a non-empty list"


def test_v1_refuses_non_string_entries():
    with pytest.raises(Invalid) as caught:
        validate_v1_event_types([5], is_root=True, scope="account")
    assert caught.value.message == "Invalid event type: 5"


def test_v1_account_level_types_need_root_and_account_scope():
    assert validate_v1_event_types(
        ["payment.failed"],
        is_root=True,
        scope="account",
    ) == ["payment.failed"]
    with pytest.raises(Forbidden) as caught:
        validate_v1_event_types(["payment.failed"], is_root=False, scope="account")
    assert caught.value.message == (
        "Account-level event types require a root user and an account-scoped webhook"
    )
    with pytest.raises(Invalid):
        validate_v1_event_types(["payment.failed"], is_root=True, scope="user")


# --- validate_event_types -----------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "sandbox.state.updated",
        "sandbox.resumed",
        "create",
        "kill",
        "volume.lastUsedAt.updated",
        "audit-log.created",
        "custom.event",
        "my-app.deploy_done.v2",
        "sandbox.*",
        "audit-log.*",
        "volume.lastUsedAt.*",
        "*",
    ],
)
def test_api_accepts_every_vocabulary_custom_names_and_wildcards(name):
    assert validate_event_types([name], is_root=False, scope="account") == [name]


def test_api_accepts_an_empty_list():
    assert validate_event_types([], is_root=False, scope="account") == []


def test_api_deduplicates_keeping_order():
    result = validate_event_types(
        ["sandbox.*", "create", "sandbox.*", "custom.event", "create"],
        is_root=False,
        scope="account",
    )
    assert result == ["sandbox.*", "create", "custom.event"]


@pytest.mark.parametrize(
    "name",
    [
        "custom",
        "Custom.Event",
        "custom..event",
        ".custom",
        "custom.",
        "custom event",
        "sandbox*",
        "*.created",
        "sandbox.*.updated",
        "**",
        "",
        "custom.évent",
    ],
)
def test_api_refuses_malformed_names(name):
    with pytest.raises(Invalid) as caught:
        validate_event_types([name], is_root=False, scope="account")
    assert caught.value.message == f"Invalid event type: {name}"


def test_api_refuses_too_long_names_and_too_many_entries():
    long_name = "custom." + "a" * 122
    assert len(long_name) == 129
    with pytest.raises(Invalid) as caught:
        validate_event_types([long_name], is_root=False, scope="account")
    assert caught.value.message.startswith("Invalid event type: custom.aaa")
    assert validate_event_types([long_name[:-1]], is_root=False, scope="account")

    many = [f"custom.event{i}" for i in range(101)]
    with pytest.raises(Invalid) as caught:
        validate_event_types(many, is_root=False, scope="account")
    assert caught.value.message == "eventTypes may hold at most 100 entries"
    assert len(validate_event_types(many[:100], is_root=False, scope="account")) == 100


def test_api_refuses_non_list_and_non_string_entries():
    with pytest.raises(Invalid) as caught:
        validate_event_types("sandbox.created", is_root=False, scope="account")
    assert caught.value.message == "eventTypes must be a list of event type names"
    with pytest.raises(Invalid) as caught:
        validate_event_types([None], is_root=False, scope="account")
    assert caught.value.message == "Invalid event type: None"


def test_api_account_level_types_need_root_and_account_scope():
    assert validate_event_types(
        ["budget.exceeded", "*"],
        is_root=True,
        scope="account",
    ) == ["budget.exceeded", "*"]
    with pytest.raises(Forbidden):
        validate_event_types(["budget.exceeded"], is_root=False, scope="account")
    with pytest.raises(Invalid) as caught:
        validate_event_types(["budget.exceeded"], is_root=True, scope="user")
    assert caught.value.message == (
        "Account-level event types require a root user and an account-scoped webhook"
    )


def test_api_wildcards_over_account_types_need_no_root():
    # They never match account-level events, so they grant nothing.
    assert validate_event_types(["payment.*"], is_root=False, scope="user") == ["payment.*"]


# --- validate_e2b_events ------------------------------------------------------


def test_e2b_accepts_a_subset_of_labels():
    assert validate_e2b_events(["create", "kill", "create"]) == ["create", "kill"]
    assert validate_e2b_events(list(E2B_LABELS)) == list(E2B_LABELS)


@pytest.mark.parametrize("bad", ["sandbox.created", "Create", "*", "stop"])
def test_e2b_refuses_other_names_naming_the_value(bad):
    with pytest.raises(Invalid) as caught:
        validate_e2b_events(["create", bad])
    assert caught.value.message == (
        f"Invalid event: {bad} (allowed: create, kill, update, pause, resume)"
    )


@pytest.mark.parametrize("value", [[], None, "create"])
def test_e2b_needs_a_non_empty_list(value):
    with pytest.raises(Invalid) as caught:
        validate_e2b_events(value)
    assert caught.value.message == (
        "events must be a non-empty list of: create, kill, update, pause, resume"
    )


# --- is_custom_event_name -----------------------------------------------------


@pytest.mark.parametrize("name", ["custom.event", "billing.invoice-sent", "a.b.c_d", "sandbox.x"])
def test_custom_names_are_well_formed_non_catalog_names(name):
    assert is_custom_event_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "sandbox.created",
        "sandbox.resumed",
        "create",
        "payment.failed",
        "volume.lastusedat.updated",
        "sandbox.*",
        "*",
        "custom",
        "Custom.Event",
        "custom." + "a" * 200,
    ],
)
def test_catalog_and_malformed_names_are_not_custom(name):
    assert not is_custom_event_name(name)


# --- example_event --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical", "v1", "e2b"),
    [
        ("sandbox.resumed", "sandbox.state.updated", "sandbox.resumed", "resume"),
        ("pause", "sandbox.state.updated", "sandbox.paused", "pause"),
        ("kill", "sandbox.state.updated", "sandbox.terminated", "kill"),
        ("sandbox.failed", "sandbox.state.updated", "sandbox.failed", None),
        ("sandbox.started", "sandbox.state.updated", "sandbox.started", None),
        ("create", "sandbox.created", "sandbox.created", "create"),
        ("update", "sandbox.updated", None, "update"),
    ],
)
def test_example_event_resolves_back_to_the_name_asked_for(name, canonical, v1, e2b):
    event_type, fields = example_event(name, organization_id="org-abc")
    assert event_type == canonical
    assert fields["organizationId"] == "org-abc"
    names = resolve_names(event_type, fields)
    assert (names.v1[-1] if names.v1 else None) == v1
    assert names.e2b == e2b


def test_example_event_does_not_share_the_catalog_dict():
    _, fields = example_event("sandbox.updated", organization_id="org-abc")
    fields["changes"]["class"] = "changed"
    assert CATALOG["sandbox.updated"].example["organizationId"] == "org123"
    assert CATALOG["sandbox.updated"].example["changes"]["class"] != "changed"


def test_example_event_refuses_unknown_names():
    with pytest.raises(Invalid) as caught:
        example_event("custom.event", organization_id="org-abc")
    assert caught.value.message == "Invalid event type: custom.event"


@pytest.mark.parametrize(
    ("event_type", "fields", "final"),
    [
        ("sandbox.state.updated", {"newState": "destroyed"}, True),
        ("sandbox.state.updated", {"newState": "TERMINATED"}, True),
        ("volume.state.updated", {"newState": "deleted"}, True),
        ("snapshot.removed", {}, True),
        ("sandbox.state.updated", {"newState": "stopped"}, False),
        ("snapshot.state.updated", {"newState": "deleted"}, False),
        ("sandbox.desired-state.updated", {"newDesiredState": "destroyed"}, False),
    ],
)
def test_a_resources_final_event_is_its_end_state_or_removal(event_type, fields, final):
    assert is_final_event(event_type, fields) is final


@pytest.mark.parametrize("name", ["endpoint.failing", "message.attempt.exhausted"])
def test_operational_events_reach_only_subscriptions_naming_them(name):
    names = resolve_names(name, {})
    assert matches_subscription([name], names)
    for others in ([], ["*"], ["endpoint.*"], ["message.*"], ["message.attempt.*"]):
        assert not matches_subscription(others, names), others
    assert delivery_name([name], names, "envelope") == name
    assert delivery_name([name], names, "e2b") is None


def test_operational_names_are_accepted_from_any_user_and_never_sent_as_custom_events():
    names = ["endpoint.failing", "endpoint.disabled", "message.attempt.exhausted"]
    assert validate_v1_event_types(names, is_root=False, scope="user") == names
    assert validate_event_types(names, is_root=False, scope="user") == names
    assert not any(is_custom_event_name(name) for name in names)
    assert not is_custom_event_name("Endpoint.Failing")
