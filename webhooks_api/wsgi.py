"""WSGI entry point for gunicorn: ``gunicorn webhooks_api.wsgi:app``."""

from __future__ import annotations

import sys

from shared.config import ConfigError, get_settings

try:
    get_settings()
except ConfigError as exc:  # a bad setting stops the process with its name
    sys.stderr.write(f"configuration error: {exc}\n")
    raise SystemExit(2) from None

import gc  # noqa: E402

from .app import create_app  # noqa: E402

app = create_app()
# The app's ~140,000 long-lived objects (Flask, SQLAlchemy, marshmallow, the schemas)
# would be walked by every full collection, 50-100 ms with every request thread stopped.
gc.freeze()
