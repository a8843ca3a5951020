"""The endpoint form's payload filter in headless Chromium (docs/api.md §8, §11.2)."""

from __future__ import annotations

import json

ORGS = "/api/webhooks/organizations"


def _stored_filter(client, org) -> object:
    (item,) = client.get(f"{ORGS}/{org.id}/endpoints", headers=org.headers).json["items"]
    return item["filter"]


def test_the_endpoint_form_sets_shows_edits_and_clears_a_filter(
    page, client, org, receiver, screenshots
):
    from playwright.sync_api import expect

    page.goto("/dashboard")
    page.get_by_label("API key").fill(org.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("tab", name="Endpoints")).to_have_attribute("aria-selected", "true")

    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint name").fill("Filtered")
    dialog.get_by_label("Endpoint URL").fill(receiver.url + "/hook")
    field = dialog.get_by_label("Payload filter")
    error = dialog.locator("#endpoint-filter-error")

    # Text that is not a JSON object is caught in the form, beside the field.
    field.fill('{"newState": ')
    dialog.get_by_role("button", name="Create").click()
    expect(error).to_contain_text("not valid JSON")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    field.fill('["started"]')
    dialog.get_by_role("button", name="Create").click()
    expect(error).to_contain_text("must be a JSON object")

    # A condition the service refuses: its answer, naming the key, shows beside the field.
    field.fill('{"newState": {"$like": "start"}}')
    dialog.get_by_role("button", name="Create").click()
    expect(error).to_contain_text('filter key "newState": unknown operator $like')
    expect(dialog).to_be_visible()
    assert client.get(f"{ORGS}/{org.id}/endpoints", headers=org.headers).json["total"] == 0

    wanted = {"newState": ["started", "stopped"], "metadata.team": "blue"}
    field.fill(json.dumps(wanted))
    dialog.get_by_role("button", name="Create").click()
    # Read outside the dialog: a saved form closes it, and a closed dialog has no role.
    expect(page.locator("#endpoint-filter-error")).to_have_text("")
    secret = page.get_by_role("dialog", name="Signing secret")
    secret.get_by_role("button", name="Done").click()
    shown = page.locator('#endpoint-props [data-prop="filter"]')
    expect(shown).to_contain_text('"metadata.team": "blue"')
    expect(shown).to_contain_text('"started"')
    assert _stored_filter(client, org) == wanted

    # Edit: the field holds the stored filter; a change is saved and shown.
    page.get_by_role("button", name="Edit").click()
    editor = page.get_by_role("dialog", name="Edit endpoint")
    field = editor.get_by_label("Payload filter")
    assert json.loads(field.input_value()) == wanted
    page.screenshot(path=str(screenshots / "endpoint-filter-edit-1280.png"))
    field.fill('{"class": {"$in": ["small", "medium"]}}')
    editor.get_by_role("button", name="Save").click()
    expect(editor).to_be_hidden()
    expect(shown).to_contain_text('"$in"')
    assert _stored_filter(client, org) == {"class": {"$in": ["small", "medium"]}}

    # Emptying the field clears the filter.
    page.get_by_role("button", name="Edit").click()
    editor.get_by_label("Payload filter").fill("")
    editor.get_by_role("button", name="Save").click()
    expect(editor).to_be_hidden()
    expect(shown).to_contain_text("None")
    assert _stored_filter(client, org) is None
    assert page.js_errors == []
