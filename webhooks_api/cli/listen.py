"""``webhooks listen``: a receiver on loopback that prints what it gets, for trying things out."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime

import click


@click.command()
@click.option("--port", default=9000, show_default=True, help="Port to listen on (loopback).")
@click.option("--secret", default=None, help="An endpoint's whsec_ secret, to verify signatures.")
@click.option("--status", default=200, show_default=True, help="Status code to answer with.")
def listen(port: int, secret: str | None, status: int) -> None:
    """Run a receiver on 127.0.0.1 that prints every webhook it gets (for trying things out)."""
    from datetime import UTC
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.payloads import format_timestamp
    from shared.signing import verify

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received = datetime.now(UTC)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            # The event's name in whichever of the three payload formats the endpoint has.
            event = next(
                (
                    payload[field]
                    for field in ("event", "type", "eventLabel")
                    if isinstance(payload, dict) and isinstance(payload.get(field), str)
                ),
                "-",
            )
            # One line per request first: when it came, what it was, what it was answered.
            stamp = format_timestamp(received)
            click.echo(f"{stamp}  POST {self.path}  {event}  answered {status}")
            for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"):
                click.echo(f"  {name}: {headers.get(name, '')}")
            # Only ordered endpoints send it (docs/api.md §11.3): a gap means a failed delivery.
            if "webhook-sequence" in headers:
                click.echo(f"  webhook-sequence: {headers['webhook-sequence']}")
            if secret:
                ok = verify(secret, headers, body)
                click.echo(f"  signature: {'valid' if ok else 'INVALID'}")
            if payload is not None:
                click.echo("  " + json.dumps(payload, indent=2).replace("\n", "\n  "))
            else:
                click.echo(f"  {body[:500]!r}")
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    click.echo(
        f"listening on http://127.0.0.1:{port}, answering {status} to every request "
        "(Ctrl-C to stop)"
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
