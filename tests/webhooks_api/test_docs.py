"""/docs: the API reference page loads everything it needs from the service itself.

The page must work on a machine without internet, so every script, style, image and the
spec it references is a path of this service, and each of them answers 200.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit


class References(HTMLParser):
    """Every URL a page references through src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


def referenced_urls(page: str) -> list[str]:
    """The page's src/href URLs and the spec URL its Swagger UI config names."""
    parser = References()
    parser.feed(page)
    return [*parser.urls, *re.findall(r"""\burl:\s*["']([^"']+)["']""", page)]


def test_the_docs_page_loads_every_asset_and_the_spec_from_the_service(client):
    resp = client.get("/docs")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    urls = referenced_urls(page)
    # A stylesheet, the two scripts and the spec, at least.
    assert len(urls) >= 4, urls
    assert any(u.endswith(".css") for u in urls) and any(u.endswith(".json") for u in urls)
    for url in urls:
        absolute = urljoin("http://localhost/docs", url)
        parts = urlsplit(absolute)
        assert parts.netloc == "localhost", f"{url} is not served by the service itself"
        got = client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
        assert got.status_code == 200, url
        assert got.data, url
    assert "https://" not in page and "http://" not in page
    script = client.get(next(u for u in urls if u.endswith("swagger-ui-bundle.js")))
    assert b"SwaggerUIBundle" in script.data


def test_the_assets_answer_without_credentials_and_an_unknown_one_is_404(client):
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/docs/assets/nothing-here.js").status_code == 404


def test_swagger_ui_renders_in_a_browser_that_can_reach_nothing_but_the_service(database):
    """Headless Chromium with every request off the service's own address refused."""
    import pytest

    from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, _skip_reason
    from tests.support.live_server import shared_live_server

    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    server = shared_live_server()
    elsewhere: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_the_service)
            page.goto(server.url + "/docs")
            # The spec was fetched and rendered: its title and the operations are shown.
            page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
            assert "Sandbox webhooks" in page.inner_text(".swagger-ui .info .title")
            assert page.locator(".opblock").count() > 10
        finally:
            browser.close()
    assert elsewhere == []
