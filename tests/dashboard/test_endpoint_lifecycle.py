"""The dashboard's resource, expiry and failing warning, in headless Chromium (docs/api.md §8).

The page's time zone is Europe/Berlin (tests/dashboard/conftest.py): the expiry typed in
local time must reach the API as the same instant in UTC.
"""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

from shared.config import get_settings
from shared.db import session_scope
from shared.models import Endpoint, utcnow
from tests.conftest import PLATFORM
from webhooks_worker import tasks


def _sign_in(page, key: str) -> None:
    page.goto("/dashboard")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_resource_and_expiry_are_set_in_the_form_and_shown_in_the_details(page, org, receiver):
    from playwright.sync_api import expect

    _sign_in(page, org.key)
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint name").fill("One sandbox")
    dialog.get_by_label("Endpoint URL").fill(receiver.url)
    dialog.get_by_label("Resource ID").fill("sbx-42")
    expires = (utcnow() + timedelta(days=2)).astimezone(ZoneInfo("Europe/Berlin"))
    dialog.get_by_label("Expires").fill(expires.strftime("%Y-%m-%dT%H:%M"))
    dialog.get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Signing secret").get_by_role("button", name="Done").click()
    props = page.locator("#endpoint-props")
    expect(props).to_contain_text("sbx-42")
    expect(props.locator("time").last).to_have_attribute(
        "datetime", expires.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:00.000Z")
    )
    with session_scope() as session:
        row = session.query(Endpoint).filter_by(resource_id="sbx-42").one()
        assert row.expires_at.replace(second=0, microsecond=0) == expires.replace(
            second=0, microsecond=0
        )

    # Editing: the resource is set once and not offered; clearing the expiry removes it.
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    expect(dialog.get_by_label("Resource ID")).to_be_hidden()
    dialog.get_by_label("Expires").fill("")
    dialog.get_by_role("button", name="Save").click()
    expect(props).not_to_contain_text("Expires")
    expect(props).to_contain_text("sbx-42")
    with session_scope() as session:
        assert session.get(Endpoint, row.id).expires_at is None
    assert page.js_errors == []


def test_a_failing_endpoint_shows_its_warning_with_its_cause_live(
    page, client, org, receiver, worker, monkeypatch
):
    from playwright.sync_api import expect

    receiver.reply(503, b"maintenance")
    resp = client.post(
        "/v1/webhooks",
        json={"url": receiver.url, "event_types": ["sandbox.stopped"], "max_retries": 10},
        headers=org.headers,
    )
    endpoint_id = resp.json["data"]["endpoint_id"]
    _sign_in(page, org.key)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    row = page.locator(f'#endpoint-rows tr[data-id="{endpoint_id}"]')
    expect(row).to_be_visible()
    expect(row).not_to_contain_text("Failing")

    client.post(
        "/api/internal/events",
        json={
            "event": "sandbox.state.updated",
            "organizationId": org.id,
            "id": "sbx-1",
            "newState": "stopped",
        },
        headers=PLATFORM,
    )
    receiver.wait_for(1)
    # Beat's job with a notice window of about a second, run here as beat runs it.
    monkeypatch.setenv("WEBHOOKS_FAILING_NOTICE_HOURS", "0.0003")
    get_settings.cache_clear()
    try:
        time.sleep(1.5)
        assert tasks.endpoint_timers()["failing"] == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    # The warning arrives over the live socket, with the cause, in the list and details.
    expect(row).to_contain_text("Failing: status 503: HTTP 503")
    row.get_by_role("button").first.click()
    expect(page.locator("#endpoint-props")).to_contain_text("Failing: status 503: HTTP 503")
    assert page.js_errors == []
