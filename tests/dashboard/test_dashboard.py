"""The dashboard in headless Chromium against a running api and worker (docs/api.md §8).

Screenshots of both tabs and the message dialog, at 1280 and 390 pixels wide, are saved in
tests/artifacts/screenshots/ (git-ignored) so that anyone can look at what a person sees.
"""

from __future__ import annotations

import re

from tests.conftest import PLATFORM
from tests.support.receiver import Reply

RECEIVER_BODY = b'{"received": true, "by": "dashboard-test"}'
FAILED_BODY = b'{"error": "receiver is down for maintenance"}'


def _shoot(page, screenshots, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)


def _at_width(page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900 if width > 600 else 844})


def _sign_in(page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_add_endpoint_test_and_watch_deliveries_live(
    page, org, receiver, worker, screenshots
):
    from playwright.sync_api import expect

    receiver.responder = lambda _r: Reply(200, RECEIVER_BODY, {"Content-Type": "application/json"})
    page.goto("/dashboard")

    # A wrong key is refused with a message a person can act on.
    _sign_in(page, "whk_live_this-is-not-a-key")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    _sign_in(page, org.key)
    expect(page.get_by_role("tab", name="Endpoints")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    # Marks this page load: still there at the end, so nothing was reloaded.
    page.evaluate("window.__sameLoad = true")

    # The Messages tab is loaded once, empty, before anything is sent.
    page.get_by_role("tab", name="Messages").click()
    expect(page.get_by_text("No messages yet.")).to_be_visible()
    page.get_by_role("tab", name="Endpoints").click()

    # Add an endpoint pointing at the loopback receiver.
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint name").fill("Billing receiver")
    dialog.get_by_label("Endpoint URL").fill(receiver.url + "/hooks/daytona")
    dialog.get_by_role("button", name="Create").click()
    secret_dialog = page.get_by_role("dialog", name="Signing secret")
    expect(secret_dialog.get_by_label("Signing secret")).to_have_value(re.compile(r"^whsec_"))
    secret_dialog.get_by_role("button", name="Done").click()
    expect(page.get_by_role("heading", name="Billing receiver")).to_be_focused()
    expect(page.locator("#endpoint-props")).to_contain_text("All events")

    # Testing tab: send the example of a chosen event type.
    page.get_by_role("tab", name="Testing").click()
    page.get_by_role("tabpanel", name="Testing").get_by_label("Event type").select_option(
        "sandbox.state.updated"
    )
    expect(page.locator("#test-example")).to_contain_text('"newState"')
    page.get_by_role("button", name="Send example").click()
    expect(page.locator("#test-result")).to_contain_text("Example sent as message")
    message_id = page.locator("#test-result button").inner_text()
    assert message_id.startswith("evt-")
    receiver.wait_for(1)

    # The stats follow live.
    page.get_by_role("tab", name="Overview").click()
    expect(page.locator('[data-stat="successful"]')).to_have_text("1")
    _at_width(page, 1280)
    _shoot(page, screenshots, "endpoint-details-1280")
    page.get_by_role("button", name="All endpoints").click()
    expect(page.locator("#endpoint-rows tr")).to_have_count(1)
    expect(page.locator("#endpoint-rows")).to_contain_text("Billing receiver")

    # The message appears in the Messages tab without a reload.
    page.get_by_role("tab", name="Messages").click()
    row = page.locator(f'#messages-list tr[data-id="{message_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("sandbox.state.updated")
    assert page.evaluate("window.__sameLoad") is True

    page.get_by_role("tab", name="Endpoints").click()
    _shoot(page, screenshots, "endpoints-1280")
    _at_width(page, 390)
    _shoot(page, screenshots, "endpoints-390")
    page.get_by_role("tab", name="Messages").click()
    _shoot(page, screenshots, "messages-390")
    _at_width(page, 1280)
    _shoot(page, screenshots, "messages-1280")

    # Open it: payload, and the attempt expanded to its details.
    row.get_by_role("button", name=message_id).click()
    dialog = page.get_by_role("dialog", name=f"Message {message_id}")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#message-payload")).to_contain_text('"oldState"')
    attempts = dialog.locator("#message-attempts tr.attempt")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("Succeeded")
    attempts.first.get_by_role("button", name="Show attempt details").click()
    details = dialog.locator("#message-attempts tr.attempt-detail").first
    expect(details.locator('[data-field="statusCode"]')).to_have_text("200")
    expect(details.locator('[data-field="durationMs"]')).to_have_text(re.compile(r"^\d+ ms$"))
    expect(details.locator('[data-field="trigger"]')).to_have_text("test")
    expect(details.locator('[data-field="endpointId"]')).to_have_text(re.compile(r"^whk-"))
    expect(details.locator('[data-field="responseBody"]')).to_contain_text('"dashboard-test"')
    _shoot(page, screenshots, "message-dialog-1280")
    _at_width(page, 390)
    _shoot(page, screenshots, "message-dialog-390")
    _at_width(page, 1280)

    # The receiver breaks; a resend's failed attempt appears live in the open dialog.
    receiver.responder = lambda _r: Reply(500, FAILED_BODY, {"Content-Type": "application/json"})
    dialog.get_by_role("button", name="Resend to Billing receiver").click()
    expect(dialog.locator("#resend-result")).to_contain_text("queued")
    expect(attempts).to_have_count(2)
    newest = attempts.first
    expect(newest).to_contain_text("Failed")
    expect(newest).to_contain_text("500")
    newest.get_by_role("button", name="Show attempt details").click()
    failed = dialog.locator("#message-attempts tr.attempt-detail").first
    expect(failed.locator('[data-field="trigger"]')).to_have_text("manual")
    expect(failed.locator('[data-field="statusCode"]')).to_have_text("500")
    expect(failed.locator('[data-field="responseBody"]')).to_contain_text("maintenance")
    # The first attempt stayed expanded underneath.
    expect(dialog.locator("#message-attempts tr.attempt-detail").nth(1)).to_be_visible()
    _shoot(page, screenshots, "message-dialog-resent-1280")

    # Esc closes the dialog and gives focus back to where it was.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(row.get_by_role("button", name=message_id)).to_be_focused()
    assert page.evaluate("window.__sameLoad") is True
    assert page.js_errors == []

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def _report_many(client, org, count: int) -> None:
    events = [
        {
            "event": "sandbox.created",
            "organizationId": org.id,
            "id": f"sbx-{n:03d}",
            "state": "started",
            "class": "small",
            "createdAt": "2025-12-19T10:30:00.000Z",
        }
        for n in range(count)
    ]
    resp = client.post("/api/internal/events", json=events, headers=PLATFORM)
    assert resp.status_code == 202, resp.json


def test_paging_filters_edit_history_rotate_delete_and_keyboard(
    page, client, org, add_user, receiver, worker, screenshots
):
    from playwright.sync_api import expect

    resp = client.post(
        f"/api/webhooks/organizations/{org.id}/endpoints",
        json={"url": receiver.url + "/in", "eventTypes": ["sandbox.created"], "name": "Audit sink"},
        headers=org.headers,
    )
    assert resp.status_code == 201, resp.json
    endpoint_id = resp.json["id"]
    _report_many(client, org, 60)
    receiver.wait_for(60, timeout=60)

    page.goto("/dashboard")
    _sign_in(page, org.key)

    # Keyboard: the tabs follow the arrow keys.
    page.get_by_role("tab", name="Endpoints").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Messages")).to_be_focused()
    expect(page.get_by_role("tab", name="Messages")).to_have_attribute("aria-selected", "true")

    # Server-side paging: 50 newest, then the 10 older ones through the cursor.
    rows = page.locator("#messages-list tbody tr")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Older").click()
    expect(page.locator("#messages-list .page-label")).to_have_text("Page 2")
    expect(rows).to_have_count(10)
    page.get_by_role("button", name="Newer").click()
    expect(rows).to_have_count(50)
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()

    # Filters are applied by the server.
    page.locator("#filter-event-type").fill("snapshot.created")
    page.locator("#filter-event-type").press("Enter")
    expect(page.get_by_text("No messages match these filters.")).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(50)
    page.get_by_label("Delivery status").select_option("failed")
    expect(page.get_by_text("No messages match these filters.")).to_be_visible()
    page.get_by_label("Delivery status").select_option("delivered")
    expect(rows).to_have_count(50)

    # Endpoint details: edit, event history, rotate secret.
    page.get_by_role("tab", name="Endpoints").click()
    page.get_by_role("button", name="Audit sink").click()
    expect(page.locator('[data-stat="successful"]')).to_have_text("60")
    page.get_by_role("button", name="Edit").click()
    editor = page.get_by_role("dialog", name="Edit endpoint")
    expect(editor.get_by_label("Selected events")).to_be_checked()
    expect(editor.locator('input[value="sandbox.created"]')).to_be_checked()
    editor.get_by_label("Endpoint name").fill("Audit sink (renamed)")
    _shoot(page, screenshots, "endpoint-edit-1280")
    editor.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Audit sink (renamed)")).to_be_visible()

    page.get_by_role("tab", name="Event history").click()
    expect(page.locator("#history-list tbody tr")).to_have_count(20)

    page.get_by_role("button", name="Rotate secret").click()
    confirm = page.get_by_role("dialog", name="Rotate signing secret?")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Rotate secret").click()
    secret = page.get_by_role("dialog", name="Signing secret")
    expect(secret.get_by_label("Signing secret")).to_have_value(re.compile(r"^whsec_"))
    page.keyboard.press("Escape")
    expect(secret).to_be_hidden()

    # Delete asks first; Cancel keeps the endpoint.
    page.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete endpoint?")
    _shoot(page, screenshots, "endpoint-delete-confirm-1280")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    page.get_by_role("button", name="Delete").click()
    confirm.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_text("No endpoints yet.")).to_be_visible()
    listed = client.get(f"/api/webhooks/organizations/{org.id}/endpoints", headers=org.headers)
    assert endpoint_id not in {e["id"] for e in listed.json["items"]}

    # A member sees the organization's endpoints but gets no buttons to change them.
    member = add_user(org, "member")
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, member.key)
    expect(page.locator("#who")).to_contain_text("member")
    expect(page.get_by_role("button", name="Add endpoint")).to_be_hidden()

    # Signing in again starts clean: one click creates one endpoint, with the new key.
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, org.key)
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint URL").fill(receiver.url + "/again")
    dialog.get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Signing secret").get_by_role("button", name="Done").click()
    expect(page.locator("#endpoint-url")).to_have_text(receiver.url + "/again")
    listed = client.get(f"/api/webhooks/organizations/{org.id}/endpoints", headers=org.headers)
    assert [e["url"] for e in listed.json["items"]] == [receiver.url + "/again"]
    assert page.js_errors == []
