"""The dashboard's endpoint form and details show and edit ordering and the rate limit."""

from __future__ import annotations

BASE = "/api/webhooks/organizations"


def test_create_with_ordering_and_rate_limit_then_edit_them(page, client, org, screenshots):
    from playwright.sync_api import expect

    page.goto("/dashboard")
    page.get_by_label("API key").fill(org.key)
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint name").fill("Ordered sink")
    dialog.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/ordered")
    dialog.get_by_label("Delivery order").select_option("resource")
    # A value the API refuses is explained before anything is sent.
    dialog.get_by_label("Rate limit").fill("0")
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.locator("#endpoint-form-error")).to_contain_text("from 1 to 10,000")
    dialog.get_by_label("Rate limit").fill("25")
    dialog.get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Signing secret").get_by_role("button", name="Done").click()

    props = page.locator("#endpoint-props")
    expect(props).to_contain_text("Each resource's events one at a time, in order")
    expect(props).to_contain_text("25 attempts per second")
    page.screenshot(path=str(screenshots / "endpoint-flow-1280.png"))
    listed = client.get(f"{BASE}/{org.id}/endpoints", headers=org.headers).json["items"]
    assert [(e["ordering"], e["rateLimit"]) for e in listed] == [("resource", 25)]

    page.get_by_role("button", name="Edit").click()
    editor = page.get_by_role("dialog", name="Edit endpoint")
    expect(editor.get_by_label("Delivery order")).to_have_value("resource")
    expect(editor.get_by_label("Rate limit")).to_have_value("25")
    editor.get_by_label("Delivery order").select_option("none")
    editor.get_by_label("Rate limit").fill("")
    editor.get_by_role("button", name="Save").click()
    expect(props).to_contain_text("Any order")
    expect(props).to_contain_text("No limit")
    shown = client.get(f"{BASE}/{org.id}/endpoints/{listed[0]['id']}", headers=org.headers).json
    assert (shown["ordering"], shown["rateLimit"]) == ("none", None)
