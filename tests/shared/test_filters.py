"""Payload filters: every operator on present, missing and mistyped fields, and every refusal."""

from __future__ import annotations

import json

import pytest

from shared.errors import Invalid
from shared.filters import MAX_BYTES, MAX_KEYS, compile_filter, stored_predicate, validate_filter

EVENT = {
    "id": "sbx-1",
    "organizationId": "org-1",
    "oldState": "paused",
    "newState": "STARTED",
    "state": "Started ",
    "class": "small",
    "cpu": 2,
    "ratio": 0.5,
    "public": True,
    "note": None,
    "updatedAt": "2025-12-19T10:30:00.000Z",
    "metadata": {"team": "blue", "tier": {"level": 3}, "tags": ["a", "b"]},
}


def matches(spec: dict, event: dict = EVENT) -> bool:
    predicate = compile_filter(spec)
    assert predicate is not None
    return predicate(event)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # a scalar: the field equals it
        ({"class": "small"}, True),
        ({"class": "large"}, False),
        ({"class": "SMALL"}, False),  # only state fields ignore case
        ({"cpu": 2}, True),
        ({"cpu": 2.0}, True),
        ({"cpu": "2"}, False),  # JSON kinds stay apart
        ({"public": True}, True),
        ({"public": 1}, False),
        ({"cpu": True}, False),
        ({"note": None}, True),  # a reported null is a value
        ({"missing": None}, False),
        ({"metadata.tags": "a"}, False),  # an array equals no scalar
        # an array of scalars: one of
        ({"class": ["medium", "small"]}, True),
        ({"class": ["medium", "large"]}, False),
        ({"cpu": [1, 2, 3]}, True),
        ({"missing": ["x", None]}, False),
        # $eq / $ne
        ({"class": {"$eq": "small"}}, True),
        ({"class": {"$eq": "large"}}, False),
        ({"class": {"$ne": "large"}}, True),
        ({"class": {"$ne": "small"}}, False),
        ({"missing": {"$eq": "x"}}, False),
        ({"missing": {"$ne": "x"}}, True),  # a missing field passes $ne
        # $in / $nin
        ({"class": {"$in": ["small", "large"]}}, True),
        ({"class": {"$in": ["large"]}}, False),
        ({"class": {"$nin": ["large"]}}, True),
        ({"class": {"$nin": ["small"]}}, False),
        ({"missing": {"$in": ["x"]}}, False),
        ({"missing": {"$nin": ["x"]}}, True),  # and $nin
        # $exists
        ({"class": {"$exists": True}}, True),
        ({"class": {"$exists": False}}, False),
        ({"note": {"$exists": True}}, True),
        ({"missing": {"$exists": True}}, False),
        ({"missing": {"$exists": False}}, True),  # and $exists: false
        ({"metadata.team.x": {"$exists": False}}, True),
        # $prefix
        ({"id": {"$prefix": "sbx-"}}, True),
        ({"id": {"$prefix": "snap-"}}, False),
        ({"cpu": {"$prefix": "2"}}, False),  # only strings have a prefix
        ({"missing": {"$prefix": ""}}, False),
        # numbers
        ({"cpu": {"$gt": 1}}, True),
        ({"cpu": {"$gt": 2}}, False),
        ({"cpu": {"$gte": 2}}, True),
        ({"cpu": {"$lt": 2.5}}, True),
        ({"cpu": {"$lte": 1.99}}, False),
        ({"ratio": {"$lt": 1}}, True),
        ({"public": {"$gte": 0}}, False),  # a boolean is not a number
        ({"class": {"$gt": 0}}, False),
        ({"missing": {"$lt": 100}}, False),
        # ISO 8601 times, compared as times whatever their zone and precision
        ({"updatedAt": {"$gt": "2025-12-19T10:29:59Z"}}, True),
        ({"updatedAt": {"$gte": "2025-12-19T10:30:00Z"}}, True),
        ({"updatedAt": {"$gt": "2025-12-19T10:30:00+00:00"}}, False),
        ({"updatedAt": {"$lt": "2025-12-19T11:30:00.000+01:00"}}, False),
        ({"updatedAt": {"$lte": "2025-12-19T11:30:00+01:00"}}, True),
        ({"updatedAt": {"$lt": "2025-12-20"}}, True),
        ({"class": {"$lt": "2030-01-01T00:00:00Z"}}, False),  # not a time
        ({"cpu": {"$lt": "2030-01-01T00:00:00Z"}}, False),
        ({"missing": {"$gt": "2000-01-01T00:00:00Z"}}, False),
        # dotted paths walk into objects
        ({"metadata.team": "blue"}, True),
        ({"metadata.team": "red"}, False),
        ({"metadata.tier.level": {"$gte": 3}}, True),
        ({"metadata.tier.level": {"$gt": 3}}, False),
        ({"metadata.team.name": "blue"}, False),  # walks past a string: missing
        ({"metadata.missing": {"$ne": "x"}}, True),
        ({"class.size": {"$exists": False}}, True),
        # state fields compare case-insensitively, as subscriptions do
        ({"newState": "started"}, True),
        ({"newState": "Started"}, True),
        ({"state": "STARTED"}, True),
        ({"oldState": ["PAUSED", "stopped"]}, True),
        ({"newState": {"$in": ["started"]}}, True),
        ({"newState": {"$nin": ["Started"]}}, False),
        ({"newState": {"$ne": "started"}}, False),
        ({"newState": {"$prefix": "START"}}, True),
        ({"newState": "stopped"}, False),
    ],
)
def test_each_condition_holds_exactly_when_the_event_satisfies_it(spec: dict, expected: bool):
    assert matches(spec) is expected


def test_every_condition_must_hold():
    spec = {"class": "small", "newState": "started", "cpu": {"$gte": 2}}
    assert matches(spec)
    assert not matches({**spec, "metadata.team": "red"})


def test_desired_state_fields_compare_case_insensitively():
    event = {"id": "sbx-1", "oldDesiredState": "STOPPED", "newDesiredState": "Started"}
    assert matches({"newDesiredState": "started", "oldDesiredState": ["stopped"]}, event)


def test_a_custom_payload_is_filtered_like_an_event():
    payload = {"order": {"total": 120, "currency": "EUR"}, "status": "Paid"}
    assert matches({"order.total": {"$gt": 100}, "order.currency": "EUR"}, payload)
    assert not matches({"status": "paid"}, payload)  # not a state field: case counts


def test_null_and_an_empty_object_mean_no_filter():
    assert compile_filter(None) is None
    assert compile_filter({}) is None
    assert validate_filter(None) is None
    assert validate_filter({}) is None
    assert validate_filter({"class": "small"}) == {"class": "small"}


def test_a_stored_filter_is_compiled_once_per_text():
    text = json.dumps({"class": ["small", "medium"]})
    first = stored_predicate(text)
    assert first is not None and first is stored_predicate(text)
    assert first(EVENT) and not first({"class": "large"})
    assert stored_predicate(None) is None
    assert stored_predicate("null") is None


def test_a_stored_filter_is_not_held_to_the_size_limit_again():
    # PostgreSQL's jsonb spells 1e300 out in full: 301 digits of the 4 KiB.
    spelled = '{"cpu": {"$lt": 1' + "0" * 300 + "}, " + '"class": "' + "x" * 3800 + '"}'
    predicate = stored_predicate(spelled)
    assert predicate is not None and not predicate(EVENT)
    assert predicate({"cpu": 2, "class": "x" * 3800})


def test_a_stored_filter_that_no_longer_compiles_refuses_every_event():
    predicate = stored_predicate('{"class": {"$like": "s%"}}')
    assert predicate is not None and not predicate(EVENT)


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"": 1}, '""', "must not be empty"),
        ({"a..b": 1}, '"a..b"', "empty part"),
        ({".a": 1}, '".a"', "empty part"),
        ({"a.": 1}, '"a."', "empty part"),
        ({"$and": [1]}, '"$and"', "field paths"),
        ({"class": {"$regex": "s.*"}}, '"class"', "unknown operator $regex"),
        ({"class": {"$eq": "a", "$ne": "b"}}, '"class"', "exactly one operator, got $eq, $ne"),
        ({"class": {}}, '"class"', "exactly one operator, got none"),
        ({"metadata": {"team": "blue"}}, '"metadata"', "nested filters are not supported"),
        ({"class": {"$eq": ["a"]}}, '"class"', "$eq must be a string, number"),
        ({"class": {"$ne": {"a": 1}}}, '"class"', "$ne must be a string, number"),
        ({"class": {"$in": "small"}}, '"class"', "$in must be a non-empty array"),
        ({"class": {"$nin": []}}, '"class"', "$nin must be a non-empty array"),
        ({"class": {"$in": [["a"]]}}, '"class"', "each item of $in"),
        ({"class": []}, '"class"', "non-empty array"),
        ({"class": [{"a": 1}]}, '"class"', "each item"),
        ({"class": {"$exists": 1}}, '"class"', "$exists takes true or false"),
        ({"class": {"$prefix": 1}}, '"class"', "$prefix takes a string"),
        ({"cpu": {"$gt": "soon"}}, '"cpu"', "$gt takes a number or an ISO 8601 time"),
        ({"cpu": {"$lte": True}}, '"cpu"', "$lte takes a number or an ISO 8601 time"),
        ({"cpu": {"$lt": None}}, '"cpu"', "$lt takes a number or an ISO 8601 time"),
        ({"cpu": {"$gte": [1]}}, '"cpu"', "$gte takes a number or an ISO 8601 time"),
        ({"cpu": {"$gt": float("inf")}}, '"cpu"', "finite"),
        ({"cpu": float("nan")}, '"cpu"', "finite"),
        ({"class": "a\x00b"}, '"class"', "NUL"),
        ({"cla\x00ss": 1}, "NUL", "NUL"),
        ({"class": "\udcff"}, '"class"', "Unicode"),
    ],
)
def test_each_malformed_condition_is_refused_naming_its_key(spec: dict, key: str, words: str):
    with pytest.raises(Invalid) as caught:
        compile_filter(spec)
    assert key in caught.value.message
    assert words in caught.value.message


@pytest.mark.parametrize("spec", ["class=small", ["class"], 5, True])
def test_a_filter_must_be_an_object(spec: object):
    with pytest.raises(Invalid, match="filter must be a JSON object or null"):
        compile_filter(spec)


def test_at_most_twenty_keys():
    assert compile_filter({f"k{i}": i for i in range(MAX_KEYS)}) is not None
    with pytest.raises(Invalid, match=f"at most {MAX_KEYS}"):
        compile_filter({f"k{i}": i for i in range(MAX_KEYS + 1)})


def test_at_most_four_kibibytes_of_json():
    # Counted as UTF-8 bytes of the compact JSON: "é" is two bytes, not six.
    fits = {"k": "é" * ((MAX_BYTES - len('{"k":""}')) // 2)}
    assert len(json.dumps(fits, ensure_ascii=False, separators=(",", ":")).encode()) <= MAX_BYTES
    assert compile_filter(fits) is not None
    with pytest.raises(Invalid, match=f"at most {MAX_BYTES}"):
        compile_filter({"k": "x" * MAX_BYTES})
