"""Serving the dashboard shell, and ``GET /api/webhooks/me`` that tells a key's organization.

The shell (HTML, CSS, JavaScript) needs no credentials: the page asks for an API key and
sends it with every API call and on the socket. The JavaScript is written for this
project, the Socket.IO client included (``static/socket.js``), so nothing is fetched from
a CDN and no third-party file is vendored.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint as FlaskBlueprint
from flask import Response, render_template, send_from_directory
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from ..context import current_principal

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# The page loads scripts, styles and its socket from this origin only; receivers'
# response bodies are shown as text, and this policy is the second line behind that.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

pages = FlaskBlueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
)

me_blp = Blueprint(
    "dashboard_api",
    __name__,
    url_prefix="/api/webhooks",
    description="Who the caller is (the dashboard's sign-in check)",
)


def _static_version() -> str:
    """A cache-busting token: the newest modification time of the static files."""
    stamps = [p.stat().st_mtime_ns for p in STATIC.iterdir() if p.is_file()]
    return format(max(stamps, default=0), "x")


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@pages.get("")
@pages.get("/")
def index() -> Response:
    """The dashboard's single page."""
    html = render_template("dashboard.html", version=_static_version())
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return _secure(response)


@pages.get("/static/<path:filename>")
def static(filename: str) -> Response:
    """The dashboard's own scripts and styles (cached; the page names them by version)."""
    response = send_from_directory(STATIC, filename, max_age=3600)
    return _secure(response)


class MeSchema(Schema):
    organizationId = fields.String(required=True)
    userId = fields.String(required=True)
    role = fields.String(required=True, metadata={"enum": ["root", "admin", "member"]})


@me_blp.route("/me")
class Me(MethodView):
    @me_blp.response(200, MeSchema)
    def get(self):
        """The organization, user and role of the calling API key or JWT"""
        principal = current_principal()
        return {
            "organizationId": principal.organization_id,
            "userId": principal.user_id,
            "role": principal.role,
        }
