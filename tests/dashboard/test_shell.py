"""The dashboard's static shell and the `me` route it signs in with (no browser needed)."""

from __future__ import annotations

from tests.conftest import PLATFORM


def test_shell_and_its_files_are_served_without_credentials(client):
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'id="sign-in-form"' in html
    assert "/dashboard/static/app.js?v=" in html
    # Scripts from this origin only: no CDN, no inline script.
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'src="http' not in html and 'href="http' not in html
    for name, mimetype in (
        ("app.js", "text/javascript"),
        ("socket.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ):
        resp = client.get(f"/dashboard/static/{name}")
        assert resp.status_code == 200, name
        assert resp.mimetype == mimetype
    assert client.get("/dashboard/static/nope.js").status_code == 404


def test_me_tells_the_keys_organization_user_and_role(client, org, add_user):
    member = add_user(org, "member")
    assert client.get("/api/webhooks/me", headers=org.headers).json == {
        "organizationId": org.id,
        "userId": org.user_id,
        "role": "root",
    }
    assert client.get("/api/webhooks/me", headers=member.headers).json["role"] == "member"


def test_me_refuses_missing_wrong_and_platform_credentials(client):
    for headers in ({}, {"X-API-Key": "whk_live_wrong"}, PLATFORM):
        resp = client.get("/api/webhooks/me", headers=headers)
        assert resp.status_code == 401
        assert resp.json["statusCode"] == 401
        assert resp.json["message"]
