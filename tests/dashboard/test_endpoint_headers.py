"""Custom headers in the dashboard, in headless Chromium (docs/api.md §8, §11.1).

The endpoint form adds, edits and removes header rows; the details show them with the
credentials hidden; an edit that leaves a hidden value alone keeps it.
"""

from __future__ import annotations

from sqlalchemy import select

from shared.db import session_scope
from shared.models import Endpoint
from shared.services.endpoint_headers import stored_headers


def _stored(endpoint_id: str) -> dict[str, str]:
    with session_scope() as session:
        token = session.scalar(select(Endpoint.headers_encrypted).where(Endpoint.id == endpoint_id))
    return stored_headers(token)


def _sign_in(page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_headers_are_added_shown_hidden_kept_edited_and_removed(
    page, org, receiver, worker, screenshots
):
    from playwright.sync_api import expect

    page.goto("/dashboard")
    _sign_in(page, org.key)
    page.get_by_role("button", name="Add endpoint").click()
    dialog = page.get_by_role("dialog", name="Add endpoint")
    dialog.get_by_label("Endpoint name").fill("With headers")
    dialog.get_by_label("Endpoint URL").fill(receiver.url + "/hooks")
    dialog.get_by_role("button", name="Add header").click()
    expect(dialog.get_by_label("Header 1 name")).to_be_focused()
    page.keyboard.type("Authorization")
    dialog.get_by_label("Header 1 value").fill("Bearer dash-cred-42")
    dialog.get_by_role("button", name="Add header").click()
    dialog.get_by_label("Header 2 name").fill("X-Tenant")
    dialog.get_by_label("Header 2 value").fill("acme")
    dialog.get_by_role("button", name="Create").click()
    page.get_by_role("dialog", name="Signing secret").get_by_role("button", name="Done").click()

    props = page.locator("#endpoint-props")
    expect(props).to_contain_text("Authorization: ********")
    expect(props).to_contain_text("X-Tenant: acme")
    assert "dash-cred" not in page.content()
    endpoint_id = props.locator(".mono", has_text="whk-").first.inner_text()
    assert _stored(endpoint_id) == {"Authorization": "Bearer dash-cred-42", "X-Tenant": "acme"}

    # Edit: the hidden value is not in the form; left empty, it is kept.
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    expect(dialog.get_by_label("Header 1 name")).to_have_value("Authorization")
    expect(dialog.get_by_label("Header 1 value")).to_have_value("")
    expect(dialog.get_by_label("Header 1 value")).to_have_attribute(
        "placeholder", "Unchanged (hidden)"
    )
    expect(dialog.get_by_label("Header 2 value")).to_have_value("acme")
    page.screenshot(path=str(screenshots / "endpoint-headers-edit-1280.png"))
    dialog.get_by_label("Header 2 value").fill("globex")
    dialog.get_by_role("button", name="Add header").click()
    dialog.get_by_label("Header 3 name").fill("X-Extra")
    dialog.get_by_label("Header 3 value").fill("1")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(props).to_contain_text("X-Tenant: globex")
    expect(props).to_contain_text("X-Extra: 1")
    page.screenshot(path=str(screenshots / "endpoint-headers-details-1280.png"))
    assert _stored(endpoint_id) == {
        "Authorization": "Bearer dash-cred-42",
        "X-Tenant": "globex",
        "X-Extra": "1",
    }

    # The attempts carry them: a test send from the Testing tab.
    page.get_by_role("tab", name="Testing").click()
    page.get_by_role("tabpanel", name="Testing").get_by_label("Event type").select_option(
        "sandbox.created"
    )
    page.get_by_role("button", name="Send example").click()
    got = receiver.wait_for(1)[0]
    assert got.headers["authorization"] == "Bearer dash-cred-42"
    assert got.headers["x-tenant"] == "globex" and got.headers["x-extra"] == "1"
    page.get_by_role("tab", name="Overview").click()

    # Remove one header and replace the hidden credential.
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    dialog.get_by_role("button", name="Remove header 2").click()
    # The rows are numbered again: X-Extra is now the second.
    expect(dialog.get_by_label("Header 2 name")).to_have_value("X-Extra")
    dialog.get_by_label("Header 1 value").fill("Bearer dash-cred-43")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(props).not_to_contain_text("X-Tenant")
    assert _stored(endpoint_id) == {"Authorization": "Bearer dash-cred-43", "X-Extra": "1"}

    # A refused header keeps the dialog open with the API's reason.
    page.get_by_role("button", name="Edit").click()
    dialog = page.get_by_role("dialog", name="Edit endpoint")
    dialog.get_by_role("button", name="Add header").click()
    dialog.get_by_label("Header 3 name").fill("Content-Type")
    dialog.get_by_label("Header 3 value").fill("text/plain")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("#endpoint-form-error")).to_contain_text(
        "Content-Type is set by the service"
    )
    dialog.get_by_role("button", name="Cancel").click()
    assert _stored(endpoint_id) == {"Authorization": "Bearer dash-cred-43", "X-Extra": "1"}
    assert page.js_errors == []
